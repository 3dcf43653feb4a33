"""The scrub on a real server: a stored file changed on disk behind the platform's back is
found by the background scrub, marked, reported by `verify`, and raises the
`data.corrupt` alert (the shipped rule "Stored data corrupt")."""

import hashlib
import os
from pathlib import Path

from waiting import wait_for

from tests.conftest import RunningServer, unique
from tests.data.test_repositories import api, commit, repo, upload


def test_scrub_finds_a_changed_blob_and_alerts(server_factory) -> None:
    server: RunningServer = server_factory(
        {"SUANLI_SCRUB_INTERVAL_SECONDS": "1", "SUANLI_METRICS_INTERVAL_SECONDS": "1"}
    )
    admin = server.login()
    project = unique("scrub")
    admin.projects.create(project, owner="admin")
    http = api(server, admin)
    where = f"datasets/{project}/{repo(http, project)}"
    content = os.urandom(4096)
    upload(http, project, content)
    commit(http, where, {"weights/part-1.bin": content})
    assert http.post(f"{where}/versions/1/verify").json()["ok"] is True
    sha256 = hashlib.sha256(content).hexdigest()
    blob = Path(server.data_dir) / "data" / "blobs" / sha256[:2] / sha256[2:4] / sha256
    blob.chmod(0o644)
    with blob.open("r+b") as stream:  # one bit flipped, as a failing disk would
        first = stream.read(1)
        stream.seek(0)
        stream.write(bytes([first[0] ^ 1]))

    def alerted() -> object:
        return [
            event for event in admin.alerts.list(limit=50) if event.labels.get("sha256") == sha256
        ]

    (event,) = wait_for(alerted, 30, "the data.corrupt alert")
    assert event.labels["path"] == "weights/part-1.bin"
    assert event.labels["state"] == "corrupt"
    checked = http.post(f"{where}/versions/1/verify").json()
    assert checked["ok"] is False and checked["corrupt"] == ["weights/part-1.bin"]

"""Imports through a real server: a background task from a real source on loopback into a
new version, with progress, cancel and retry; secrets never shown; loopback refused unless
the administrator allows private addresses (server-side request forgery)."""

import hashlib
import io
import tarfile
from pathlib import Path

import httpx
import pytest
from waiting import wait_for

from tests.conftest import RunningServer, unique
from tests.data.servers import PASSWORD, USER, http_server, s3_server, sftp_server, write_tree
from tests.data.test_repositories import api, repo

ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def private_ok(server_factory) -> RunningServer:
    return server_factory({"SUANLI_IMPORTS_ALLOW_PRIVATE": "true"})


def person(server: RunningServer) -> tuple[httpx.Client, str]:
    """A project with its owner's API client (as the server's administrator made it)."""
    admin = server.login()
    name, password = unique("imp"), "password-123"
    admin.users.create(name, password)
    project = unique("imports")
    admin.projects.create(project, owner=name)
    return api(server, server.login(name, password)), project


def ended(http: httpx.Client, import_id: int) -> dict | None:
    row = http.get(f"imports/{import_id}").json()
    return row if row["state"] in ENDED else None


def start(http: httpx.Client, where: str, source: dict, message: str = "") -> dict:
    answer = http.post(f"{where}/imports", json={"source": source, "message": message})
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_http_archive_and_sftp_imports(private_ok: RunningServer, tmp_path: Path) -> None:
    http, project = person(private_ok)
    where = f"datasets/{project}/{repo(http, project)}"
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as archive:
        for name, body in {"train.jsonl": b'{"a": 1}\n', "sub/test.jsonl": b'{"a": 2}\n'}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    write_tree(tmp_path / "web", {"data.tar.gz": packed.getvalue()})
    with http_server(tmp_path / "web") as web:
        row = start(
            http,
            where,
            {"kind": "http", "url": web.url("data.tar.gz"), "unpack": True},
            "from the web",
        )
        done = wait_for(lambda: ended(http, row["id"]), 60, "the import")
    assert done["state"] == "succeeded", done
    assert done["version"] == 1 and done["done_bytes"] > 0
    files = {f["path"] for f in http.get(f"{where}/versions/1").json()["files"]}
    assert files == {"data/train.jsonl", "data/sub/test.jsonl"}  # unpacked in place
    write_tree(tmp_path / "remote", {"model/config.json": b"{}", "model/w.bin": b"w" * 5000})
    with sftp_server(tmp_path / "remote") as url:
        source = {"kind": "sftp", "url": f"{url}/model", "username": USER, "password": PASSWORD}
        row = start(http, where, source)
        assert "password" not in row["source"] or row["source"]["password"] is None
        assert PASSWORD not in str(row)
        done = wait_for(lambda: ended(http, row["id"]), 60, "the sftp import")
    assert done["state"] == "succeeded", done
    version = http.get(f"{where}/versions/latest").json()
    assert {f["path"]: f["sha256"] for f in version["files"]} == {
        "config.json": hashlib.sha256(b"{}").hexdigest(),
        "w.bin": hashlib.sha256(b"w" * 5000).hexdigest(),
    }
    assert PASSWORD not in http.get(f"{where}/imports").text


def test_failed_then_retried_and_cancelled(private_ok: RunningServer, tmp_path: Path) -> None:
    http, project = person(private_ok)
    where = f"models/{project}/{repo(http, project, 'models')}"
    write_tree(tmp_path / "web", {})
    with http_server(tmp_path / "web", delay=0.05) as web:
        row = start(http, where, {"kind": "http", "url": web.url("later.bin")})
        failed = wait_for(lambda: ended(http, row["id"]), 60)
        assert failed["state"] == "failed" and failed["error"]
        assert http.get(f"{where}/versions").json() == []
        write_tree(tmp_path / "web", {"later.bin": b"x" * 100})
        retried = http.post(f"imports/{row['id']}/retry")
        assert retried.status_code == 200
        done = wait_for(lambda: ended(http, row["id"]), 60)
        assert done["state"] == "succeeded" and done["attempts"] == 2
        write_tree(tmp_path / "web", {"slow.bin": b"s" * (4 << 20)})
        slow = start(http, where, {"kind": "http", "url": web.url("slow.bin")})
        wait_for(lambda: http.get(f"imports/{slow['id']}").json()["state"] == "running", 30)
        assert http.post(f"imports/{slow['id']}/cancel").status_code == 200
        cancelled = wait_for(lambda: ended(http, slow["id"]), 60)
    assert cancelled["state"] == "cancelled" and cancelled["version"] is None
    assert len(http.get(f"{where}/versions").json()) == 1


def test_s3_import(private_ok: RunningServer) -> None:
    http, project = person(private_ok)
    where = f"datasets/{project}/{repo(http, project)}"
    objects = {"corpus/a.txt": b"alpha", "corpus/deep/b.txt": b"beta", "other/c.txt": b"no"}
    with s3_server("bucket", objects) as endpoint:
        source = {
            "kind": "s3",
            "url": endpoint,
            "bucket": "bucket",
            "prefix": "corpus/",
            "access_key": "testing",
            "secret_key": "testing-secret",
        }
        row = start(http, where, source)
        assert "testing-secret" not in str(row)
        done = wait_for(lambda: ended(http, row["id"]), 60, "the s3 import")
    assert done["state"] == "succeeded", done
    files = {f["path"] for f in http.get(f"{where}/versions/1").json()["files"]}
    assert files == {"a.txt", "deep/b.txt"}


def test_loopback_refused_by_default(server: RunningServer, tmp_path: Path, make_user) -> None:
    """The shared server does not allow private addresses: an import of a loopback URL
    (the server's own API, here) fails before connecting, naming why."""
    user = make_user("ssrf")
    admin = server.login()
    project = unique("ssrf")
    admin.projects.create(project, owner=user.name)
    http = api(server, user.client)
    where = f"datasets/{project}/{repo(http, project)}"
    for url in (f"{server.url}/api/v1/health", "http://169.254.169.254/latest/meta-data/"):
        row = start(http, where, {"kind": "http", "url": url})
        done = wait_for(lambda row=row: ended(http, row["id"]), 60)
        assert done["state"] == "failed" and done["error"], done
    assert http.get(f"{where}/versions").json() == []


def test_another_tenant_cannot_see_or_cancel(server: RunningServer, make_user) -> None:
    owner, other = make_user("own"), make_user("oth")
    admin = server.login()
    project = unique("imp")
    admin.projects.create(project, owner=owner.name)
    http = api(server, owner.client)
    where = f"datasets/{project}/{repo(http, project)}"
    row = start(http, where, {"kind": "http", "url": "http://127.0.0.1:9/x"})
    stranger = api(server, other.client)
    assert stranger.get(f"imports/{row['id']}").status_code == 404
    assert stranger.post(f"imports/{row['id']}/cancel").status_code == 404
    assert (
        stranger.post(
            f"{where}/imports", json={"source": {"kind": "http", "url": "http://x.org/"}}
        ).status_code
        == 404
    )

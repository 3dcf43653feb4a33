"""Datasets and models over the API of a real server: resumable uploads (tus), versions
from held content, downloads, deduplication, verification, tags moved concurrently, the
storage quota enforced before a byte is written, and what another tenant cannot do."""

import base64
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from suanli.client import Client
from tests.conftest import Person, RunningServer, unique


def api(server: RunningServer, client: Client) -> httpx.Client:
    return httpx.Client(
        base_url=server.url + "/api/v1/",
        headers={"Authorization": f"Bearer {client.token}"},
        timeout=60,
    )


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def upload(http: httpx.Client, project: str, content: bytes, *, chunk: int = 1 << 20) -> str:
    """Send `content` over tus in chunks; returns the sha256 the server computed."""
    created = http.post(
        "uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(content)),
            "Upload-Metadata": meta(project=project, filename="f"),
        },
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    offset = 0
    answer = None
    while offset < len(content) or not content:
        answer = http.patch(
            location,
            content=content[offset : offset + chunk],
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert answer.status_code == 204, answer.text
        offset = int(answer.headers["Upload-Offset"])
        if not content:
            break
    assert answer is not None
    return answer.headers["Upload-Sha256"]


def project_of(admin: Client, owner: Person) -> str:
    name = unique("data")
    admin.projects.create(name, owner=owner.name)
    return name


def repo(http: httpx.Client, project: str, kind: str = "datasets", **extra: str) -> str:
    name = unique("set")
    answer = http.post(kind, json={"project": project, "name": name, **extra})
    assert answer.status_code == 201, answer.text
    return name


def commit(http: httpx.Client, where: str, files: dict[str, bytes], **extra: object) -> dict:
    entries = [
        {"path": path, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
        for path, body in files.items()
    ]
    answer = http.post(f"{where}/versions", json={"files": entries, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_upload_commit_download_verify(server: RunningServer, admin: Client, make_user) -> None:
    alice = make_user("alice")
    project = project_of(admin, alice)
    http = api(server, alice.client)
    name = repo(http, project)
    where = f"datasets/{project}/{name}"
    train = os.urandom(3 * (1 << 20) + 17)
    readme = "# 数据\n".encode()
    assert upload(http, project, train) == hashlib.sha256(train).hexdigest()
    upload(http, project, readme)
    version = commit(
        http, where, {"data/train.bin": train, "README.md": readme}, message="first", tags=["prod"]
    )
    assert version["number"] == 1
    assert sorted(version["tags"]) == ["latest", "prod"]
    assert [f["path"] for f in version["files"]] == ["README.md", "data/train.bin"]
    got = http.get(f"{where}/versions/latest/files/data/train.bin")
    assert got.status_code == 200 and got.content == train
    ranged = http.get(f"{where}/versions/1/files/README.md", headers={"Range": "bytes=2-"})
    assert ranged.status_code == 206 and ranged.content == readme[2:]
    checked = http.post(f"{where}/versions/prod/verify").json()
    assert checked == {
        "checked": 2,
        "bytes": len(train) + len(readme),
        "ok": True,
        "corrupt": [],
        "missing": [],
    }
    listed = http.get("datasets", params={"project": project}).json()
    assert [(r["name"], r["latest"], r["versions"]) for r in listed] == [(name, 1, 1)]


def test_versions_share_content_and_missing_says_what_to_send(
    server: RunningServer, admin: Client, make_user
) -> None:
    """Ten versions that differ in one file hold one copy of the rest; a client learns
    which contents to send before it sends any."""
    bob = make_user("bob")
    project = project_of(admin, bob)
    http = api(server, bob.client)
    where = f"datasets/{project}/{repo(http, project)}"
    big = os.urandom(1 << 20)
    upload(http, project, big)
    for number in range(1, 11):
        small = f"version {number}".encode()
        asked = http.post(
            f"projects/{project}/contents/missing",
            json={"sha256": [hashlib.sha256(big).hexdigest(), hashlib.sha256(small).hexdigest()]},
        ).json()
        assert asked == [hashlib.sha256(small).hexdigest()]
        upload(http, project, small)
        commit(http, where, {"big.bin": big, "note.txt": small})
    storage = http.get(f"projects/{project}/storage").json()
    assert storage["used_bytes"] == len(big) + sum(len(f"version {n}") for n in range(1, 11))
    blobs = Path(server.data_dir) / "data" / "blobs"
    copies = [p for p in blobs.rglob(hashlib.sha256(big).hexdigest())]
    assert len(copies) == 1


def test_resume_after_a_cut(server: RunningServer, admin: Client, make_user) -> None:
    """A PATCH cut off halfway keeps what arrived; HEAD says where; the rest completes it."""
    carol = make_user("carol")
    project = project_of(admin, carol)
    http = api(server, carol.client)
    content = os.urandom(2 << 20)
    created = http.post(
        "uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(content)),
            "Upload-Metadata": meta(project=project),
        },
    )
    location = created.headers["Location"]
    first = http.patch(
        location,
        content=content[: 1 << 20],
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert first.status_code == 204 and "Upload-Sha256" not in first.headers
    wrong = http.patch(
        location,
        content=b"x",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "5",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert wrong.status_code == 409
    head = http.head(location, headers={"Tus-Resumable": "1.0.0"})
    assert head.headers["Upload-Offset"] == str(1 << 20)
    rest = http.patch(
        location,
        content=content[1 << 20 :],
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(1 << 20),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert rest.headers["Upload-Sha256"] == hashlib.sha256(content).hexdigest()


def test_quota_refused_before_a_byte(server: RunningServer, admin: Client, make_user) -> None:
    dave = make_user("dave")
    project = project_of(admin, dave)
    admin.projects.set_quota(project, storage_bytes=1000)
    http = api(server, dave.client)
    refused = http.post(
        "uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "1001",
            "Upload-Metadata": meta(project=project),
        },
    )
    assert refused.status_code == 413
    assert refused.json()["field"] == "Upload-Length" if "field" in refused.json() else True
    upload(http, project, b"a" * 600)
    second = http.post(
        "uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "600",
            "Upload-Metadata": meta(project=project),
        },
    )
    assert second.status_code == 413


@pytest.mark.parametrize(
    "path", ["../escape", "/etc/passwd", "a/../../b", "a//b", "a\\b", "./a", "a/\x00", ""]
)
def test_unsafe_paths_refused(server: RunningServer, admin: Client, make_user, path: str) -> None:
    erin = make_user("erin")
    project = project_of(admin, erin)
    http = api(server, erin.client)
    where = f"datasets/{project}/{repo(http, project)}"
    upload(http, project, b"x")
    answer = http.post(
        f"{where}/versions",
        json={"files": [{"path": path, "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}]},
    )
    assert answer.status_code == 422
    assert "files.0.path" in answer.text
    assert http.get(f"{where}/versions").json() == []


def test_tag_moved_concurrently(server: RunningServer, admin: Client, make_user) -> None:
    frank = make_user("frank")
    project = project_of(admin, frank)
    http = api(server, frank.client)
    where = f"models/{project}/{repo(http, project, 'models')}"
    for number in range(3):
        upload(http, project, bytes([number]))
        commit(http, where, {"w.bin": bytes([number])})
    assert http.put(f"{where}/tags/prod", json={"version": 1}).status_code == 200
    moved = http.put(f"{where}/tags/prod", json={"version": 2, "expected": 1})
    assert moved.status_code == 200 and moved.json()["tags"]["prod"] == 2
    lost = http.put(f"{where}/tags/prod", json={"version": 3, "expected": 1})
    assert lost.status_code == 409
    assert http.get(f"{where}").json()["tags"]["prod"] == 2


def test_other_tenants(server: RunningServer, admin: Client, make_user) -> None:
    """A private repository is not found by others; knowing a hash gives no content; a
    public one is read by all but changed only by its project."""
    owner, other = make_user("gina"), make_user("hugo")
    project, theirs = project_of(admin, owner), project_of(admin, other)
    mine, stranger = api(server, owner.client), api(server, other.client)
    name = repo(mine, project)
    secret = os.urandom(1000)
    upload(mine, project, secret)
    commit(mine, f"datasets/{project}/{name}", {"secret.bin": secret})
    assert stranger.get(f"datasets/{project}/{name}").status_code == 404
    assert stranger.get(f"datasets/{project}/{name}/versions/1/files/secret.bin").status_code == 404
    assert name not in [r["name"] for r in stranger.get("datasets").json()]
    # Naming the blob by its hash in its own project does not give it.
    own = repo(stranger, theirs)
    claimed = stranger.post(
        f"datasets/{theirs}/{own}/versions",
        json={
            "files": [
                {"path": "stolen", "sha256": hashlib.sha256(secret).hexdigest(), "size": 1000}
            ]
        },
    )
    assert claimed.status_code == 422
    assert stranger.post(
        f"projects/{project}/contents/missing", json={"sha256": ["0" * 64]}
    ).status_code in (403, 404)
    # Public: read by all, written by its project only.
    assert (
        mine.patch(f"datasets/{project}/{name}", json={"visibility": "public"}).status_code == 200
    )
    got = stranger.get(f"datasets/{project}/{name}/versions/1/files/secret.bin")
    assert got.status_code == 200 and got.content == secret
    assert stranger.post(f"datasets/{project}/{name}/versions", json={}).status_code in (403, 404)
    assert stranger.delete(f"datasets/{project}/{name}").status_code in (403, 404)
    assert stranger.put(f"datasets/{project}/{name}/tags/x", json={"version": 1}).status_code in (
        403,
        404,
    )
    # Nor another's upload.
    created = mine.post(
        "uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "10",
            "Upload-Metadata": meta(project=project),
        },
    )
    assert stranger.head(created.headers["Location"]).status_code == 404


def test_blob_files_read_only_and_tree_built(
    server: RunningServer, admin: Client, make_user
) -> None:
    ivan = make_user("ivan")
    project = project_of(admin, ivan)
    http = api(server, ivan.client)
    where = f"datasets/{project}/{repo(http, project)}"
    upload(http, project, b"hello")
    commit(http, where, {"a/b/hello.txt": b"hello"})
    blob = Path(server.data_dir) / "data" / "blobs"
    found = list(blob.rglob(hashlib.sha256(b"hello").hexdigest()))
    assert found and oct(found[0].stat().st_mode & 0o777) == "0o444"
    trees = Path(server.data_dir) / "data" / "trees"
    built = [p for p in trees.glob("*/a/b/hello.txt")]
    assert built and built[0].stat().st_ino == found[0].stat().st_ino


def test_preview_and_inspect(server: RunningServer, admin: Client, make_user) -> None:
    """Previews of a table and of a malformed parquet file (a problem, never a 500); a
    dataset checked as LLaMA-Factory reads it; a model's layout."""
    judy = make_user("judy")
    project = project_of(admin, judy)
    http = api(server, judy.client)
    where = f"datasets/{project}/{repo(http, project)}"
    rows = b'{"instruction": "1+1", "input": "", "output": "2"}\n' + (
        b'{"instruction": "hi", "input": "", "output": ""}\n'
    )
    info = b'{"mine": {"file_name": "train.jsonl", "formatting": "alpaca"}}'
    broken = b"PAR1" + os.urandom(100)
    for body in (rows, info, broken):
        upload(http, project, body)
    commit(http, where, {"train.jsonl": rows, "dataset_info.json": info, "bad.parquet": broken})
    shown = http.get(f"{where}/versions/1/preview/train.jsonl").json()
    assert shown["kind"] == "table" and shown["columns"] == ["instruction", "input", "output"]
    assert shown["rows"][0] == ["1+1", "", "2"] and shown["row_count"] == 2
    bad = http.get(f"{where}/versions/1/preview/bad.parquet", headers={"Accept-Language": "zh-CN"})
    assert bad.status_code == 200 and bad.json()["problem"]
    checked = http.get(f"{where}/versions/1/inspect").json()["datasets"]
    assert [(c["path"], c["entry"], c["formatting"], c["ok"]) for c in checked] == [
        ("train.jsonl", "mine", "alpaca", False)
    ]
    assert checked[0]["findings"][0]["record"] == 2
    model = f"models/{project}/{repo(http, project, 'models')}"
    config = b'{"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 256}'
    upload(http, project, config)
    commit(http, model, {"config.json": config})
    layout = http.get(f"{model}/versions/latest/inspect").json()["model"]
    assert layout["format"] == "huggingface" and layout["architecture"] == "LlamaForCausalLM"
    assert layout["context_length"] == 256


def test_a_taken_name_and_a_discarded_upload(server: RunningServer, admin: Client, make_user):
    """A repository name taken in the project is a 409 naming the field (the same name as a
    model is another repository); an upload discarded halfway leaves no bytes and no
    reservation behind."""
    kim = make_user("kim")
    project = project_of(admin, kim)
    http = api(server, kim.client)
    name = repo(http, project)
    again = http.post("datasets", json={"project": project, "name": name})
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "name"
    assert http.post("models", json={"project": project, "name": name}).status_code == 201
    created = http.post(
        "uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(2 << 20),
            "Upload-Metadata": meta(project=project),
        },
    )
    location = created.headers["Location"]
    http.patch(
        location,
        content=os.urandom(1 << 20),
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert http.get(f"projects/{project}/storage").json()["reserved_bytes"] == 2 << 20
    incoming = Path(server.data_dir) / "data" / "incoming"
    upload_id = location.rsplit("/", 1)[-1]
    assert (incoming / f"upload-{upload_id}").stat().st_size == 1 << 20
    assert http.delete(location).status_code == 204
    assert not (incoming / f"upload-{upload_id}").exists()
    assert http.head(location).status_code == 404
    assert http.get(f"projects/{project}/storage").json()["reserved_bytes"] == 0

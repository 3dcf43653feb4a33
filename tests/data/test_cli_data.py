"""`suanli datasets` and `suanli models` end to end against a real server: a folder pushed
(only what the project lacks is uploaded), an interrupted push resumed from the server's
offset, pulled back byte for byte, verified, deleted only when confirmed, and bad input
answered with one clear line."""

import hashlib
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from waiting import wait_for

from suanli.cli.main import main
from suanli.client import Client
from suanli.client.data import Progress
from tests.conftest import Person, RunningServer, unique

MiB = 1 << 20


class Cut(Exception):
    """The connection lost, as a progress callback plays it."""


class Requests:
    """The requests the CLI's client sends (method, path, Upload-Offset), seen by an httpx
    event hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def hook(self, request: httpx.Request) -> None:
        offset = request.headers.get("Upload-Offset", "")
        self.seen.append((request.method, request.url.path, offset))

    def patches(self) -> list[str]:
        """The Upload-Offset of each PATCH, in order."""
        return [offset for method, _, offset in self.seen if method == "PATCH"]

    def clear(self) -> None:
        self.seen.clear()


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, server: RunningServer):
    """Run `suanli ARGS` in-process as `person` (set with `cli.person = …`); returns (exit code,
    stdout, stderr). Its uploads' state lives in the test's own cache folder."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SUANLI_URL", server.url)
    for variable in ("SUANLI_TOKEN", "SUANLI_LANG", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    requests = Requests()

    def connect() -> Client:
        client = Client(server.url, run.person.client.token, language=os.environ.get("SUANLI_LANG"))
        client._http.event_hooks["request"].append(requests.hook)
        return client

    monkeypatch.setattr("suanli.cli.data.connect", connect)

    def run(*args: str, stdin: str = "", language: str | None = None):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        if language:
            monkeypatch.setenv("SUANLI_LANG", language)
        else:
            monkeypatch.delenv("SUANLI_LANG", raising=False)
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    run.person = None  # type: ignore[attr-defined]
    run.requests = requests  # type: ignore[attr-defined]
    return run


def owner_of_a_project(admin: Client, make_user: Callable[..., Person], cli) -> str:
    person = make_user("data")
    project = unique("data")
    admin.projects.create(project, owner=person.name)
    cli.person = person
    return project


def folder(base: Path) -> dict[str, bytes]:
    """Nested folders, an empty file, a Chinese name, the same content twice."""
    files = {
        "README.md": "# 数据集\n".encode(),
        "empty.txt": b"",
        "train/part-0.bin": os.urandom(MiB + 123),
        "train/nested/deep/a.txt": b"alpha\n",
        "数据/训练.jsonl": '{"instruction": "你好"}\n'.encode(),
        "copy/a.txt": b"alpha\n",
    }
    for path, body in files.items():
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_bytes(body)
    return files


def tree(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def test_push_again_pull_verify_and_remove(cli, admin: Client, make_user, tmp_path) -> None:
    project = owner_of_a_project(admin, make_user, cli)
    source = tmp_path / "source"
    files = folder(source)
    name = unique("set")

    code, out, err = cli(
        "datasets", "push", str(source), "-p", project, "-n", name, "-m", "first", "--json"
    )
    assert code == 0, err
    first = json.loads(out)
    assert first["number"] == 1 and first["message"] == "first"
    assert sorted(f["path"] for f in first["files"]) == sorted(files)
    # Six files, five contents: the copy of a.txt is sent once, the empty file in no PATCH
    # (the server completes it when it is created).
    assert first["transfer"]["files"] == 6
    assert first["transfer"]["uploaded_files"] == 5
    assert len(cli.requests.patches()) == 4

    (source / "README.md").write_bytes(b"# changed\n")
    cli.requests.clear()
    used = cli.person.client.datasets.storage(project).used_bytes
    code, out, err = cli(
        "datasets", "push", str(source), "-n", f"{project}/{name}", "-m", "second", "-t", "prod"
    )
    assert code == 0, err
    assert "version 2" in out and "1 uploaded" in out
    assert cli.requests.patches() == ["0"]  # one small file, one PATCH
    assert cli.person.client.datasets.storage(project).used_bytes == used + len(b"# changed\n")

    code, out, _ = cli("datasets", "show", name, "-p", project)
    assert code == 0 and "second" in out and "prod" in out and "latest" in out
    code, out, _ = cli("datasets", "files", f"{name}@1", "-p", project)
    assert code == 0 and "数据/训练.jsonl" in out and "empty.txt" in out

    pulled = tmp_path / "pulled"
    code, out, err = cli("datasets", "pull", f"{project}/{name}", str(pulled), "--json")
    assert code == 0, err
    assert json.loads(out)["number"] == 2
    assert tree(pulled) == tree(source)
    old = tmp_path / "old"
    assert cli("datasets", "pull", f"{name}@1", str(old), "-p", project)[0] == 0
    assert tree(old) == files

    code, out, _ = cli("datasets", "verify", f"{name}@prod", "-p", project)
    assert code == 0 and "OK" in out

    code, _, err = cli("datasets", "rm", f"{name}@1", "-p", project, stdin="n\n")
    assert code == 1 and "Delete version 1" in err
    assert [v.number for v in cli.person.client.datasets.versions(project, name)] == [2, 1]
    code, out, _ = cli("datasets", "rm", f"{name}@1", "-p", project, "--yes")
    assert code == 0 and "deleted" in out
    assert [v.number for v in cli.person.client.datasets.versions(project, name)] == [2]


def test_rm_a_repository_shows_its_users_and_asks(cli, admin: Client, make_user, tmp_path) -> None:
    project = owner_of_a_project(admin, make_user, cli)
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    assert cli("datasets", "push", str(source), "-p", project, "-n", "r", "-m", "m")[0] == 0
    code, _, err = cli("datasets", "rm", "r", "-p", project, stdin="n\n")
    assert code == 1 and "with every version?" in err
    code, out, err = cli("datasets", "rm", "r", "-p", project, stdin="y\n")
    assert code == 0, err
    code, out, _ = cli("datasets", "list", "-p", project, "--json")
    assert json.loads(out) == []


def test_an_interrupted_push_continues_from_the_servers_offset(
    cli, admin: Client, make_user, tmp_path
) -> None:
    project = owner_of_a_project(admin, make_user, cli)
    name = unique("weights")
    source = tmp_path / "weights"
    source.mkdir()
    big = os.urandom(3 * MiB + 5)
    (source / "model.safetensors").write_bytes(big)
    (source / "config.json").write_text('{"layers": 2}')
    sdk = cli.person.client
    sdk.models.create(project, name)

    def stop_after_the_first_chunk(event: Progress) -> None:
        if event.stage == "upload" and event.done_bytes >= MiB:
            raise Cut

    with pytest.raises(Cut):
        sdk.models.push(
            project,
            name,
            source,
            "cut",
            workers=1,
            chunk_size=MiB,
            progress=stop_after_the_first_chunk,
        )
    assert sdk.models.versions(project, name) == []

    code, out, err = cli(
        "models", "push", str(source), "-p", project, "-n", name, "-m", "again", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    # config.json (sorted first) was sent whole before the cut; the big file continues at 1 MiB.
    assert result["transfer"]["resumed_bytes"] == MiB
    assert result["transfer"]["uploaded_bytes"] == len(big) - MiB
    assert cli.requests.patches() == [str(MiB)]
    state = json.loads((tmp_path / "cache" / "suanli" / "uploads.json").read_text())
    # The uploads, ended, are forgotten; the two files' hashes are kept for the next push.
    assert [json.loads(key)[0] for key in state] == ["sha256", "sha256"]
    pulled = tmp_path / "back"
    assert cli("models", "pull", f"{name}@1", str(pulled), "-p", project)[0] == 0
    assert (pulled / "model.safetensors").read_bytes() == big


def test_a_partial_download_is_resumed_with_range(cli, admin: Client, make_user, tmp_path) -> None:
    project = owner_of_a_project(admin, make_user, cli)
    name = unique("set")
    source = tmp_path / "source"
    source.mkdir()
    body = os.urandom(2 * MiB)
    (source / "data.bin").write_bytes(body)
    assert cli("datasets", "push", str(source), "-p", project, "-n", name, "-m", "m")[0] == 0
    target = tmp_path / "target"
    target.mkdir()
    (target / "data.bin.suanli-part").write_bytes(body[:MiB])
    cli.requests.clear()
    code, out, err = cli("datasets", "pull", name, str(target), "-p", project, "--json")
    assert code == 0, err
    assert json.loads(out)["transfer"] == {
        "files": 1,
        "downloaded_bytes": MiB,
        "kept_bytes": MiB,
    }
    assert (target / "data.bin").read_bytes() == body
    assert not (target / "data.bin.suanli-part").exists()
    one = cli.person.client.datasets.download(project, name, "1", "data.bin", tmp_path)
    assert one == tmp_path / "data.bin" and one.read_bytes() == body
    # Pulled again: nothing to download, every file checked.
    code, out, _ = cli("datasets", "pull", name, str(target), "-p", project, "--json")
    assert json.loads(out)["transfer"]["downloaded_bytes"] == 0


def test_bad_input_is_one_clear_line(cli, admin: Client, make_user, tmp_path) -> None:
    project = owner_of_a_project(admin, make_user, cli)
    stranger_project = unique("other")
    admin.projects.create(stranger_project)
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")

    code, _, err = cli(
        "datasets", "push", str(tmp_path / "absent"), "-p", project, "-n", "x", "-m", "m"
    )
    assert code == 2 and "absent" in err
    code, _, err = cli("datasets", "push", str(source), "-n", "x", "-m", "m")
    assert code == 2 and "--project" in err
    code, _, err = cli(
        "datasets", "push", str(source), "-p", stranger_project, "-n", "x", "-m", "m"
    )
    assert code == 1 and "Not found" in err and stranger_project in err
    code, _, err = cli("datasets", "show", "x", "-p", stranger_project)
    assert code == 1 and "Not found" in err

    secret = tmp_path / "secret.txt"
    secret.write_text("not to be published")
    (source / "link.txt").symlink_to(secret)
    code, _, err = cli("datasets", "push", str(source), "-p", project, "-n", "x", "-m", "m")
    assert code == 1 and "link.txt" in err and "symbolic link" in err
    assert cli.person.client.uploads.missing(project, ["0" * 64]) == ["0" * 64]
    (source / "link.txt").unlink()
    (source / "inside.txt").symlink_to(source / "a.txt")
    code, out, err = cli(
        "datasets", "push", str(source), "-p", project, "-n", "x", "-m", "m", "--json"
    )
    assert code == 0, err
    assert [f["path"] for f in json.loads(out)["files"]] == ["a.txt", "inside.txt"]

    code, _, err = cli("datasets", "pull", "x@9", str(tmp_path / "nine"), "-p", project)
    assert code == 1 and "Not found" in err


def test_chinese_output_has_no_untranslated_keys(cli, admin: Client, make_user, tmp_path) -> None:
    project = owner_of_a_project(admin, make_user, cli)
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    outputs = [
        cli("models", "push", str(source), "-p", project, "-n", "m", "-m", "一", language="zh-CN"),
        cli("models", "list", "-p", project, language="zh-CN"),
        cli("models", "show", "m", "-p", project, language="zh-CN"),
        cli("models", "verify", "m", "-p", project, language="zh-CN"),
        cli("models", "tag", "m", "prod", "1", "-p", project, language="zh-CN"),
        cli("models", "storage", "-p", project, language="zh-CN"),
        cli("models", "rm", "m@1", "-p", project, stdin="n\n", language="zh-CN"),
    ]
    for _code, out, err in outputs:
        text = out + err
        assert "cli." not in text and "label." not in text and "error." not in text, text
    assert "已创建模型" in outputs[0][1]


def test_import_and_commit_from_the_cli(cli, admin: Client, make_user, tmp_path) -> None:
    """`import` follows a background import to its version (here refused: the shared server
    does not fetch from loopback) and `commit` makes a job's output a version."""
    project = owner_of_a_project(admin, make_user, cli)
    code, out, err = cli("datasets", "import", "web", "http://127.0.0.1:9/x.bin", "-p", project)
    assert code == 1 and "Traceback" not in err
    code, out, _ = cli("datasets", "imports", "web", "-p", project, "--json")
    (row,) = json.loads(out)
    assert row["state"] == "failed" and row["error"]
    code, out, _ = cli("imports", "show", str(row["id"]), "--json")
    assert code == 0 and json.loads(out)["id"] == row["id"]
    sdk = cli.person.client
    job = sdk.jobs.submit(
        {
            "project": project,
            "script": "mkdir out && echo w > out/w.bin",
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        }
    )
    wait_for(lambda: sdk.jobs.get(job.id).state == "succeeded", 60, "the job")
    code, out, err = cli("models", "commit", str(job.id), "out", "-n", "m", "-p", project, "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["job_id"] == job.id and [f["path"] for f in made["files"]] == ["w.bin"]


def test_a_second_push_reads_only_what_changed(cli, admin: Client, make_user, tmp_path) -> None:
    """Hashes are remembered by file identity (inode, size, modification and change time): an
    unchanged folder is not read again, and a file rewritten with its old modification time
    set back (as `rsync -t` or `touch -d` would) is still read again and sent."""
    project = owner_of_a_project(admin, make_user, cli)
    sdk = cli.person.client
    name = unique("cache")
    sdk.datasets.create(project, name)
    source = tmp_path / "source"
    source.mkdir()
    weights = source / "weights.bin"
    weights.write_bytes(os.urandom(2 * MiB))
    (source / "config.json").write_text("{}")
    state = tmp_path / "state.json"
    sdk.datasets.push(project, name, source, "first", state_file=state)

    def hashed(events: list[Progress]) -> tuple[int, int]:
        last = [e for e in events if e.stage == "hash"][-1]
        return last.done_bytes - last.resumed_bytes, last.total_bytes

    events: list[Progress] = []
    sdk.datasets.push(project, name, source, "again", state_file=state, progress=events.append)
    assert hashed(events) == (0, 2 * MiB + 2)
    before = weights.stat()
    changed = os.urandom(2 * MiB)
    weights.write_bytes(changed)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # the old time, set back
    events.clear()
    version = sdk.datasets.push(
        project, name, source, "changed", state_file=state, progress=events.append
    )
    assert hashed(events) == (2 * MiB, 2 * MiB + 2)
    files = {f.path: f.sha256 for f in version.files}
    assert files["weights.bin"] == hashlib.sha256(changed).hexdigest()

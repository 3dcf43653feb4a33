"""`suanli admin backup` and `restore` end to end: a real server's users, projects and dataset
versions backed up, the data directory and the database wiped, restored, verified, and served
again byte for byte; backups that were tampered with or that name paths outside themselves
refused before anything is written; a database in use not overwritten without --yes."""

import hashlib
import io
import json
import os
import shutil
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect

from suanli.app import prepare
from suanli.cli.main import main
from suanli.config import Settings
from suanli.db.engine import Database
from tests.conftest import (
    ADMIN_PASSWORD,
    POSTGRES_URL,
    RunningServer,
    _create_postgres_database,
    start_server,
    unique,
)
from tests.data.test_repositories import api, commit, upload

CliResult = tuple[int, str, str]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Callable[..., CliResult]:
    """Run `suanli ARGS` in-process with the server settings `env` (as an administrator on
    the server's machine would); returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for variable in ("SUANLI_LANG", "LC_ALL", "LC_MESSAGES", "SUANLI_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")

    def run(*args: str, env: dict[str, str]) -> CliResult:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def server_env(data_dir: Path, database_url: str, port: int) -> dict[str, str]:
    return {
        "SUANLI_DATA_DIR": str(data_dir),
        "SUANLI_DATABASE_URL": database_url,
        "SUANLI_PORT": str(port),
        "SUANLI_WORK_DIR": str(data_dir.parent / "work"),
    }


def port_of(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fresh_database(tmp_path: Path, name: str) -> str:
    return _create_postgres_database() if POSTGRES_URL else f"sqlite:///{tmp_path / name}"


def wipe(data_dir: Path, database_url: str) -> str:
    """Remove the data directory (trees are sealed read-only: opened up first) and the
    database; returns the URL of the empty database to restore into."""
    for folder, _, _ in os.walk(data_dir):
        os.chmod(folder, 0o700)
    shutil.rmtree(data_dir)
    if POSTGRES_URL:
        return _create_postgres_database()
    database = Path(database_url.removeprefix("sqlite:///"))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    return database_url


def test_backup_wipe_restore_serves_the_same_bytes(
    server_factory, cli, tmp_path: Path, database_url: str
) -> None:
    server = server_factory()
    admin = server.login()
    alice, password = unique("alice"), "password-alice-1"
    admin.users.create(alice, password)
    project = unique("backup")
    admin.projects.create(project, owner=alice)
    http = api(server, server.login(alice, password))
    name = unique("set")
    assert http.post("datasets", json={"project": project, "name": name}).status_code == 201
    where = f"datasets/{project}/{name}"
    train, readme, extra = os.urandom(300_000), "# 数据\n".encode(), b"second version\n"
    for content in (train, readme, extra):
        upload(http, project, content)
    commit(http, where, {"data/train.bin": train, "README.md": readme})
    commit(http, where, {"data/train.bin": train, "extra/new.txt": extra})
    data_dir = server.data_dir
    keys = {p.name: p.read_bytes() for p in (data_dir / "ssh").iterdir()}
    assert keys, "the server made its SSH keys"
    env = server_env(data_dir, database_url, port_of(server))

    # A backup may be taken while the server runs; a restore onto it is refused.
    live = tmp_path / "live-backup"
    code, out, err = cli("admin", "backup", str(live), "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["tables"]["data_versions"] == 2
    code, _, err = cli("admin", "restore", str(live), "--yes", env=env)
    assert code == 1 and "stop the server" in err

    server.stop()
    backup = tmp_path / "backup"
    code, out, err = cli("admin", "backup", str(backup), env=env)
    assert code == 0, err
    assert "3 blobs" in out
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["blobs_included"] and manifest["tables"][0]["name"]
    for file, entry in manifest["files"].items():
        assert hashlib.sha256((backup / file).read_bytes()).hexdigest() == entry["sha256"]
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700

    no_blobs = tmp_path / "no-blobs"
    assert cli("admin", "backup", str(no_blobs), "--no-blobs", env=env)[0] == 0
    assert not (no_blobs / "blobs").exists()

    restored_url = wipe(data_dir, database_url)
    env = server_env(data_dir, restored_url, port_of(server))
    code, out, err = cli("admin", "restore", str(backup), env=env)
    assert code == 0, out + err
    assert "2 version trees" in out and "3 of 3 blobs" in out

    for key, content in keys.items():
        path = data_dir / "ssh" / key
        assert path.read_bytes() == content and stat.S_IMODE(path.stat().st_mode) == 0o600
    sha256 = hashlib.sha256(train).hexdigest()
    blob = data_dir / "data" / "blobs" / sha256[:2] / sha256[2:4] / sha256
    trees = sorted((data_dir / "data" / "trees").iterdir(), key=lambda tree: int(tree.name))
    assert len(trees) == 2
    for tree in trees:
        assert (tree / "data" / "train.bin").stat().st_ino == blob.stat().st_ino
    assert (trees[1] / "extra" / "new.txt").read_bytes() == extra

    again = start_server(data_dir, restored_url)
    try:
        http = api(again, again.login(alice, password))
        files = {1: {"data/train.bin": train, "README.md": readme}, 2: {"extra/new.txt": extra}}
        for number, expected in files.items():
            for path, content in expected.items():
                got = http.get(f"{where}/versions/{number}/files/{path}")
                assert got.status_code == 200 and got.content == content
        checked = http.post(f"{where}/versions/2/verify").json()
        assert checked["ok"] and checked["checked"] == 2
        # New rows get new ids (PostgreSQL's sequences were moved past the restored ones).
        assert commit(http, where, {"again.bin": train})["number"] == 3
        again.login().users.create(unique("bob"), "password-bob-1")
    finally:
        again.stop()

    # State without blobs, over an empty store: the restore names every blob it lacks.
    elsewhere = tmp_path / "elsewhere" / "data"
    env = server_env(elsewhere, fresh_database(tmp_path, "elsewhere.db"), free_port())
    code, _, err = cli("admin", "restore", str(no_blobs), env=env)
    assert code == 1 and "3 blobs are missing" in err
    assert all(hashlib.sha256(c).hexdigest() in err for c in (train, readme, extra))


@pytest.fixture
def small_state(tmp_path: Path, database_url: str) -> tuple[Settings, dict[str, str]]:
    """A prepared server's state (no server running): its database and an SSH key."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=database_url, admin_password=ADMIN_PASSWORD)
    database = Database(database_url)
    prepare(settings, database)
    database.dispose()
    (data_dir / "ssh").mkdir(mode=0o700)
    (data_dir / "ssh" / "host_ed25519_key").write_bytes(b"private key\n")
    return settings, server_env(data_dir, database_url, free_port())


def test_tampered_or_escaping_backup_refused_before_anything_is_written(
    cli, small_state, tmp_path: Path
) -> None:
    _, env = small_state
    backup = tmp_path / "backup"
    assert cli("admin", "backup", str(backup), env=env)[0] == 0
    target_dir = tmp_path / "target"
    target = server_env(target_dir, fresh_database(tmp_path, "target.db"), free_port())

    def refused(expected: str) -> None:
        code, _, err = cli("admin", "restore", str(backup), env=target)
        assert code == 1 and expected in err, err
        assert not target_dir.exists()
        database = Database(target["SUANLI_DATABASE_URL"])
        assert inspect(database.engine).get_table_names() == []
        database.dispose()

    key = backup / "state" / "ssh" / "host_ed25519_key"
    original = key.read_bytes()
    key.write_bytes(original[:-3])  # truncated
    refused("does not match its checksum")
    key.write_bytes(original.replace(b"private", b"PRIVATE"))  # same size, other bytes
    refused("does not match its checksum")
    key.write_bytes(original)

    path = backup / "manifest.json"
    manifest = json.loads(path.read_text())
    outside = tmp_path / "x"
    outside.write_bytes(b"outside\n")
    for name in ("../x", "state/../../x", "state/data/blobs/x", str(outside)):
        entry = {"sha256": hashlib.sha256(b"outside\n").hexdigest(), "size": 8}
        path.write_text(json.dumps({**manifest, "files": {**manifest["files"], name: entry}}))
        refused("not a path it may hold")
    escaping = {**manifest, "state_files": [{"path": "../../x", "mode": 0o600}]}
    path.write_text(json.dumps(escaping))
    refused("not a path it may hold")


def test_restore_over_a_database_in_use_needs_yes(cli, small_state, tmp_path: Path) -> None:
    settings, env = small_state
    backup = tmp_path / "backup"
    assert cli("admin", "backup", str(backup), "--no-blobs", env=env)[0] == 0
    code, _, err = cli("admin", "restore", str(backup), env=env)
    assert code == 1 and "--yes" in err
    code, out, err = cli("admin", "restore", str(backup), "--yes", "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["ok"] and json.loads(out)["tables"]["users"] == 1
    key = settings.data_dir / "ssh" / "host_ed25519_key"
    assert key.read_bytes() == b"private key\n"

"""Datasets and models over SFTP through the SSH gateway of a real server, with the OpenSSH
clients a user runs (`sftp`, `scp`) and asyncssh where a connection must drop mid-file:
uploads become one version per session, with the right contents; other tenants' projects
are neither shown nor writable; `..`, links and removals are refused; the storage quota
stops a write and nothing of it is kept; a file never closed is never committed."""

import hashlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from waiting import run_async, wait_for

from suanli.client import Client
from tests.conftest import RunningServer, unique
from tests.data.test_repositories import api, commit, upload

PASSWORD = "sftp-test-password"
ADMIN_PASSWORD = "admin-test-password"  # tests/conftest.py gives every test server this one


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Site:
    """A server whose SSH port is known, and its administrator."""

    def __init__(self, server: RunningServer, ssh_port: int) -> None:
        self.server = server
        self.ssh_port = ssh_port
        self.admin = server.login("admin", ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, launch_server: Any) -> Iterator[Site]:
    port = free_port()
    env = {"SUANLI_SSH_PORT": str(port), "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000"}
    running = launch_server(tmp_path_factory.mktemp("sftp"), env)
    yield Site(running, port)
    running.stop()


class Person:
    """A user who owns a project with a dataset, and has an SSH key on their account."""

    def __init__(self, site: Site, folder: Path, prefix: str) -> None:
        self.site = site
        self.name = unique(prefix)
        site.admin.users.create(self.name, PASSWORD)
        self.project = unique("p")
        site.admin.projects.create(self.project, owner=self.name)
        self.client: Client = site.server.login(self.name, PASSWORD)
        self.http: httpx.Client = api(site.server, self.client)
        self.dataset = unique("set")
        made = self.http.post("datasets", json={"project": self.project, "name": self.dataset})
        assert made.status_code == 201, made.text
        self.key = folder / f"{self.name}_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        line = self.key.with_suffix(".pub").read_text()
        added = self.http.post("me/ssh-keys", json={"public_key": line})
        assert added.status_code == 201, added.text

    @property
    def where(self) -> str:
        """The dataset's folder over SFTP."""
        return f"/{self.project}/datasets/{self.dataset}"

    def options(self) -> list[str]:
        return [
            "-i",
            str(self.key),
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]

    def sftp(self, *commands: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """One `sftp -b` session; it stops at the first command that fails."""
        port = str(self.site.ssh_port)
        return subprocess.run(
            ["sftp", "-P", port, *self.options(), "-b", "-", "data@127.0.0.1"],
            input="\n".join(commands) + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
        )

    def versions(self, dataset: str | None = None) -> list[dict[str, Any]]:
        answer = self.http.get(f"datasets/{self.project}/{dataset or self.dataset}/versions")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def latest(self, dataset: str | None = None) -> dict[str, Any]:
        where = f"datasets/{self.project}/{dataset or self.dataset}/versions/latest"
        answer = self.http.get(where)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_for_version(self, number: int, dataset: str | None = None) -> dict[str, Any]:
        """The session's version is made once the server saw it end, just after the client."""
        wait_for(
            lambda: any(v["number"] == number for v in self.versions(dataset)),
            timeout=30,
            what=f"version {number}",
        )
        return self.latest(dataset)


@pytest.fixture
def alice(site: Site, tmp_path: Path) -> Person:
    return Person(site, tmp_path, "alice")


def manifest(version: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in version["files"]}


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def staging_files(site: Site) -> list[Path]:
    """Staging files of SFTP uploads left in the store (none once a session ended)."""
    return list((site.server.data_dir / "data" / "incoming").glob("*.sftp"))


def test_a_folder_put_over_sftp_is_one_new_version(alice: Person, tmp_path: Path) -> None:
    keep = b"kept from version 1\n"
    upload(alice.http, alice.project, keep)
    commit(alice.http, f"datasets/{alice.project}/{alice.dataset}", {"keep.txt": keep})
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    files = {"a.txt": "你好, SFTP\n".encode(), "sub/b.bin": os.urandom(300_000)}
    for path, content in files.items():
        (folder / path).write_bytes(content)

    done = alice.sftp("ls /", f"put -r corpus {alice.where}/", f"ls -l {alice.where}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"/{alice.project}" in done.stdout.split()
    # The client waits for the version, and is told which.
    told = f"{alice.project}/{alice.dataset}: version 2 made (files uploaded in this session: 2)"
    assert told in done.stderr

    version = alice.wait_for_version(2)
    assert manifest(version) == {
        "keep.txt": sha(keep),
        "corpus/a.txt": sha(files["a.txt"]),
        "corpus/sub/b.bin": sha(files["sub/b.bin"]),
    }
    assert version["message"] == f"SFTP upload by {alice.name}"
    assert version["source"] == "sftp"
    assert len(alice.versions()) == 2  # one version for the whole session

    # What is in the latest version downloads from its blobs.
    back = tmp_path / "back"
    back.mkdir()
    got = alice.sftp(f"get {alice.where}/corpus/sub/b.bin {back}/b.bin")
    assert got.returncode == 0, got.stderr
    assert (back / "b.bin").read_bytes() == files["sub/b.bin"]
    assert staging_files(alice.site) == []


def test_scp_uploads_into_a_dataset(alice: Person, tmp_path: Path) -> None:
    """OpenSSH's scp speaks SFTP (since 9.0): the same login takes it."""
    content = os.urandom(70_000)
    (tmp_path / "weights.bin").write_bytes(content)
    target = f"data@127.0.0.1:{alice.where}/"
    copied = subprocess.run(
        ["scp", "-P", str(alice.site.ssh_port), *alice.options(), "weights.bin", target],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert copied.returncode == 0, copied.stderr
    assert manifest(alice.wait_for_version(1)) == {"weights.bin": sha(content)}


def test_mkdir_makes_a_repository_for_members(alice: Person, tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("model card")
    name = unique("made")
    done = alice.sftp(
        f"mkdir /{alice.project}/models/{name}",
        f"put m.txt /{alice.project}/models/{name}/",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: alice.http.get(f"models/{alice.project}/{name}/versions/1").status_code == 200,
        timeout=30,
        what="the new model's first version",
    )
    # Nothing is made above a repository: no project, no kind.
    refused = alice.sftp(f"mkdir /{unique('p')}")
    assert refused.returncode != 0
    refused = alice.sftp(f"put m.txt /{alice.project}/datasets/", cwd=tmp_path)
    assert refused.returncode != 0


def test_another_users_project_is_neither_listed_nor_writable(
    alice: Person, site: Site, tmp_path: Path
) -> None:
    bob = Person(site, tmp_path, "bob")
    (tmp_path / "x.txt").write_text("bob was here")
    listed = bob.sftp("ls -1 /", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"/{bob.project}" in listed.stdout.split() and alice.project not in listed.stdout
    for attempt in (
        f"put x.txt {alice.where}/x.txt",
        f"ls {alice.where}",
        f"ls /{alice.project}",
        f"mkdir /{alice.project}/datasets/{unique('set')}",
    ):
        assert bob.sftp(attempt, cwd=tmp_path).returncode != 0, attempt
    # Through `..` from his own dataset: refused, not followed.
    sneaky = f"put x.txt {bob.where}/../../../{alice.project}/datasets/{alice.dataset}/x.txt"
    assert bob.sftp(sneaky, cwd=tmp_path).returncode != 0
    done = bob.sftp(f"put x.txt {bob.where}/x.txt", cwd=tmp_path)  # his own: fine
    assert done.returncode == 0, done.stderr
    bob.wait_for_version(1)
    assert alice.versions() == []


def test_versions_are_immutable_and_links_refused(alice: Person, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("first")
    assert alice.sftp(f"put f.txt {alice.where}/f.txt", cwd=tmp_path).returncode == 0
    alice.wait_for_version(1)
    for attempt in (
        f"rm {alice.where}/f.txt",
        f"rename {alice.where}/f.txt {alice.where}/g.txt",
        f"ln -s {alice.where}/f.txt {alice.where}/link",
        f"rmdir {alice.where}",
        f"put f.txt {alice.where}/a/../f2.txt",
        "df",  # nothing of the server's disks shows
    ):
        assert alice.sftp(attempt, cwd=tmp_path).returncode != 0, attempt
    # What this session uploaded and did not commit yet may still be renamed (WinSCP does).
    done = alice.sftp(
        f"put f.txt {alice.where}/g.txt.filepart",
        f"rename {alice.where}/g.txt.filepart {alice.where}/g.txt",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(manifest(alice.wait_for_version(2))) == ["f.txt", "g.txt"]


def test_quota_exceeded_mid_write_commits_nothing(
    alice: Person, site: Site, tmp_path: Path
) -> None:
    site.admin.projects.set_quota(alice.project, storage_bytes=100_000)
    (tmp_path / "big.bin").write_bytes(os.urandom(400_000))
    (tmp_path / "small.txt").write_text("fits")
    refused = alice.sftp(f"put big.bin {alice.where}/big.bin", cwd=tmp_path)
    assert refused.returncode != 0
    assert "Failure" in refused.stderr, refused.stderr  # OpenSSH shows the code only

    async def write_too_much() -> str:
        async with connect(alice) as conn, conn.start_sftp_client() as sftp:
            big = await sftp.open(f"{alice.where}/big.bin", "wb")
            with pytest.raises(asyncssh.SFTPFailure) as refusal:
                await big.write(os.urandom(150_000))
            with pytest.raises(asyncssh.SFTPFailure):  # closing it says so again
                await big.close()
            return str(refusal.value.reason)

    assert run_async(write_too_much()).startswith("Not enough storage left in the project")
    done = alice.sftp(f"put small.txt {alice.where}/small.txt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # The next session's version holds the small file only; the big one left nothing.
    assert manifest(alice.wait_for_version(1)) == {"small.txt": sha(b"fits")}
    assert len(alice.versions()) == 1
    storage = alice.http.get(f"projects/{alice.project}/storage").json()
    assert storage["used_bytes"] == 4
    assert staging_files(site) == []


def connect(person: Person) -> Any:
    return asyncssh.connect(
        "127.0.0.1",
        person.site.ssh_port,
        username="data",
        client_keys=[asyncssh.read_private_key(str(person.key))],
        known_hosts=None,
        agent_path=None,
        config=(),
    )


def test_a_dropped_connection_commits_only_the_closed_files(alice: Person) -> None:
    whole = os.urandom(50_000)

    async def session() -> None:
        async with connect(alice) as conn:
            sftp = await conn.start_sftp_client()
            async with sftp.open(f"{alice.where}/whole.bin", "wb") as finished:
                await finished.write(whole)
            partial = await sftp.open(f"{alice.where}/partial.bin", "wb")
            await partial.write(os.urandom(200_000))
            await sftp.stat(alice.where)  # the server has the writes: they are in order
            assert staging_files(alice.site) != []
            conn.abort()  # the connection drops: partial.bin's handle was never closed

    run_async(session())
    assert manifest(alice.wait_for_version(1)) == {"whole.bin": sha(whole)}
    wait_for(lambda: staging_files(alice.site) == [], timeout=10, what="the staging file gone")


def test_the_data_login_serves_only_sftp(alice: Person) -> None:
    shell = subprocess.run(
        ["ssh", "-p", str(alice.site.ssh_port), *alice.options(), "data@127.0.0.1", "ls"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode != 0
    assert "SFTP" in shell.stderr

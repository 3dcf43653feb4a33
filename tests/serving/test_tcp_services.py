"""A service that speaks plain TCP (gRPC would be the same): ready once it accepts a
connection, and reached through the SSH gateway's `services` login by the members of its
project — `ssh -N -L 9000:<service>.<project>:0 services@<server>` — and by nobody else."""

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from tests.conftest import RunningServer, unique
from tests.data.test_sftp import free_port
from tests.serving.helpers import SMALL, api, deploy, serving_server, wait_ready

ECHO = Path(__file__).with_name("echo_tcp.py")


@pytest.fixture(scope="module")
def site(launch_server, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunningServer, int]:
    port = free_port()
    base = tmp_path_factory.mktemp("tcp")
    running = serving_server(lambda env: launch_server(base, env), SUANLI_SSH_PORT=str(port))
    yield running, port
    running.stop()


def _person(server: RunningServer, admin, folder: Path, project: str | None) -> asyncssh.SSHKey:
    """A user (a member of `project` if given) with an SSH key on their account."""
    name = unique("u")
    admin.post("users", json={"name": name, "password": "password-123"}).raise_for_status()
    if project:
        member = {"user": name, "role": "member"}
        admin.post(f"projects/{project}/members", json=member).raise_for_status()
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    http = api(server, server.login(name, "password-123").token)
    line = key.with_suffix(".pub").read_text()
    http.post("me/ssh-keys", json={"public_key": line}).raise_for_status()
    return asyncssh.read_private_key(str(key))


async def _call(port: int, key: asyncssh.SSHKey, target: str) -> bytes:
    async with asyncssh.connect(
        "127.0.0.1", port, username="services", client_keys=[key], known_hosts=None
    ) as conn:
        reader, writer = await conn.open_connection(target, 0)
        writer.write(b"hello over tcp\n")
        answer = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return answer


def test_a_tcp_service_is_reached_through_the_ssh_gateway_by_its_members_only(
    site, tmp_path: Path
) -> None:
    server, ssh_port = site
    admin = api(server)
    project = unique("tcp")
    admin.post("projects", json={"name": project}).raise_for_status()
    service = deploy(
        admin, project, "echo", command=[sys.executable, str(ECHO)], protocol="tcp", resources=SMALL
    )
    detail = wait_ready(admin, service["id"])
    assert detail["protocol"] == "tcp"
    assert detail["endpoint"].startswith(f"ssh -N -L 9000:echo.{project}:0 services@")
    assert detail["endpoint"].endswith(f" -p {ssh_port}")
    member = _person(server, admin, tmp_path, project)
    stranger = _person(server, admin, tmp_path, None)

    assert asyncio.run(_call(ssh_port, member, f"echo.{project}")) == b"HELLO OVER TCP\n"
    for key, target in ((stranger, f"echo.{project}"), (member, f"nothing.{project}")):
        with pytest.raises((asyncssh.ChannelOpenError, asyncssh.Error, OSError)):
            asyncio.run(_call(ssh_port, key, target))

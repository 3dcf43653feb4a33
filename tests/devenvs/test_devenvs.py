"""Dev environments on a real server with simulated GPUs: a real JupyterLab, the web terminal
and SSH, all reached only through the server (its proxy and its SSH gateway), by whom may.
"""

import asyncio
import json
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh
import httpx
import pytest
from waiting import attempt, run_async, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from suanli.client import ApiError, Client

if TYPE_CHECKING:  # the root conftest's; not importable by name from here
    from tests.conftest import RunningServer

PASSWORD = "devenv-test-password"
ADMIN_PASSWORD = "admin-test-password"  # tests/conftest.py gives every test server this one
SIMULATED_A100S = json.dumps([{"count": 4, "model": "A100-SXM4-80GB", "memory_bytes": 80 * 2**30}])


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Any
) -> Iterator["RunningServer"]:
    base = tmp_path_factory.mktemp("devenvs")
    # An environment an administrator prepared: a venv (the server's packages visible).
    prepared = base / "envs" / "plain"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(prepared)],
        check=True,
    )
    env = {
        "SUANLI_SIMULATED_GPUS": SIMULATED_A100S,
        "SUANLI_DEVENV_ENVIRONMENTS": json.dumps({"plain": str(prepared)}),
        "SUANLI_DEVENV_CHECK_INTERVAL_SECONDS": "0.5",
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
    }
    running = launch_server(base, env)
    yield running
    running.stop()


class Team:
    """A project with its owner (alice), a member (bob), and a stranger (eve) outside it."""

    def __init__(self, server: "RunningServer") -> None:
        admin = server.login("admin", ADMIN_PASSWORD)
        self.project = unique("dev")
        self.names = {role: unique(role) for role in ("alice", "bob", "eve")}
        for name in self.names.values():
            admin.users.create(name, PASSWORD)
        admin.projects.create(self.project, owner=self.names["alice"])
        admin.projects.add_member(self.project, self.names["bob"])
        self.admin = admin
        self.clients = {role: server.login(name, PASSWORD) for role, name in self.names.items()}
        self.server = server

    def __getattr__(self, role: str) -> Client:
        return self.clients[role]


@pytest.fixture(scope="module")
def team(server: "RunningServer") -> Team:
    return Team(server)


SMALL = {"cpus": 0.1, "memory": "256Mi"}  # the host has two cores: room for many


def create(client: Client, project: str, **spec: Any) -> dict[str, Any]:
    resources = {**SMALL, **spec.pop("resources", {})}
    body = {"project": project, "name": unique("env"), "resources": resources, **spec}
    return client.request("POST", "devenvs", json=body)


def show(client: Client, env_id: int) -> dict[str, Any]:
    return client.request("GET", f"devenvs/{env_id}")


def bearer(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


def wait_until_up(server: "RunningServer", client: Client, env: dict[str, Any], path: str) -> None:
    """Until the tool answers through the proxy (its state says running before it listens)."""

    def answers() -> bool:
        response = httpx.get(f"{server.url}{path}", headers=bearer(client), timeout=5)
        return response.status_code == 200

    wait_for(answers, timeout=60, what=f"{path} to answer")


@pytest.fixture(scope="module")
def notebook(server: "RunningServer", team: Team, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Alice's environment with every tool but VS Code, one simulated GPU."""
    workdir = tmp_path_factory.mktemp("alice-work")
    env = create(
        team.alice,
        team.project,
        resources={"gpus": 1, "cpus": 1.0, "memory": "2Gi"},  # a kernel needs a whole core
        tools=["jupyter", "terminal", "ssh"],
        workdir=str(workdir),
        idle_timeout=3600,
    )
    wait_until_up(server, team.alice, env, f"/x/{env['id']}/jupyter/api/status")
    return show(team.alice, env["id"]) | {"workdir": workdir}


def test_jupyterlab_runs_code_through_the_proxy(
    server: "RunningServer", team: Team, notebook: dict
) -> None:
    env_id = notebook["id"]
    assert notebook["state"] == "running"
    assert notebook["urls"]["jupyter"] == f"/x/{env_id}/jupyter/lab"
    base = f"{server.url}/x/{env_id}/jupyter"
    kernel = httpx.post(f"{base}/api/kernels", headers=bearer(team.alice), json={}, timeout=30)
    assert kernel.status_code == 201, kernel.text
    code = "import os; print(6 * 7, os.environ['CUDA_VISIBLE_DEVICES'], os.getcwd())"
    output = run_async(_execute(server, team.alice, env_id, kernel.json()["id"], code))
    words = output.split()
    assert words[0] == "42"
    assert words[1].startswith("GPU-sim-")  # the environment's one simulated GPU
    assert words[2] == str(notebook["workdir"])
    # The lab page itself, as a browser gets it.
    page = httpx.get(f"{base}/lab", headers=bearer(team.alice), timeout=30)
    assert page.status_code == 200 and "JupyterLab" in page.text


async def _execute(
    server: "RunningServer", client: Client, env_id: int, kernel: str, code: str
) -> str:
    """Run code over Jupyter's kernel websocket, through the proxy; its printed output."""
    url = (
        server.url.replace("http://", "ws://")
        + f"/x/{env_id}/jupyter/api/kernels/{kernel}/channels"
    )
    async with connect(url, additional_headers=bearer(client), open_timeout=30) as socket:
        header = {
            "msg_id": uuid.uuid4().hex,
            "session": uuid.uuid4().hex,
            "username": "test",
            "msg_type": "execute_request",
            "version": "5.3",
        }
        content = {"code": code, "silent": False}
        await socket.send(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": "shell",
                }
            )
        )
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), 30))
            if message.get("msg_type") == "stream":
                return message["content"]["text"]
            if message.get("msg_type") == "error":
                raise AssertionError(message["content"])


def test_only_the_owner_enters(server: "RunningServer", team: Team, notebook: dict) -> None:
    path = f"/x/{notebook['id']}/jupyter/api/status"
    assert httpx.get(server.url + path, headers=bearer(team.eve)).status_code == 404  # stranger
    assert httpx.get(server.url + path, headers=bearer(team.bob)).status_code == 403  # member
    # Anonymous: a browser is sent to the login page; a script gets no further either.
    anonymous = httpx.get(server.url + path)
    assert anonymous.status_code in (303, 401)
    assert "/login" in anonymous.headers.get("location", "/login")
    # Websockets too (the terminal), for the stranger, the member and nobody.
    url = server.url.replace("http://", "ws://") + f"/x/{notebook['id']}/terminal/ws"
    for headers in (bearer(team.eve), bearer(team.bob), {}):
        with pytest.raises(InvalidStatus):
            run_async(_open(url, headers))
    # A foreign site cannot drive it with the user's session.
    foreign = {**bearer(team.alice), "Origin": "https://evil.example"}
    with pytest.raises(InvalidStatus):
        run_async(_open(url, foreign))
    refused = httpx.post(server.url + path.replace("status", "kernels"), headers=foreign, json={})
    assert refused.status_code == 403


async def _open(url: str, headers: dict[str, str]) -> None:
    async with connect(url, additional_headers=headers):
        pass


def _opens(url: str, headers: dict[str, str]) -> bool:
    """Whether it lets us in (a tool still starting refuses too, for a moment)."""
    try:
        run_async(_open(url, headers))
    except InvalidStatus:
        return False
    return True


def test_project_owners_enter_only_where_the_project_allows(
    server: "RunningServer", team: Team, alice_key: asyncssh.SSHKey
) -> None:
    env = create(team.bob, team.project, tools=["terminal", "ssh"], idle_timeout=3600)
    wait_for(lambda: show(team.bob, env["id"])["state"] == "running", what="bob's env to run")
    path = f"{server.url}/x/{env['id']}/terminal/ws"
    url = path.replace("http://", "ws://")
    with pytest.raises(InvalidStatus):
        run_async(_open(url, bearer(team.alice)))  # owner of the project, not allowed yet
    team.alice.request("PATCH", f"projects/{team.project}", json={"owners_open_devenvs": True})
    try:
        wait_for(lambda: _opens(url, bearer(team.alice)), what="the owner to get in")
        # Over SSH too, as `<name>.<user>`, which is what the API tells her to use.
        seen = show(team.alice, env["id"])
        login = f"{env['name']}.{team.names['bob']}"
        assert seen["ssh"]["user"] == login and f"User {login}" in seen["ssh"]["config"]
        assert show(team.bob, env["id"])["ssh"]["user"] == env["name"]
        assert run_async(_whoami(seen, login, alice_key)) == team.names["bob"]
        with pytest.raises(ApiError) as refused:  # the switch is the owners', not members'
            team.bob.request(
                "PATCH", f"projects/{team.project}", json={"owners_open_devenvs": False}
            )
        assert refused.value.status == 403
    finally:
        team.alice.request("PATCH", f"projects/{team.project}", json={"owners_open_devenvs": False})
        team.bob.request("POST", f"devenvs/{env['id']}/stop")


async def _whoami(env: dict, login: str, key: asyncssh.SSHKey) -> str:
    async with _ssh(env, login, key) as conn:
        return (await conn.run("echo $SUANLI_USER")).stdout.strip()


def test_web_terminal_over_the_proxy(server: "RunningServer", team: Team, notebook: dict) -> None:
    url = (
        server.url.replace("http://", "ws://") + f"/x/{notebook['id']}/terminal/ws?rows=30&cols=100"
    )

    async def session() -> str:
        async with connect(url, additional_headers=bearer(team.alice)) as socket:
            await socket.send(
                json.dumps(["stdin", "echo $((6*7)) $CUDA_VISIBLE_DEVICES; stty size\r"])
            )
            seen = ""
            while "30 100" not in seen or "42 GPU-sim-" not in seen:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
                assert frame[0] == "stdout"
                seen += frame[1]
            return seen

    assert "42 GPU-sim-" in run_async(session())


@pytest.fixture(scope="module")
def alice_key(team: Team) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="alice@laptop")
    added = team.alice.request(
        "POST", "me/ssh-keys", json={"public_key": key.export_public_key().decode()}
    )
    assert added["name"] == "alice@laptop" and added["fingerprint"].startswith("SHA256:")
    return key


def _ssh(notebook: dict, login: str, key: asyncssh.SSHKey) -> Any:
    return asyncssh.connect(
        notebook["ssh"]["host"],
        notebook["ssh"]["port"],
        username=login,
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=(),
    )


def test_ssh_runs_commands_in_the_environment(
    team: Team, notebook: dict, alice_key: asyncssh.SSHKey, tmp_path: Path
) -> None:
    assert notebook["ssh"]["command"].startswith("ssh -p ")
    assert f"User {notebook['name']}" in notebook["ssh"]["config"]

    async def session() -> tuple[Any, ...]:
        async with _ssh(notebook, notebook["name"], alice_key) as conn:
            result = await conn.run("echo $CUDA_VISIBLE_DEVICES; pwd; exit 3")
            terminal = await conn.run("tty", term_type="xterm", term_size=(100, 30))
            (tmp_path / "up.txt").write_text("uploaded over SFTP")
            async with conn.start_sftp_client() as sftp:
                await sftp.put(str(tmp_path / "up.txt"), "up.txt")
            # Port forwarding, as IDEs use it: to a server inside the environment.
            await conn.run("nohup python3 -u -m http.server 0 --bind 127.0.0.1 > serve.log 2>&1 &")
            port = await _served_port(conn)
            reader, writer = await conn.open_connection("127.0.0.1", port)
            writer.write(b"GET /up.txt HTTP/1.0\r\n\r\n")
            answer = await reader.read()
            await conn.run("pkill -f 'http.server 0 --bind 127.0.0.1'")
            return result, terminal, answer

    result, terminal, answer = run_async(session())
    gpu, cwd = result.stdout.split()
    assert gpu.startswith("GPU-sim-") and cwd == str(notebook["workdir"])
    assert result.exit_status == 3
    assert terminal.stdout.startswith("/dev/pts/")
    assert (notebook["workdir"] / "up.txt").read_text() == "uploaded over SFTP"
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"uploaded over SFTP")


async def _served_port(conn: Any) -> int:
    for _ in range(50):
        log = (await conn.run("cat serve.log")).stdout
        if "port " in log:
            return int(log.split("port ", 1)[1].split()[0])
        await asyncio.sleep(0.1)
    raise AssertionError("http.server did not start")


def test_ssh_refuses_wrong_keys_and_other_peoples_environments(
    team: Team, notebook: dict, alice_key: asyncssh.SSHKey
) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    bobs = asyncssh.generate_private_key("ssh-ed25519")
    team.bob.request("POST", "me/ssh-keys", json={"public_key": bobs.export_public_key().decode()})

    async def refused(login: str, key: asyncssh.SSHKey) -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            async with _ssh(notebook, login, key):
                pass

    run_async(refused(notebook["name"], stranger))  # a key nobody registered
    run_async(refused(notebook["name"], bobs))  # bob has no environment of that name
    run_async(refused(f"{notebook['name']}.{team.names['alice']}", bobs))  # alice's: not his
    run_async(refused("no-such-env", alice_key))
    # A registered key's owner is told why, in their language; a stranger's key hears nothing.
    assert run_async(_banners(notebook, "no-such-env", alice_key)) == [
        'Suanli: there is no running dev environment "no-such-env" that you may enter '
        "(see `suanli envs list`).\r\n"
    ]
    assert run_async(_banners(notebook, notebook["name"], stranger)) == []


async def _banners(env: dict, login: str, key: asyncssh.SSHKey) -> list[str]:
    heard: list[str] = []

    class Listener(asyncssh.SSHClient):
        def auth_banner_received(self, msg: str, lang: str) -> None:
            heard.append(msg)

    with pytest.raises(asyncssh.PermissionDenied):
        async with asyncssh.connect(
            env["ssh"]["host"],
            env["ssh"]["port"],
            username=login,
            client_keys=[key],
            known_hosts=None,
            agent_path=None,
            config=(),
            client_factory=Listener,
        ):
            pass
    return heard


def test_ssh_keys_bad_input(team: Team, alice_key: asyncssh.SSHKey) -> None:
    cases = {
        "not a key": "error.ssh_key_invalid",
        alice_key.export_private_key().decode(): "error.ssh_key_private",
        asyncssh.generate_private_key("ssh-rsa", key_size=1024)
        .export_public_key()
        .decode(): "error.ssh_key_weak",
    }
    for line, _key in cases.items():
        with pytest.raises(ApiError) as refused:
            team.bob.request("POST", "me/ssh-keys", json={"public_key": line})
        assert refused.value.status == 422
        assert refused.value.problem.errors[0].field == "public_key"
    with pytest.raises(ApiError) as taken:  # alice's key, once more, by bob
        team.bob.request(
            "POST", "me/ssh-keys", json={"public_key": alice_key.export_public_key().decode()}
        )
    assert taken.value.status == 409
    keys = team.alice.request("GET", "me/ssh-keys")
    assert [k["name"] for k in keys] == ["alice@laptop"]
    with pytest.raises(ApiError) as missing:  # bob cannot remove alice's key
        team.bob.request("DELETE", f"me/ssh-keys/{keys[0]['id']}")
    assert missing.value.status == 404


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"resources": {"nodes": 2}}, "resources"),
        ({"tools": ["terminal", "terminal"]}, "tools"),
        ({"tools": []}, "tools"),
        ({"tools": ["emacs"]}, "tools"),
        ({"environment": "nope"}, "environment"),
        ({"tools": ["vscode"]}, "tools"),  # no code-server on this host
        ({"idle_timeout": "400d"}, "idle_timeout"),
        ({"idle_timeout": "2h"}, "idle_timeout"),  # above the server's 1 h
        ({"resources": {"gpus": 64}}, "resources"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(
    team: Team, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiError) as refused:
        create(team.alice, team.project, **spec)
    assert refused.value.status == 422, refused.value
    fields = [error.field for error in refused.value.problem.errors or []]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert "devenv" not in refused.value.problem.detail  # a sentence, not a key


def test_names_are_the_users_own(team: Team) -> None:
    env = create(team.bob, team.project, tools=["terminal"])
    with pytest.raises(ApiError) as taken:
        create(team.bob, team.project, name=env["name"], tools=["terminal"])
    assert taken.value.status == 409 and taken.value.problem.errors[0].field == "name"
    other = create(team.alice, team.project, name=env["name"], tools=["terminal"])  # alice may
    with pytest.raises(ApiError) as hidden:
        show(team.eve, env["id"])
    assert hidden.value.status == 404
    assert env["id"] not in [e["id"] for e in team.eve.request("GET", "devenvs")]
    # The jobs API lists jobs only.
    assert env["id"] not in [j["id"] for j in team.bob.request("GET", "jobs")]
    team.bob.request("POST", f"devenvs/{env['id']}/stop")
    team.alice.request("POST", f"devenvs/{other['id']}/stop")


def test_stop_restart_remove(server: "RunningServer", team: Team) -> None:
    env = create(team.bob, team.project, tools=["terminal"], max_duration="2h")
    wait_for(lambda: show(team.bob, env["id"])["state"] == "running", what="running")
    with pytest.raises(ApiError) as busy:
        team.bob.request("POST", f"devenvs/{env['id']}/restart")
    assert busy.value.status == 409
    team.bob.request("POST", f"devenvs/{env['id']}/stop")
    wait_for(lambda: show(team.bob, env["id"])["state"] == "cancelled", what="stopped")
    team.bob.request("POST", f"devenvs/{env['id']}/restart")
    again = wait_for(
        lambda: (e := show(team.bob, env["id"]))["state"] == "running" and e, what="again"
    )
    assert again["attempts"] == 2
    assert again["max_duration_seconds"] == 7200  # what was chosen, kept
    assert any("Restarted by" in event["detail"] for event in again["history"])
    with pytest.raises(ApiError) as running:
        team.bob.request("DELETE", f"devenvs/{env['id']}")
    assert running.value.status == 409
    team.bob.request("POST", f"devenvs/{env['id']}/stop")
    wait_for(lambda: show(team.bob, env["id"])["state"] == "cancelled", what="stopped again")
    team.bob.request("DELETE", f"devenvs/{env['id']}")
    with pytest.raises(ApiError) as gone:
        show(team.bob, env["id"])
    assert gone.value.status == 404


def test_idle_environment_is_stopped_and_says_why(team: Team) -> None:
    env = create(team.bob, team.project, tools=["terminal"], idle_timeout=2)
    ended = wait_for(
        lambda: (e := show(team.bob, env["id"]))["state"] == "cancelled" and e,
        timeout=40,
        what="the idle environment to be stopped",
    )
    assert ended["exit"]["reason"] == "idle"
    assert [e for e in ended["history"] if "Idle for" in e["detail"]]
    zh = Client(team.server.url, team.bob.token, language="zh-CN")
    assert show(zh, env["id"])["exit"]["message"] == "因无人使用而停止。"


def test_project_lifetime_ends_environments(team: Team) -> None:
    project = unique("short")
    team.admin.projects.create(project, owner=team.names["bob"])
    team.admin.request(
        "PATCH", f"projects/{project}/quota", json={"devenv_max_lifetime_seconds": 3}
    )
    with pytest.raises(ApiError) as longer:
        create(team.bob, project, tools=["terminal"], max_duration=60)
    assert longer.value.problem.errors[0].field == "max_duration"
    env = create(team.bob, project, tools=["terminal"])
    assert env["max_duration_seconds"] == 3
    ended = wait_for(
        lambda: (e := show(team.bob, env["id"]))["state"] in ("failed", "cancelled") and e,
        timeout=40,
        what="the environment to reach its lifetime",
    )
    assert ended["exit"]["reason"] == "timeout"


def test_the_gateway_host_key_lives_in_the_data_directory(
    server: "RunningServer", notebook: dict, alice_key: asyncssh.SSHKey
) -> None:
    """Users' clients remember the server's key: it is the one kept in the data directory
    (created once, mode 600), so a restarted server presents the same."""
    stored = server.data_dir / "ssh" / "host_ed25519_key"
    assert stored.stat().st_mode & 0o777 == 0o600

    async def presented() -> bytes:
        async with _ssh(notebook, notebook["name"], alice_key) as conn:
            return conn.get_server_host_key().public_data

    assert run_async(presented()) == asyncssh.read_private_key(stored).public_data


def test_a_prepared_python_environment(
    server: "RunningServer", team: Team, alice_key: asyncssh.SSHKey
) -> None:
    env = create(team.alice, team.project, tools=["ssh"], environment="plain")
    running = wait_for(
        lambda: (e := show(team.alice, env["id"]))["state"] == "running" and e, what="running"
    )
    prefix = str(server.data_dir.parent / "envs" / "plain")

    async def where() -> list[str]:
        async with _ssh(running, running["name"], alice_key) as conn:
            return (await conn.run("echo $VIRTUAL_ENV; command -v python")).stdout.split()

    up = (OSError, asyncssh.Error)  # refused while its SSH server starts
    assert wait_for(lambda: attempt(lambda: run_async(where()), up), what="ssh") == [
        prefix,
        f"{prefix}/bin/python",
    ]
    team.alice.request("POST", f"devenvs/{env['id']}/stop")


def test_a_tool_still_starting_asks_the_browser_to_look_again(
    server: "RunningServer", team: Team
) -> None:
    env = create(team.alice, team.project, tools=["jupyter"])
    page = httpx.get(f"{server.url}/x/{env['id']}/jupyter/lab", headers=bearer(team.alice))
    assert page.status_code == 503 and page.headers["retry-after"] == "2"
    assert '<meta http-equiv="refresh" content="2">' in page.text
    team.alice.request("POST", f"devenvs/{env['id']}/stop")

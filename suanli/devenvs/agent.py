"""The dev environment agent: `python -m suanli.devenvs.agent`, the command of every dev
environment. It runs inside the environment (its GPUs, limits, working directory and Unix
user, set up by the backend), reads its configuration from `SUANLI_DEVENV_CONFIG`, and:

- starts JupyterLab (the environment's Python) under `/x/<id>/jupyter/`, with the token only
  the server's proxy sends;
- serves the web terminal (a login shell on a pseudo-terminal over a websocket, frames
  `["stdin", text]`, `["resize", rows, cols]` in and `["stdout", text]` out) and `/activity`;
- runs an SSH server that accepts only the SSH gateway's key: shells, commands, SFTP and port
  forwarding, all as the environment's user, inside the environment;
- starts code-server where it is installed and the tools listen on loopback only;
- writes `endpoints.json` (host, ports, the SSH host key) once everything listens.

SIGTERM ends every tool's process group, then the agent.
"""

import asyncio
import codecs
import contextlib
import hmac
import json
import os
import signal
import socket
import sys
import time
import urllib.request
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncssh
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from suanli.devenvs import endpoints, shells
from suanli.devenvs.endpoints import AgentConfig, Endpoints

STOP_GRACE = 5.0
# JupyterLab, started without one import: jsonschema loads rfc3987_syntax when it is there,
# which builds some 35 parsers at import (1.5-3.5 s of JupyterLab's 3-6 s start here; see
# jupyter-server/jupyter_server#1559). Without it jsonschema merely skips checking "iri"
# formats in Jupyter's event schemas. The kernels, the user's own processes, are untouched.
JUPYTERLAB = (
    "import sys; sys.modules['rfc3987_syntax'] = None; "
    "from jupyterlab.labapp import main; sys.exit(main())"
)


def say(text: str) -> None:
    """A line in the environment's log (what its page shows)."""
    print(f"[suanli agent] {text}", flush=True)


def free_port(bind: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((bind, 0))
        return probe.getsockname()[1]


class Activity:
    """When someone last used a terminal or an SSH session, and how many are open now."""

    def __init__(self) -> None:
        self.last = time.time()
        self.open = 0

    def touch(self) -> None:
        self.last = time.time()

    @contextlib.contextmanager
    def session(self) -> Any:
        self.open += 1
        self.touch()
        try:
            yield
        finally:
            self.open -= 1
            self.touch()


class _SshServer(asyncssh.SSHServer):
    """Only the gateway connects, with its key and the login of this environment
    (`gateway_login`): the endpoints file that tells the gateway where to connect is written
    by the environment's own user, who could point it at another user's agent, which takes
    the same gateway key but not this login. Forwarding is the user's, who already proved who
    they are to the gateway."""

    def __init__(self, login: str, gateway_keys: asyncssh.SSHAuthorizedKeys) -> None:
        self.login = login
        self.gateway_keys = gateway_keys

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self.login and self.gateway_keys.validate(key, "", "") is not None

    def connection_requested(self, *_: Any) -> bool:
        return True

    def server_requested(self, *_: Any) -> bool:
        return True


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.folder = Path(config.folder)
        self.activity = Activity()
        self.children: list[asyncio.subprocess.Process] = []
        self.env = self._environment()
        self.ports: dict[str, int] = {}
        self.stopping = asyncio.Event()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(endpoints.CONFIG_VARIABLE, None)
        env["PYTHONPATH"] = endpoints.without_source(env.get("PYTHONPATH", ""))  # the user's own
        if not env["PYTHONPATH"]:
            del env["PYTHONPATH"]
        prefix = self.config.prefix
        if prefix:
            env["PATH"] = f"{prefix}/bin:{env.get('PATH', '/usr/bin:/bin')}"
            key = "CONDA_PREFIX" if (Path(prefix) / "conda-meta").is_dir() else "VIRTUAL_ENV"
            env[key] = prefix
        env.setdefault("TERM", "xterm-256color")
        env["SUANLI_DEVENV"] = str(self.config.env_id)
        return env

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stopping.set)
        tools = self.config.tools
        servers: list[Any] = []
        host_key = ""
        if "jupyter" in tools:  # first: it takes longest to be ready
            await self._start_jupyter()
        web = await serve(
            self._terminal,
            self.config.bind,
            0,
            process_request=self._http,
            ping_interval=30,
            max_size=2**20,
        )
        servers.append(web)
        self.ports["agent"] = web.sockets[0].getsockname()[1]  # /activity, and the terminal
        if "terminal" in tools:
            self.ports["terminal"] = self.ports["agent"]
        if "ssh" in tools:
            key = asyncssh.generate_private_key("ssh-ed25519")
            host_key = key.export_public_key().decode().strip()
            gateway_keys = asyncssh.import_authorized_keys(self.config.gateway_key)
            login = endpoints.gateway_login(self.config.env_id)
            sshd = await asyncssh.create_server(
                lambda: _SshServer(login, gateway_keys),
                self.config.bind,
                0,
                server_host_keys=[key],
                process_factory=self._ssh_session,
                sftp_factory=True,
                allow_scp=True,
                encoding=None,
                keepalive_interval=30,
            )
            servers.append(sshd)
            self.ports["ssh"] = sshd.sockets[0].getsockname()[1]
        if "vscode" in tools:
            await self._start_code_server()
        host = self.config.bind
        if host in ("0.0.0.0", "::"):  # noqa: S104 - a cluster node: the server uses its name
            host = socket.getfqdn()
        where = Endpoints(host=host, ports=self.ports, ssh_host_key=host_key)
        endpoints.write(self.folder, where)
        say(f"ready: {', '.join(f'{t} on port {p}' for t, p in sorted(self.ports.items()))}")
        await self.stopping.wait()
        say("stopping")
        for server in servers:
            server.close()
        await self._stop_children()
        return 0

    # Tools started as processes of their own (their own process groups).
    async def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        say(f"starting {name}")
        child = await asyncio.create_subprocess_exec(
            *argv, cwd=self.config.workdir, env=env, start_new_session=True
        )
        self.children.append(child)

    async def _start_jupyter(self) -> None:
        port = free_port(self.config.bind)
        self.ports["jupyter"] = port
        argv = [
            self.config.python,
            "-c",
            JUPYTERLAB,
            "--no-browser",
            f"--ServerApp.ip={self.config.bind}",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.base_url=/x/{self.config.env_id}/jupyter/",
            f"--ServerApp.root_dir={self.config.workdir}",
            # Only the server's proxy reaches it (with the token): the browser's Origin and
            # Host are the Suanli server's, not this port's.
            "--ServerApp.allow_origin=*",
            "--ServerApp.allow_remote_access=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=",
        ]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        # The token goes in the environment, not on the command line other users can read.
        await self._spawn("JupyterLab", argv, {**self.env, "JUPYTER_TOKEN": self.config.token})

    async def _start_code_server(self) -> None:
        if not self.config.code_server:
            say("VS Code was asked for, but code-server is not installed on this host")
            return
        if self.config.bind not in ("127.0.0.1", "::1"):
            say("VS Code is served only on the server's own host")
            return
        port = free_port(self.config.bind)
        self.ports["vscode"] = port
        # Other accounts on this host reach the port too: code-server asks for its session
        # cookie, which only the server's proxy knows (see endpoints.code_server_secret).
        secret = {"HASHED_PASSWORD": endpoints.code_server_secret(self.config.token)}
        argv = [
            self.config.code_server,
            "--auth",
            "password",
            "--bind-addr",
            f"{self.config.bind}:{port}",
            "--disable-telemetry",
            "--disable-update-check",
            "--disable-workspace-trust",  # the folder is the user's own
            self.config.workdir,
        ]
        await self._spawn("code-server", argv, {**self.env, **secret})

    async def _stop_children(self) -> None:
        for child in self.children:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), max(0.1, deadline - time.monotonic()))
            _signal_group(child, signal.SIGKILL)  # its pty host outlives a plain SIGTERM

    # The HTTP side: /activity, and the terminal's websocket at /ws.
    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"token {self.config.token}".encode()):
            return connection.respond(HTTPStatus.FORBIDDEN, "forbidden\n")
        path = urlsplit(request.path).path
        if path == "/activity":
            body = json.dumps(await self._activity()).encode()
            return Response(200, "OK", Headers([("Content-Type", "application/json")]), body)
        if path == "/ws" and "terminal" in self.config.tools:
            return None
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    async def _activity(self) -> dict[str, Any]:
        """The last use of any tool: terminals and SSH sessions (open ones count as in use
        now), JupyterLab's own last activity, and a kernel still busy computing."""
        last, busy = self.activity.last, self.activity.open > 0
        if "jupyter" in self.ports:
            jupyter_last, kernel_busy = await asyncio.to_thread(self._jupyter_activity)
            last, busy = max(last, jupyter_last), busy or kernel_busy
        return {"last_activity": time.time() if busy else last, "in_use": busy}

    def _jupyter_activity(self) -> tuple[float, bool]:
        base = f"http://127.0.0.1:{self.ports['jupyter']}/x/{self.config.env_id}/jupyter/api"
        if self.config.bind not in ("127.0.0.1", "::1"):
            base = base.replace("127.0.0.1", "localhost")
        try:
            status = _get_json(f"{base}/status", self.config.token)
            kernels = _get_json(f"{base}/kernels", self.config.token)
        except (OSError, ValueError):
            return 0.0, False  # not up yet, or gone: no news
        last = datetime.fromisoformat(status["last_activity"]).timestamp()
        return last, any(kernel.get("execution_state") == "busy" for kernel in kernels)

    async def _terminal(self, websocket: ServerConnection) -> None:
        query = parse_qs(urlsplit(websocket.request.path).query)
        rows, cols = _int(query, "rows", 24), _int(query, "cols", 80)
        child, master = await shells.spawn_on_pty(
            shells.shell_argv(None), self.config.workdir, self.env, rows, cols
        )
        pty = shells.Pty(master)

        async def to_browser() -> None:
            decoder = _decoder()
            while data := await pty.read():
                self.activity.touch()
                await websocket.send(json.dumps(["stdout", decoder.decode(data)]))
            await websocket.close()

        with self.activity.session():
            sender = asyncio.create_task(to_browser())
            try:
                async for message in websocket:
                    self.activity.touch()
                    frame = json.loads(message)
                    if frame[0] == "stdin":
                        pty.write(str(frame[1]).encode())
                    elif frame[0] == "resize":
                        pty.resize(int(frame[1]), int(frame[2]))
            except (ValueError, IndexError, TypeError):
                await websocket.close(1003, "frames are JSON arrays")
            finally:
                sender.cancel()
                shells.hang_up(child)
                pty.close()

    # The SSH side: each session a shell or a command, as the environment's user.
    async def _ssh_session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        with self.activity.session():
            try:
                code = await self._ssh_run(process)
            except (OSError, asyncssh.Error) as error:
                process.stderr.write(f"suanli: {error}\n".encode())
                code = 255
        process.exit(code)

    async def _ssh_run(self, process: asyncssh.SSHServerProcess[bytes]) -> int:
        argv = shells.shell_argv(process.command)
        env = dict(self.env)
        if process.term_type:
            env["TERM"] = process.term_type
            cols, rows, *_ = process.term_size
            child, master = await shells.spawn_on_pty(
                argv, self.config.workdir, env, rows or 24, cols or 80
            )
            pty = shells.Pty(master)
            outputs = [asyncio.create_task(self._pty_out(pty, process))]
            inputs = asyncio.create_task(self._pty_in(process, pty))
        else:
            child = await shells.spawn_on_pipes(argv, self.config.workdir, env)
            assert child.stdin and child.stdout and child.stderr  # noqa: S101 - PIPE asked for
            outputs = [
                asyncio.create_task(self._pipe_out(child.stdout, process.stdout)),
                asyncio.create_task(self._pipe_out(child.stderr, process.stderr)),
            ]
            inputs = asyncio.create_task(self._pipe_in(process, child.stdin))
            pty = None
        try:
            code = await child.wait()
            # What the command wrote last; a background process keeping the output open
            # does not hold the session.
            await asyncio.wait(outputs, timeout=1.0)
        finally:
            for task in (*outputs, inputs):
                task.cancel()
            shells.hang_up(child)
            if pty is not None:
                pty.close()
        return code

    async def _pty_out(self, pty: shells.Pty, process: asyncssh.SSHServerProcess[bytes]) -> None:
        while data := await pty.read():
            self.activity.touch()
            process.stdout.write(data)
            await process.stdout.drain()

    async def _pty_in(self, process: asyncssh.SSHServerProcess[bytes], pty: shells.Pty) -> None:
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as change:
                pty.resize(change.height, change.width)
                continue
            if not data:
                return
            self.activity.touch()
            pty.write(data)

    async def _pipe_out(self, source: asyncio.StreamReader, target: Any) -> None:
        while data := await source.read(65536):
            self.activity.touch()
            target.write(data)
            await target.drain()

    async def _pipe_in(
        self, process: asyncssh.SSHServerProcess[bytes], target: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await process.stdin.read(65536):
                self.activity.touch()
                target.write(data)
                await target.drain()
            target.close()


def _signal_group(child: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def _get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - our own URL
        return json.loads(response.read())


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return int(query[name][0])
    except (KeyError, ValueError, IndexError):
        return default


def _decoder() -> Any:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def main() -> int:
    text = os.environ.get(endpoints.CONFIG_VARIABLE)
    if not text:
        print(f"{endpoints.CONFIG_VARIABLE} is not set: the server starts me", file=sys.stderr)
        return 2
    config = AgentConfig.loads(text)
    os.environ.pop(endpoints.CONFIG_VARIABLE, None)
    os.chdir(config.workdir)  # where SFTP and relative paths begin
    return asyncio.run(Agent(config).run())


if __name__ == "__main__":
    sys.exit(main())

"""Real servers on loopback for the import tests: http (with Range, redirects, dropped
connections and git's smart http), FTP (pyftpdlib), SFTP (asyncssh), git (git daemon) and S3
(moto). Each is a context manager that serves a folder and stops when the block ends."""

import asyncio
import base64
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncssh
import boto3
from moto.server import ThreadedMotoServer
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

USER = "alice"
PASSWORD = "open-sesame"
# Commits in the test repositories never read the account's git configuration.
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write `files` ({relative path: content}) under `root`; `root`."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """{relative path: content} of every file under `root`."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- http -------------------------------------------------------------------------------------


@dataclass
class HttpServer:
    """A folder served over http. The test changes the fields to make it misbehave."""

    root: Path
    port: int = 0
    ranges: bool = True  # honour Range requests (206); else always the whole file (200)
    length: bool = True  # send Content-Length; else the body ends when the connection closes
    redirects: dict[str, str] = field(default_factory=dict)  # path: Location (302)
    drop_after: int | None = None  # body bytes sent before the connection breaks...
    drops: int = 0  # ...for this many responses
    delay: float = 0.0  # seconds between two 64 KiB pieces of a body
    auth: tuple[str, str] | None = None
    git_root: Path | None = None  # paths under /git/ are git's smart http (git http-backend)
    served: int = 0  # body bytes sent, all requests together
    requests: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path.lstrip('/')}"


class _HttpHandler(BaseHTTPRequestHandler):
    state: HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `state.requests` instead."""

    def do_GET(self) -> None:
        state = self.state
        state.requests.append({"path": self.path, **dict(self.headers.items())})
        if state.auth and self.headers.get("Authorization") != basic(*state.auth):
            self._answer(401, b"", {"WWW-Authenticate": 'Basic realm="test"'})
        elif self.path in state.redirects:
            self._answer(302, b"", {"Location": state.redirects[self.path]})
        elif state.git_root and self.path.startswith("/git/"):
            self._git()
        else:
            self._file()

    do_POST = do_GET  # git's smart http posts its wants

    def _file(self) -> None:
        path = self.state.root / self.path.split("?", 1)[0].lstrip("/")
        if not path.is_file():
            self._answer(404, b"not found", {})
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range", "")
        if self.state.ranges and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[6:-1])
            if start >= len(data):
                self._answer(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            self._answer(206, data[start:], headers)
        else:
            self._answer(200, data, {})

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        state = self.state
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if state.length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.drops and state.drop_after is not None and status in (200, 206):
            state.drops -= 1
            body = body[: state.drop_after]
            self.close_connection = True
        for start in range(0, len(body), 65536):
            piece = body[start : start + 65536]
            self.wfile.write(piece)
            self.wfile.flush()
            state.served += len(piece)
            time.sleep(state.delay)

    def _git(self) -> None:
        """Git's smart http through `git http-backend`, as a web server runs it (CGI)."""
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        environment = {
            **GIT_ENV,
            "GIT_PROJECT_ROOT": str(self.state.git_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path.removeprefix("/git"),
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": "127.0.0.1",
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=environment, check=True
        )
        head, _, content = done.stdout.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if line)
        status = int(headers.pop("Status", "200").split()[0])
        self._answer(status, content, headers)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class _Threading(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-body (a cancelled or cut download, on purpose) is no
        error worth a traceback in the test's output; anything else is."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def http_server(root: Path, **settings: Any) -> Iterator[HttpServer]:
    state = HttpServer(root, **settings)
    handler = type("Handler", (_HttpHandler,), {"state": state})
    server = _Threading(("127.0.0.1", 0), handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- ftp --------------------------------------------------------------------------------------


@contextlib.contextmanager
def ftp_server(root: Path) -> Iterator[str]:
    """FTP serving `root` to USER with PASSWORD (read only); its URL ftp://127.0.0.1:port."""
    logger = logging.getLogger("pyftpdlib")
    logger.setLevel(logging.WARNING)
    if not logger.handlers:  # else pyftpdlib sets up its own logging, at level INFO
        logger.addHandler(logging.NullHandler())
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, str(root), perm="elr")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "auth_failed_timeout": 0})
    server = FTPServer(("127.0.0.1", 0), handler)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.ioloop.loop(timeout=0.05, blocking=False)
        server.close_all()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield f"ftp://127.0.0.1:{server.address[1]}"
    finally:
        stop.set()
        thread.join()


# -- sftp -------------------------------------------------------------------------------------


class _SshServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USER and password == PASSWORD


@contextlib.contextmanager
def sftp_server(root: Path) -> Iterator[str]:
    """SFTP (only) for USER with PASSWORD, rooted in `root`; its URL sftp://127.0.0.1:port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()

    def sftp(channel: Any) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(channel, chroot=str(root).encode())

    async def start() -> Any:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            server_factory=_SshServer,
            sftp_factory=sftp,
        )

    async def stop(acceptor: Any) -> None:
        acceptor.close()
        await acceptor.wait_closed()

    acceptor = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=20)
    try:
        yield f"sftp://127.0.0.1:{acceptor.get_port()}"
    finally:
        asyncio.run_coroutine_threadsafe(stop(acceptor), loop).result(timeout=20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


# -- git --------------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout


def make_repository(
    path: Path, files: dict[str, bytes], links: dict[str, str] | None = None
) -> Path:
    """A repository at `path` whose branch main has one commit of `files` and of symbolic
    `links` ({name: target})."""
    path.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=path)
    write_tree(path, files)
    for name, target in (links or {}).items():
        os.symlink(target, path / name)
    commit(path, "first")
    return path


def commit(path: Path, message: str) -> None:
    git("add", "--all", cwd=path)
    git("commit", "--quiet", "--allow-empty", "-m", message, cwd=path)


def publish(repository: Path, base: Path) -> Path:
    """A bare copy of `repository` as `base/<name>.git`, as servers hold them."""
    bare = base / f"{repository.name}.git"
    git("clone", "--quiet", "--bare", str(repository), str(bare), cwd=base)
    return bare


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """`git daemon` serving the repositories under `base`; its URL git://127.0.0.1:port."""
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--informative-errors",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        env=GIT_ENV,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


# -- s3 ---------------------------------------------------------------------------------------

S3_KEYS = {"access_key": "AKIATESTTESTTEST", "secret_key": "test-secret"}


@contextlib.contextmanager
def s3_server(bucket: str, objects: dict[str, bytes]) -> Iterator[str]:
    """An S3 endpoint (moto) with `bucket` holding `objects` ({key: content}); its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEYS["access_key"],
            aws_secret_access_key=S3_KEYS["secret_key"],
        )
        client.create_bucket(Bucket=bucket)
        for key, content in objects.items():
            client.put_object(Bucket=bucket, Key=key, Body=content)
        yield endpoint
    finally:
        server.stop()

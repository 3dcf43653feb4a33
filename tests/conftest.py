"""Shared fixtures: a real server on loopback over a fresh database, and clients for it.

The suite runs on SQLite by default. With SUANLI_TEST_POSTGRES_URL set (an admin URL of a
PostgreSQL server, e.g. from `scripts/postgres start`), every database a test asks for is a
fresh PostgreSQL database on that server instead.
"""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import psycopg
import pytest
from sqlalchemy.engine import make_url

from suanli.client import Client
from suanli.db import migrate
from suanli.db.engine import Database

ADMIN_PASSWORD = "admin-test-password"
POSTGRES_URL = os.environ.get("SUANLI_TEST_POSTGRES_URL", "")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _create_postgres_database() -> str:
    admin = make_url(POSTGRES_URL)
    name = unique("suanli-test").replace("-", "_")
    with psycopg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        dbname=admin.database or "postgres",
        autocommit=True,
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh, empty database: SQLite in the test's directory, or PostgreSQL (see above)."""
    if POSTGRES_URL:
        return _create_postgres_database()
    return f"sqlite:///{tmp_path / 'suanli.db'}"


@dataclass
class RunningServer:
    url: str
    data_dir: Path
    database_url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def client(self, token: str | None = None, language: str | None = None) -> Client:
        return Client(self.url, token, language=language)

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> Client:
        client = self.client()
        client.login(username, password)
        return client

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=20)
        if sig == signal.SIGTERM:  # the end; a SIGKILL plays a crash, to be restarted from
            end_workloads(self.data_dir)
        return code


def end_workloads(data_dir: Path) -> None:
    """Workloads outlive their server by design (a restarted server adopts them): a test's
    server that is gone for good takes its still-running ones along, by SIGTERM to their
    wrappers (which end them as a cancel does: dev environments' tools included)."""
    prefix = str(data_dir.resolve()) + "/"
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "suanli.backends.local.wrapper" in command and any(
            arg.startswith(prefix) for arg in command
        ):
            with contextlib.suppress(psutil.Error):
                process.terminate()


def start_server(
    data_dir: Path, database_url: str, env: dict[str, str] | None = None, *, port: int = 0
) -> RunningServer:
    """Start `suanli server` as a real process and wait until it listens.

    Its workloads run as the test's own user (root in CI), so that they can write into the
    test's private folders, unless `env` says otherwise: the default install, where each
    user's work runs as their own account, is tested in tests/test_isolation.py."""
    environment = {
        **os.environ,
        "SUANLI_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SUANLI_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        "SUANLI_SSH_PORT": "0",  # every test server's SSH gateway on a free port of its own
        "SUANLI_WORKLOAD_IDENTITY": "server",
        "SUANLI_WORK_DIR": str(data_dir.parent / "work"),  # each test server its own
        **(env or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "suanli",
            "server",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--database-url",
            database_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    server = RunningServer("", data_dir, database_url, process)
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        server.output.append(line)
        if "http://" in line and not server.url:
            server.url = line.split("http://", 1)[1].split()[0].rstrip("/")
            server.url = "http://" + server.url
            return server
    process.kill()
    raise RuntimeError("server did not start:\n" + "".join(server.output))


@pytest.fixture
def server_factory(tmp_path: Path, database_url: str) -> Iterator[Callable[..., RunningServer]]:
    """Start servers on the test's own database; all are stopped at the end."""
    started: list[RunningServer] = []

    def factory(env: dict[str, str] | None = None, *, port: int = 0) -> RunningServer:
        server = start_server(tmp_path / "data", database_url, env, port=port)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server shared by the tests that only need one (they use unique names)."""
    base = tmp_path_factory.mktemp("shared")
    url = _create_postgres_database() if POSTGRES_URL else f"sqlite:///{base / 'suanli.db'}"
    # Every test client comes from 127.0.0.1: the tests of failed logins must not lock the
    # address for the others. Throttling itself is tested on servers of its own.
    running = start_server(base / "data", url, {"SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000"})
    yield running
    running.stop()


@pytest.fixture(scope="session")
def admin(server: RunningServer) -> Iterator[Client]:
    client = server.login()
    yield client
    client.close()


@dataclass
class Person:
    name: str
    password: str
    client: Client


@pytest.fixture
def make_user(server: RunningServer, admin: Client) -> Iterator[Callable[..., Person]]:
    """Create a user with a unique name and return them signed in."""
    clients: list[Client] = []

    def make(prefix: str = "user", *, is_admin: bool = False) -> Person:
        name, password = unique(prefix), "password-" + secrets.token_hex(4)
        admin.users.create(name, password, is_admin=is_admin)
        client = server.login(name, password)
        clients.append(client)
        return Person(name, password, client)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def app_and_database(tmp_path: Path, database_url: str):
    """The application in-process over a prepared database, for tests that walk its routes."""
    from suanli.app import create_app, prepare
    from suanli.config import Settings

    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, admin_password=ADMIN_PASSWORD
    )
    database = Database(database_url)
    prepare(settings, database)
    yield create_app(settings, database), database
    database.dispose()


SIMULATED_A100S = json.dumps([{"count": 4, "model": "A100-SXM4-80GB", "memory_bytes": 80 * 2**30}])


@pytest.fixture(scope="session")
def launch_server() -> Callable[[Path, dict[str, str]], RunningServer]:
    """Start a server of one's own under `base` on a fresh database (for module-scoped
    fixtures); the caller stops it."""

    def launch(base: Path, env: dict[str, str], database_url: str = "") -> RunningServer:
        url = _create_postgres_database() if POSTGRES_URL else f"sqlite:///{base / 'suanli.db'}"
        return start_server(base / "data", database_url or url, env)

    return launch


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[RunningServer]:
    """A server of the module's own, with four simulated A100s (the console tests)."""
    env = {
        "SUANLI_SIMULATED_GPUS": SIMULATED_A100S,
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
    }
    running = launch_server(tmp_path_factory.mktemp("console"), env)
    yield running
    running.stop()


@pytest.fixture
def migrated_database(database_url: str) -> Iterator[Database]:
    """The test's own database, migrated to head, in-process (no server)."""
    database = Database(database_url)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


class WebhookReceiver:
    """An HTTP endpoint on loopback that keeps the JSON it is posted; it answers the first
    `failures` posts with `status`, then 200."""

    def __init__(self, failures: int = 0, status: int = 503) -> None:
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(json.loads(body))
                failing = len(receiver.received) <= failures
                self.send_response(status if failing else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, test: Callable[[dict], bool], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.received):
                if test(message):
                    return message
            time.sleep(0.2)
        raise AssertionError(f"no matching webhook in {timeout} s: {self.received}")


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., WebhookReceiver]]:
    """Start webhook receivers (`webhook_receiver(failures=2)`); all stop at the end."""
    started: list[WebhookReceiver] = []

    def start(failures: int = 0, status: int = 503) -> WebhookReceiver:
        receiver = WebhookReceiver(failures, status)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.server.shutdown()

"""What an outsider or a signed-in user sends cannot freeze or fill the server (or the CLI):
YAML alias bombs are refused before they expand, request bodies are capped, and a body
without credentials is refused before it is read."""

import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.conftest import Person, RunningServer

LIMIT = 2**20  # the default max_request_body_bytes
PROBLEM_JSON = "application/problem+json"


def alias_bomb() -> str:
    """561 bytes of nested aliased mappings: 9^6 leaves once expanded."""
    lines = ["l0: &l0 {" + ", ".join(f"k{i}: x" for i in range(9)) + "}"]
    for level in range(1, 6):
        inner = ", ".join(f"k{i}: *l{level - 1}" for i in range(9))
        lines.append(f"l{level}: &l{level} {{{inner}}}")
    lines.append("bomb: *l5")
    return "\n".join(lines) + "\n"


def list_bomb() -> str:
    """A job spec whose command expands to 9^9 arguments."""
    lines = ["project: p", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append("command: *a8")
    return "\n".join(lines) + "\n"


def console_session(server: RunningServer, person: Person, language: str) -> httpx.Client:
    """A browser's session: signed in through the console's form; `csrf` header set for
    the forms that follow."""
    http = httpx.Client(base_url=server.url, headers={"Accept-Language": language}, timeout=60)
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
    signed_in = http.post(
        "/login", data={"csrf_token": token, "username": person.name, "password": person.password}
    )
    assert signed_in.status_code == 303, signed_in.text[:500]
    page = http.get("/jobs/new").text
    http.headers["X-CSRF-Token"] = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return http


@pytest.mark.parametrize(
    ("language", "reason"),
    [("en", "Line 1: YAML anchors and aliases"), ("zh-CN", "第 1 行：不接受 YAML 锚点和别名")],
)
def test_an_alias_bomb_in_the_console_check_is_refused_at_once(
    server: RunningServer, make_user, language: str, reason: str
) -> None:
    http = console_session(server, make_user("bomber"), language)
    answer: dict[str, httpx.Response | float] = {}

    def check() -> None:
        started = time.monotonic()
        answer["response"] = http.post("/jobs/check", data={"mode": "yaml", "yaml": alias_bomb()})
        answer["seconds"] = time.monotonic() - started

    checking = threading.Thread(target=check)
    checking.start()
    health = []
    while checking.is_alive() or len(health) < 5:
        started = time.monotonic()
        assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
        health.append(time.monotonic() - started)
    checking.join()
    http.close()
    response = answer["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 422
    assert answer["seconds"] < 5
    assert len(response.content) < 100_000  # not the 22 MB of an expanded preview
    assert re.search(rf"<code>yaml</code>: [^<]*{reason}", response.text), response.text[:2000]
    assert max(health) < 1, health


def test_submit_of_a_bomb_file_fails_at_once_in_one_line(
    server: RunningServer, make_user, tmp_path: Path
) -> None:
    token = make_user("cli-bomber").client.token
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(list_bomb(), encoding="utf-8")

    def at_most_a_gibibyte() -> None:  # were it expanded, it would fail here, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "suanli", "submit", str(bomb)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=at_most_a_gibibyte,
        env={"SUANLI_URL": server.url, "SUANLI_TOKEN": token, "SUANLI_LANG": "en", "HOME": "/"},
    )
    assert time.monotonic() - started < 20
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "Line 2: YAML anchors and aliases" in lines[0]


@pytest.fixture
def token(make_user) -> str:
    return make_user("sender").client.token


def test_a_json_body_over_the_limit_is_413_but_the_proxy_is_not_capped(
    server: RunningServer, token: str
) -> None:
    body = b'{"project": "p", "command": ["' + b"a" * (2 * LIMIT) + b'"]}'
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept-Language": "zh-CN",
    }
    refused = httpx.post(f"{server.url}/api/v1/jobs", content=body, headers=headers, timeout=30)
    assert refused.status_code == 413
    assert refused.headers["content-type"] == PROBLEM_JSON
    problem = refused.json()
    assert problem["type"] == "urn:suanli:problem:payload-too-large"
    assert problem["title"] == "请求体过大" and str(LIMIT) in problem["detail"]
    # The dev environments' proxy streams uploads on to JupyterLab: not held to the limit
    # (this environment does not exist, and that is all it says).
    proxied = httpx.post(
        f"{server.url}/x/999999/jupyter/api/contents/upload.bin",
        content=body,
        headers=headers,
        timeout=30,
    )
    assert proxied.status_code == 404


def test_a_chunked_body_is_stopped_at_the_limit(server: RunningServer, token: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"project": "p", "command": ["'
        for _ in range(2 * LIMIT // 65536):
            yield b"a" * 65536
        yield b'"]}'

    refused = httpx.post(
        f"{server.url}/api/v1/jobs",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert refused.status_code == 413
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.json()["type"] == "urn:suanli:problem:payload-too-large"
    assert str(LIMIT) in refused.json()["detail"]


@pytest.mark.parametrize("authorization", ["", "Authorization: Bearer sl_not-a-token\r\n"])
def test_a_body_without_credentials_is_refused_before_it_is_read(
    server: RunningServer, authorization: str
) -> None:
    """300 MB announced, 64 KiB sent: the 401 comes without waiting for the rest."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as connection:
        connection.sendall(
            (
                "POST /api/v1/jobs HTTP/1.1\r\n"
                f"Host: {address.netloc}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {300 * 2**20}\r\n"
                f"{authorization}\r\n"
            ).encode()
            + b"[" * 65536
        )
        answer = ""
        while "urn:suanli:problem" not in answer:  # times out if the server waits for more
            received = connection.recv(65536).decode("latin-1")
            if not received:
                break
            answer += received
    assert answer.startswith("HTTP/1.1 401"), answer[:500]
    assert PROBLEM_JSON in answer and "urn:suanli:problem:unauthenticated" in answer


def test_a_big_unauthenticated_stream_costs_the_server_no_memory(server: RunningServer) -> None:
    process = psutil.Process(server.process.pid)
    url = f"{server.url}/api/v1/jobs"
    assert httpx.post(url, content=b"{}").status_code == 401  # anything lazy is loaded now
    baseline, peak, sending = process.memory_info().rss, [0], True

    def watch() -> None:
        while sending:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    def body() -> Iterator[bytes]:
        chunk = b"[" * 2**20
        for _ in range(64):
            yield chunk

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        response = httpx.post(url, content=body(), timeout=60)
    finally:
        sending = False
        watcher.join()
    assert response.status_code == 401
    assert time.monotonic() - started < 10
    assert peak[0] - baseline < 50 * 2**20, (baseline, peak[0])


def test_a_console_form_over_the_limit_is_413(server: RunningServer, make_user) -> None:
    http = console_session(server, make_user("typist"), "en")
    script = "echo " + "a" * (2 * LIMIT)
    declared = http.post("/jobs/check", data={"mode": "script", "script": script})

    def chunks() -> Iterator[bytes]:
        yield b"mode=script&script="
        for _ in range(2 * LIMIT // 65536):
            yield b"a" * 65536

    streamed = http.post(
        "/jobs/check",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    http.close()
    for response in (declared, streamed):
        assert response.status_code == 413
        assert "text/html" in response.headers["content-type"]  # the console's error page
        assert f"larger than the {LIMIT} bytes" in response.text

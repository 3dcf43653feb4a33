"""The OpenAI-shaped test upstream (tests/serving/upstream.py), run as the subprocess the other
tests and the benchmarks run, and spoken to by the openai client where it is installed."""

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import openai
import pytest

from tests.waiting import attempt, wait_for

UPSTREAM = Path(__file__).with_name("upstream.py")
TOKEN_ENV = "SUANLI_TEST_UPSTREAM_KEY"
SECRET = "s3cret-key"

Start = Callable[..., str]


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def start() -> Iterator[Start]:
    """Starts upstreams with the given flags; each answers /health before the test goes on, and
    all are ended with the module."""
    processes: list[subprocess.Popen[bytes]] = []

    def launch(*flags: str) -> str:
        port = free_port()
        env = {**os.environ, TOKEN_ENV: SECRET}
        command = [sys.executable, str(UPSTREAM), "--port", str(port), *flags]
        processes.append(subprocess.Popen(command, env=env))
        base = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: attempt(
                lambda: httpx.get(f"{base}/health").status_code == 200, (httpx.HTTPError,)
            ),
            timeout=10,
            what="the upstream to answer /health",
        )
        return base

    yield launch
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def base(start: Start) -> str:
    return start()


@pytest.fixture
def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


def test_chat_completion_has_text_and_usage(client) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "one two three"}], max_tokens=4
    )
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3"
    assert reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 4)
    assert reply.usage.total_tokens == 7


def test_stream_with_include_usage_ends_with_usage(client) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (1, 5)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage(client) -> None:
    chunks = list(client.completions.create(model="tiny", prompt="a b", max_tokens=3, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "tok0 tok1 tok2"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_embeddings_are_deterministic(client) -> None:
    first = client.embeddings.create(model="tiny", input=["alpha beta", "gamma"])
    again = client.embeddings.create(model="tiny", input="gamma", encoding_format="base64")
    assert [len(d.embedding) for d in first.data] == [8, 8]
    assert first.usage.prompt_tokens == 3
    packed = base64.b64decode(again.data[0].embedding)
    assert struct.unpack("<8f", packed) == pytest.approx(first.data[1].embedding, abs=1e-5)


def test_bad_requests_get_openai_errors(base: str) -> None:
    bad_json = httpx.post(f"{base}/v1/chat/completions", content=b"{nope")
    no_prompt = httpx.post(f"{base}/v1/completions", json={"model": "tiny"})
    assert (bad_json.status_code, no_prompt.status_code) == (400, 400)
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    assert no_prompt.json()["error"]["param"] == "prompt"


def test_token_guards_v1_but_not_health(start: Start) -> None:
    base = start("--token-env", TOKEN_ENV)
    body = {"model": "tiny", "prompt": "x", "max_tokens": 1}
    wrong = httpx.post(f"{base}/v1/completions", json=body, headers={"Authorization": "Bearer no"})
    missing = httpx.get(f"{base}/v1/models")
    right = httpx.post(
        f"{base}/v1/completions", json=body, headers={"Authorization": f"Bearer {SECRET}"}
    )
    assert (wrong.status_code, missing.status_code, right.status_code) == (401, 401, 200)
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/metrics").status_code == 200


def test_client_leaving_a_stream_is_logged_as_cancelled(start: Start, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    base = start("--delay-ms", "20", "--log", str(log))
    body = {"model": "tiny", "prompt": "x", "max_tokens": 500, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body) as response:
        next(response.iter_lines())
    lines = wait_for(lambda: log.exists() and log.read_text().splitlines()[1:], timeout=5)
    assert json.loads(lines[-1]) == {
        "path": "/v1/completions",
        "stream": True,
        "cancelled": True,
        "status": 200,
    }
    assert "upstream_requests_cancelled_total 1" in httpx.get(f"{base}/metrics").text


def test_die_after_chunks_cuts_the_stream(start: Start) -> None:
    base = start("--die-after-chunks", "3")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}
    events: list[dict] = []
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    assert len(events) == 3
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


def test_fail_start_exits_3_at_once() -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(UPSTREAM), "--port", "1", "--model", "m7", "--fail-start"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 3
    assert "fatal: cannot load model m7" in done.stderr
    assert time.monotonic() - began < 5

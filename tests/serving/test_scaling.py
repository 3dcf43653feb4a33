"""Replicas and scaling of model services, end to end on a real server with the fake engine
(tests/serving/upstream.py): autoscaling on requests in flight, scale to zero and the cold
start that wakes a service, a rolling update that drops no request, a replica that dies and
is replaced, an engine that cannot start, and the deploy rules that refuse a service before
anything runs."""

import contextlib
import functools
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import RunningServer, unique
from tests.serving.helpers import (
    FAKE_ENGINE,
    UPSTREAM,
    api,
    deploy,
    make_key,
    make_project,
    serving_server,
    wait_ready,
)

# One simulated GPU of 80 GiB: enough to ask for a fraction of it (the model-size rule).
GPUS = json.dumps([{"count": 1, "model": "A100-SXM4-80GB", "memory_bytes": 80 * 2**30}])
# An engine whose command names the model folder: it cannot be deployed without a model.
NEEDS_MODEL = {**FAKE_ENGINE, "command": [*FAKE_ENGINE["command"], "--log", "{model}/log"]}
LIVE = ("pending", "admitted", "starting", "running")
# Each replica asks for little: many fit on a test host of two cores.
SMALL = {"cpus": 0.1, "memory": "128Mi"}


@dataclass
class Served:
    server: RunningServer
    http: httpx.Client
    project: str
    key: str

    def gateway(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url + "/v1/",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
        )


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[Served]:
    """A server of the module's own: the fake engine, probes every 0.2 s, a simulated GPU;
    a project and a key of it."""
    base = tmp_path_factory.mktemp("scaling")
    server = serving_server(
        functools.partial(launch_server, base),
        SUANLI_ENGINES=json.dumps({"needs-model": NEEDS_MODEL}),
        SUANLI_SIMULATED_GPUS=GPUS,
        SUANLI_GATEWAY_COLD_START_SECONDS="60",
    )
    http = api(server)
    project = make_project(http)
    try:
        yield Served(server, http, project, make_key(http, project))
    finally:
        http.close()
        server.stop()


# --- what the tests share -----------------------------------------------------------------


def detail(http: httpx.Client, service_id: int) -> dict[str, Any]:
    answer = http.get(f"services/{service_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def services(served: Served) -> Iterator[Callable[..., dict[str, Any]]]:
    """Deploy services of small replicas (many fit on a test host of two cores) in the
    module's project; they are stopped when the test ends, freeing the host for the next."""
    made: list[int] = []

    def make(name: str, **fields: Any) -> dict[str, Any]:
        service = deploy(served.http, served.project, name, resources=SMALL, **fields)
        made.append(service["id"])
        return service

    yield make
    for service_id in made:
        served.http.post(f"services/{service_id}/stop")


def wait_for(
    http: httpx.Client,
    service_id: int,
    condition: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
) -> dict[str, Any]:
    """The service's detail once `condition` holds; fails saying `what` was awaited."""
    deadline = time.monotonic() + timeout
    shown: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shown = detail(http, service_id)
        if condition(shown):
            return shown
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s: {shown}")


def live_replicas(shown: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in shown["replicas_list"] if r["state"] in LIVE]


def engines_of(name: str) -> list[psutil.Process]:
    """The fake engine's processes serving the service `name` (its --model)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if str(UPSTREAM) in command and name in command and "--model" in command:
            found.append(process)
    return found


def chat(gateway: httpx.Client, model: str, *, stream: bool, max_tokens: int | None = 3) -> str:
    """One chat completion through the gateway; its text (fails on any error)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if not stream:
        answer = gateway.post("chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["choices"][0]["message"]["content"])
    words, done = [], False
    with gateway.stream("POST", "chat/completions", json=body) as answer:
        assert answer.status_code == 200, answer.read().decode()
        for line in answer.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                for choice in json.loads(line[6:]).get("choices", []):
                    words.append(choice.get("delta", {}).get("content") or "")
    assert done, "the stream ended without [DONE]"
    return "".join(words)


@dataclass
class Caller:
    """A client thread that sends requests through the gateway until stopped, and keeps
    what each answered."""

    gateway: httpx.Client
    model: str
    streams: tuple[bool, ...] = (False, True)
    max_tokens: int | None = 3
    answers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> "Caller":
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=60)
        self.gateway.close()

    def _run(self) -> None:
        turn = 0
        while not self.stop.is_set():
            stream = self.streams[turn % len(self.streams)]
            turn += 1
            try:
                self.answers.append(
                    chat(self.gateway, self.model, stream=stream, max_tokens=self.max_tokens)
                )
            except (AssertionError, httpx.HTTPError) as error:
                self.errors.append(f"{'stream' if stream else 'plain'}: {error}")


def events_of(server: RunningServer, service_id: int) -> list[tuple[int, str, Any]]:
    """(replica id, event key, when) of every replica of the service, from the server's
    database: the replicas' history, which the API shows for jobs only."""
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT e.job_id, e.detail, e.at FROM job_events e"
                    " JOIN jobs j ON j.id = e.job_id WHERE j.deployment_id = :d ORDER BY e.id"
                ),
                {"d": service_id},
            ).all()
    finally:
        engine.dispose()
    return [(row[0], row[1], row[2]) for row in rows]


def error_fields(answer: httpx.Response) -> set[str]:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    return {str(error.get("field")) for error in answer.json().get("errors", [])}


# --- autoscaling ------------------------------------------------------------------------------


def test_replicas_follow_requests_in_flight_up_and_back_down(
    served: Served, services: Callable[..., dict[str, Any]]
) -> None:
    name = unique("auto")
    service = services(
        name,
        args=["--delay-ms", "100"],
        replicas="1..3",
        scaling={"metric": "inflight", "target": 1, "up_delay": 0, "down_delay": 2},
    )
    wait_ready(served.http, service["id"])
    callers = [
        Caller(served.gateway(), name, streams=(True,), max_tokens=20) for _ in range(4)
    ]  # four slow streams (2 s each) in flight all the time
    with contextlib.ExitStack() as stack:
        for caller in callers:
            stack.enter_context(caller)
        began = time.monotonic()
        up = wait_for(
            served.http,
            service["id"],
            lambda s: s["replicas"] == 3 and s["ready"] == 3,
            40,
            "three ready replicas under four requests in flight",
        )
        print(f"scaled up to 3 ready replicas in {time.monotonic() - began:.1f} s")
        assert up["max_replicas"] == 3
    quiet = time.monotonic()
    assert not [e for c in callers for e in c.errors], [c.errors for c in callers]
    assert all(c.answers for c in callers)
    down = wait_for(
        served.http,
        service["id"],
        lambda s: s["replicas"] == 1 and len(live_replicas(s)) == 1,
        45,
        "back to one replica once the traffic stopped",
    )
    print(f"scaled back down to 1 replica {time.monotonic() - quiet:.1f} s after the traffic")
    assert down["ready"] == 1
    assert len(engines_of(name)) == 1


# --- scale to zero --------------------------------------------------------------------------


def test_an_idle_service_goes_to_zero_and_the_next_request_wakes_it(
    served: Served, services: Callable[..., dict[str, Any]]
) -> None:
    name = unique("zero")
    service = services(
        name,
        replicas="0..1",
        scaling={"idle_after": 1},
    )
    wait_for(
        served.http,
        service["id"],
        lambda s: s["replicas"] == 0 and not live_replicas(s),
        30,
        "no replica after being idle",
    )
    deadline = time.monotonic() + 10
    while engines_of(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not engines_of(name), "a replica's engine still runs after the scale to zero"

    with served.gateway() as gateway:
        began = time.monotonic()
        assert chat(gateway, name, stream=False, max_tokens=4) == "tok0 tok1 tok2 tok3"
        cold = time.monotonic() - began
    print(f"cold start through the gateway: {cold:.2f} s")
    woken = detail(served.http, service["id"])
    assert woken["replicas"] == 1
    assert woken["ready"] == 1
    assert len(engines_of(name)) == 1


def test_a_cold_start_that_never_ends_is_a_bounded_503(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = serving_server(server_factory, SUANLI_GATEWAY_COLD_START_SECONDS="2")
    with api(server) as http:
        project = make_project(http)
        key = make_key(http, project)
        name = unique("never")
        service = deploy(
            http,
            project,
            name,
            args=["--fail-start"],
            replicas="0..1",
            scaling={"idle_after": 1},
            resources=SMALL,
        )
        wait_for(http, service["id"], lambda s: s["replicas"] == 0, 30, "scaled to zero")
        began = time.monotonic()
        answer = httpx.post(
            server.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        waited = time.monotonic() - began
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "cold_start_timeout"
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error"
    assert name in error["message"]
    assert int(answer.headers["retry-after"]) > 0
    assert 1.5 <= waited < 8, waited


# --- rolling update ---------------------------------------------------------------------------


def test_a_rolling_update_drops_no_request_and_replaces_every_replica(
    served: Served, services: Callable[..., dict[str, Any]]
) -> None:
    name = unique("roll")
    service = services(name, replicas="2")
    wait_for(served.http, service["id"], lambda s: s["ready"] == 2, 60, "two ready replicas")
    before = {r["id"] for r in live_replicas(detail(served.http, service["id"]))}
    snapshots: list[dict[str, Any]] = []
    with Caller(served.gateway(), name, max_tokens=None) as caller:
        time.sleep(0.5)
        changed = served.http.patch(f"services/{service['id']}", json={"args": ["--tokens", "7"]})
        assert changed.status_code == 200, changed.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = detail(served.http, service["id"])
            snapshots.append(shown)
            live = live_replicas(shown)
            if len(live) == 2 and all(r["ready"] and r["id"] not in before for r in live):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the update did not end: {snapshots[-1]}")
        time.sleep(0.5)  # requests on the new replicas only
    assert caller.errors == [], caller.errors
    assert len(caller.answers) > 10
    assert caller.answers[-1] == " ".join(f"tok{i}" for i in range(7))
    assert caller.answers[0] == " ".join(f"tok{i}" for i in range(16))  # the old default

    # As many served as wanted at every moment: an old replica stopped only for a new ready one.
    assert min(s["ready"] for s in snapshots) >= 2, [s["ready"] for s in snapshots]
    events = events_of(served.server, service["id"])
    ready_at = sorted(
        at for job, key, at in events if key == "event.service_ready" and job not in before
    )
    stopped_at = sorted(
        at for job, key, at in events if key == "event.replaced_by_update" and job in before
    )
    assert len(ready_at) >= 2 and len(stopped_at) == 2, events
    for number, stopped in enumerate(stopped_at):
        assert ready_at[number] <= stopped, events  # the n-th old one after the n-th new ready

    # Every live replica runs the new template.
    engines = engines_of(name)
    assert len(engines) == 2
    assert all("--tokens" in p.cmdline() and "7" in p.cmdline() for p in engines)


# --- failures ---------------------------------------------------------------------------------


def test_a_killed_replica_is_replaced_while_the_other_serves(
    served: Served, services: Callable[..., dict[str, Any]]
) -> None:
    """The engine is killed with a request of its own under way (two callers, requests of
    0.3 s, each replica has one): that request goes to the other replica, as every request
    does until the replacement is ready."""
    name = unique("kill")
    service = services(name, replicas="2", args=["--delay-ms", "100"])
    first = wait_for(served.http, service["id"], lambda s: s["ready"] == 2, 60, "two ready")
    before = {r["id"] for r in live_replicas(first)}
    engines = engines_of(name)
    assert len(engines) == 2
    callers = [Caller(served.gateway(), name, streams=(False,)) for _ in range(2)]
    with contextlib.ExitStack() as stack:
        for caller in callers:
            stack.enter_context(caller)
        time.sleep(0.5)
        engines[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        replaced = wait_for(
            served.http,
            service["id"],
            lambda s: s["ready"] == 2 and {r["id"] for r in live_replicas(s)} != before,
            60,
            "a new replica in place of the killed one",
        )
        print(f"killed replica replaced and ready in {time.monotonic() - killed:.1f} s")
    assert [e for c in callers for e in c.errors] == []
    assert sum(len(c.answers) for c in callers) > 10
    assert len(before & {r["id"] for r in live_replicas(replaced)}) == 1
    assert len(engines_of(name)) == 2


def test_an_engine_that_exits_at_start_shows_why_and_backs_off(
    served: Served, services: Callable[..., dict[str, Any]]
) -> None:
    name = unique("broken")
    service = services(name, args=["--fail-start"])
    shown = wait_for(
        served.http,
        service["id"],
        lambda s: s["health"] == "failing" and s["next_start_at"] is not None,
        40,
        "a failing service waiting to start again",
    )
    assert shown["failures"] > 0
    assert shown["ready"] == 0
    reason = shown["reason"]
    assert reason and "exit." not in reason and "{" not in reason, reason  # words, not keys
    failed = next(r for r in shown["replicas_list"] if r["state"] == "failed")
    logs = served.http.get(
        f"services/{service['id']}/replicas/{failed['id']}/logs", params={"tail": 50}
    )
    assert logs.status_code == 200, logs.text
    assert f"fatal: cannot load model {name}" in logs.json()["text"]


# --- deploy rules ---------------------------------------------------------------------------


def test_deploys_that_cannot_serve_are_refused_naming_the_field(
    served: Served, tmp_path: Path
) -> None:
    http, project = served.http, served.project
    spec = {"project": project, "name": unique("bad"), "engine": "fake"}

    assert "engine" in error_fields(http.post("services", json={**spec, "engine": "nope"}))
    assert "replicas" in error_fields(http.post("services", json={**spec, "replicas": "5..2"}))
    assert "model" in error_fields(http.post("services", json={**spec, "engine": "needs-model"}))

    model = unique("weights")
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * (2 * 2**20))
    sdk = served.server.login()
    sdk.nodes.update_gpu(sdk.nodes.list()[0].gpus[0].uuid, shared=True)  # fractions allowed
    sdk.models.create(project, model)
    sdk.models.push(project, model, folder, "two MiB", state_file=tmp_path / "uploads.json")
    too_small = {"gpu_memory": "1Mi", "cpus": 1.0}
    answer = http.post("services", json={**spec, "model": f"{model}@1", "resources": too_small})
    assert "resources" in error_fields(answer), answer.text
    assert "2 MiB" in answer.text and "1 MiB" in answer.text and model in answer.text
    # The same model with room enough is deployed.
    fits = http.post(
        "services",
        json={**spec, "model": f"{model}@1", "resources": {"gpu_memory": "4Mi", "cpus": 1.0}},
    )
    assert fits.status_code == 201, fits.text
    assert http.post(f"services/{fits.json()['id']}/stop").status_code == 200

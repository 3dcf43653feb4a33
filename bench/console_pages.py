"""Console pages against the JSON API: requests/s and p50/p99 latency, side by side.

Starts a real `suanli server` on loopback (SQLite in a fresh data directory) with 8 simulated
A100s, seeds it through the API (10 projects capped at 2 GPUs each, 300 `sleep` jobs spread
across them: 8 run, the rest wait on their quotas), signs in twice, as a browser (GET /login,
POST /login with its CSRF token: a session cookie) and as an API client (a bearer token), then
measures each console page and the API request that carries the same data, one after the
other on the same server, each in a closed loop of `--concurrency` keep-alive connections
(a warm-up, then the measured window):

  GET /            the overview            vs  GET /api/v1/nodes
  GET /jobs        the job list (100 rows) vs  GET /api/v1/jobs (100 items)
  GET /jobs/{id}   one running job         vs  GET /api/v1/jobs/{id}
  GET /nodes       nodes and their GPUs    vs  GET /api/v1/nodes

The server, the load generator and the measurement come from bench/api_load.py. Any non-2xx
answer (a page redirected to /login included) or transport failure counts as an error. Every
phase is bounded in time; at the end the jobs are cancelled and the server is always stopped.

    python bench/console_pages.py --duration 8 --concurrency 8 --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

# bench/ is a folder of scripts, not a package: api_load is imported from beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import (
    ADMIN,
    DRAIN_GRACE_S,
    REPO,
    Options,
    Phase,
    PhaseResult,
    Server,
    clean_env,
    code_version,
    interrupt,
    measure,
    report_server_errors,
    table,
)

SIMULATED_GPUS = [{"count": 8, "model": "A100", "memory_bytes": 80 * 2**30}]
PROJECTS = 10
MAX_GPUS = 2
JOBS = 300
SEED_CONCURRENCY = 8
# Jobs that survive everything still end by themselves (their wrapper enforces it).
JOB_MAX_DURATION = "15m"
CSRF_INPUT = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
# Bounds of the phases around the measurements.
SEED_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 20.0
CLEANUP_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class Pair:
    """A console page and the API request that carries the same data."""

    page: str
    api: str


@dataclasses.dataclass
class PairResult:
    run: int
    pair: Pair
    page: PhaseResult
    api: PhaseResult
    page_bytes: int
    api_bytes: int

    @property
    def ratio(self) -> float:
        return self.page.rate / self.api.rate if self.api.rate else float("nan")


def cpu_ms_per_request(result: PhaseResult) -> float:
    """Server CPU per request: its CPU share over the phase divided by the request rate."""
    return result.server_cpu / result.rate * 1000 if result.rate else float("nan")


# --- The server: api_load's, with simulated GPUs (its `running_server` takes no extra env).


@contextlib.contextmanager
def simulated_server(data_dir: Path, password: str) -> Iterator[Server]:
    """`suanli server` with 8 simulated GPUs, waited for and always stopped by api_load.Server."""
    command = [sys.executable, "-m", "suanli", "server", "--port", "0"]
    command += ["--host", "127.0.0.1", "--data-dir", str(data_dir)]
    env = clean_env(
        {
            "SUANLI_ADMIN_PASSWORD": password,
            "SUANLI_SIMULATED_GPUS": json.dumps(SIMULATED_GPUS),
            "LANG": "C.UTF-8",
        }
    )
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
    server = Server(process, "", log_path)
    try:
        server.url = server._wait_for_url()
        yield server
    finally:
        server.stop()


def stop_leftover_wrappers(data_dir: Path) -> int:
    """Safety net: job wrappers run in sessions of their own and outlive the server. Any still
    running from this data directory (cancellation did not finish) gets SIGTERM, which stops
    its job; a wrapper still there after the grace gets SIGKILL with its job's process group."""
    marker = str(data_dir)

    def wrappers() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"suanli.backends.local.wrapper" in argv and any(
                    a.decode(errors="replace").startswith(marker) for a in argv
                ):
                    found.append(int(entry.name))
        return found

    pids = found = wrappers()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        pids = [pid for pid in pids if pid in wrappers()]
    for pid in pids:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(child), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return len(found)


# --- Signing in, seeding and cleaning up.


async def api_login(client: httpx.AsyncClient, password: str) -> None:
    login = await client.post("/api/v1/auth/login", json={"username": ADMIN, "password": password})
    login.raise_for_status()
    client.headers["Authorization"] = f"Bearer {login.json()['token']}"


async def browser_login(client: httpx.AsyncClient, password: str) -> None:
    """As a browser does: the login page sets the CSRF cookie and holds the token in its form;
    the form post answers 303 with the session cookie, which the client keeps from then on."""
    page = await client.get("/login")
    page.raise_for_status()
    match = CSRF_INPUT.search(page.text)
    if match is None:
        raise RuntimeError("no csrf_token field in the login page")
    form = {"username": ADMIN, "password": password, "csrf_token": match.group(1)}
    posted = await client.post("/login", data=form)
    if posted.status_code != 303 or "suanli_session" not in client.cookies:
        raise RuntimeError(f"console login answered {posted.status_code}: {posted.text[:300]}")
    home = await client.get("/")
    if home.status_code != 200:
        raise RuntimeError(f"GET / after login answered {home.status_code}")


async def seed(client: httpx.AsyncClient) -> None:
    """Projects with a GPU cap, then jobs round-robin across them, a few submits in flight."""
    for index in range(PROJECTS):
        name = f"p{index}"
        (await client.post("/api/v1/projects", json={"name": name})).raise_for_status()
        quota = await client.patch(f"/api/v1/projects/{name}/quota", json={"max_gpus": MAX_GPUS})
        quota.raise_for_status()
    gate = asyncio.Semaphore(SEED_CONCURRENCY)

    async def submit(index: int) -> None:
        spec = {
            "project": f"p{index % PROJECTS}",
            "name": f"job-{index}",
            "command": ["sleep", "3600"],
            "resources": {"gpus": 1, "cpus": 0.1, "memory": "64Mi"},
            "max_duration": JOB_MAX_DURATION,
        }
        async with gate:
            answer = await client.post("/api/v1/jobs", json=spec)
        if answer.status_code != 201:
            raise RuntimeError(f"submit refused ({answer.status_code}): {answer.text[:300]}")

    await asyncio.gather(*(submit(index) for index in range(JOBS)))


async def jobs_in(client: httpx.AsyncClient, state: str) -> list[dict[str, object]]:
    answer = await client.get("/api/v1/jobs", params={"state": state, "limit": 1000})
    answer.raise_for_status()
    return answer.json()


async def settle(client: httpx.AsyncClient) -> tuple[int, dict[str, int]]:
    """Wait until the scheduler has started what it can; the oldest running job is shown."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    expected = min(JOBS, PROJECTS * MAX_GPUS, SIMULATED_GPUS[0]["count"])
    while True:
        running = await jobs_in(client, "running")
        if len(running) >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    counts = {state: len(await jobs_in(client, state)) for state in ("running", "pending")}
    if not running:
        raise RuntimeError(f"no job running after {SETTLE_TIMEOUT_S:.0f} s: {counts}")
    return min(int(job["id"]) for job in running), counts


async def cancel_all(client: httpx.AsyncClient) -> None:
    """Pending jobs first (else they would start as GPUs free up), then the rest; wait until
    none is active, so no `sleep` outlives the run. Bounded: the safety net does the rest."""
    deadline = time.monotonic() + CLEANUP_TIMEOUT_S
    for state in ("pending", "active"):
        for job in await jobs_in(client, state):
            with contextlib.suppress(httpx.HTTPError):
                await client.post(f"/api/v1/jobs/{job['id']}/cancel")
    while await jobs_in(client, "active") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


# --- The measurements.


def pairs(job_id: int) -> list[Pair]:
    return [
        Pair("/", "/api/v1/nodes"),
        Pair("/jobs", "/api/v1/jobs"),
        Pair(f"/jobs/{job_id}", f"/api/v1/jobs/{job_id}"),
        Pair("/nodes", "/api/v1/nodes"),
    ]


async def check(client: httpx.AsyncClient, path: str, kind: str) -> int:
    """One request before measuring: it must answer 200 with the expected content type."""
    answer = await client.get(path)
    content_type = answer.headers.get("content-type", "")
    if answer.status_code != 200 or kind not in content_type:
        raise RuntimeError(f"GET {path}: {answer.status_code} {content_type} {answer.text[:300]}")
    return len(answer.content)


async def bench_server(
    server: Server, password: str, options: Options, run: int
) -> tuple[list[PairResult], dict[str, int]]:
    limits = httpx.Limits(
        max_connections=options.concurrency, max_keepalive_connections=options.concurrency
    )
    timeout = httpx.Timeout(options.duration + options.warmup + DRAIN_GRACE_S)
    settings = {"base_url": server.url, "limits": limits, "timeout": timeout}
    async with (
        httpx.AsyncClient(**settings) as api,
        httpx.AsyncClient(**settings, headers={"Accept": "text/html"}) as browser,
    ):
        await api_login(api, password)
        try:
            started = time.perf_counter()
            await asyncio.wait_for(seed(api), SEED_TIMEOUT_S)
            seconds = time.perf_counter() - started
            print(f"[run {run}] seeded {JOBS} jobs in {seconds:.1f} s", file=sys.stderr)
            job_id, counts = await settle(api)
            await browser_login(browser, password)
            results = []
            for pair in pairs(job_id):
                page_bytes = await check(browser, pair.page, "text/html")
                api_bytes = await check(api, pair.api, "application/json")
                page = await measure(
                    browser, server, Phase(f"GET {pair.page}", "GET", pair.page), options, run
                )
                api_result = await measure(
                    api, server, Phase(f"GET {pair.api}", "GET", pair.api), options, run
                )
                results.append(PairResult(run, pair, page, api_result, page_bytes, api_bytes))
            return results, counts
        finally:
            # Bounded, and quiet if the server is gone: the wrappers' safety net follows.
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                await asyncio.wait_for(cancel_all(api), CLEANUP_TIMEOUT_S + DRAIN_GRACE_S)


def run_once(run: int, options: Options) -> tuple[list[PairResult], dict[str, int]]:
    """A fresh server, seeded, for one run of every pair."""
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="suanli-bench-console-") as folder:
        data_dir = Path(folder)
        try:
            with simulated_server(data_dir, password) as server:
                results, counts = asyncio.run(bench_server(server, password, options, run))
                server.stop()
                report_server_errors("sqlite", run, server, options.keep_logs)
        finally:
            left = stop_leftover_wrappers(data_dir)
            if left:
                print(f"[run {run}] stopped {left} job wrapper(s) left running", file=sys.stderr)
    for result in results:
        result.page.backend = result.api.backend = "sqlite"
    return results, counts


# --- Output.


def pair_table(results: list[PairResult]) -> str:
    """A Markdown table, ready to paste into bench/README.md: one row per pair and run."""
    rows = [
        "| run | console page | req/s | p50 / p99 ms | errors | API request | req/s "
        "| p50 / p99 ms | errors | page/API req/s | server CPU ms/req, page / API "
        "| KB, page / API |",
        "|" + "---|" * 12,
    ]
    for r in results:
        p, a = r.page, r.api
        rows.append(
            f"| {r.run} | `GET {r.pair.page}` | {p.rate:,.0f} "
            f"| {p.percentile(0.5):.1f} / {p.percentile(0.99):.1f} | {sum(p.errors.values())} "
            f"| `GET {r.pair.api}` | {a.rate:,.0f} "
            f"| {a.percentile(0.5):.1f} / {a.percentile(0.99):.1f} | {sum(a.errors.values())} "
            f"| {r.ratio:.2f} | {cpu_ms_per_request(p):.1f} / {cpu_ms_per_request(a):.1f} "
            f"| {r.page_bytes / 1024:.1f} / {r.api_bytes / 1024:.1f} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="connections in flight")
    parser.add_argument("--runs", type=int, default=1, help="fresh server, seeded, per run")
    parser.add_argument("--keep-logs", action="store_true", help="copy server logs to /tmp")
    args = parser.parse_args(argv)
    return Options(
        backends=["sqlite"],
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        runs=args.runs,
        postgres_url=None,
        keep_logs=args.keep_logs,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    # Taken before and after: the figures belong to the code that ran, which may move meanwhile.
    version = code_version()
    results: list[PairResult] = []
    seeded = []
    for run in range(1, options.runs + 1):
        print(f"[run {run}] ...", file=sys.stderr, flush=True)
        pair_results, counts = run_once(run, options)
        results += pair_results
        seeded.append(counts)
    after = code_version()
    if after != version:
        version += f" at the start, {after} at the end"
    print(
        f"duration {options.duration:g} s, warm-up {options.warmup:g} s, "
        f"concurrency {options.concurrency}, {os.cpu_count()} CPUs, code {version}; "
        f"{PROJECTS} projects, {JOBS} jobs (running/pending at start: "
        + ", ".join(f"{c['running']}/{c['pending']}" for c in seeded)
        + ")"
    )
    print(pair_table(results))
    print()
    print(table([phase for r in results for phase in (r.page, r.api)]))
    errors = sum(sum(p.errors.values()) for r in results for p in (r.page, r.api))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""API load benchmark: requests/s and p50/p99 latency of authenticated reads and writes.

Starts a real `suanli server` as a separate process on loopback (SQLite in a fresh data
directory, or a fresh PostgreSQL database), signs in once, then drives a closed loop of
`--concurrency` keep-alive connections for a warm-up and a measured window per request kind:

  GET  /api/v1/me        the smallest authenticated request: one token lookup
  GET  /api/v1/projects  the token lookup plus the project list (joins, quotas)
  POST /api/v1/projects  one write transaction: project, quota, membership, audit event

Every phase is bounded in time and the server is always stopped (SIGTERM, then SIGKILL), so
the command ends by itself. Any non-2xx answer or transport failure counts as an error.

    python bench/api_load.py --backend both --duration 10 --concurrency 16 --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
ADMIN = "admin"
SEED_PROJECTS = 20
URL_LINE = re.compile(r"(http://127\.0\.0\.1:\d+)")
# The server gets this long to migrate, bootstrap the admin (argon2) and listen.
START_TIMEOUT_S = 60.0
# In-flight requests get this long to finish once a phase's window closes; then they are
# cancelled and counted as errors, so a stuck server cannot stretch the run.
DRAIN_GRACE_S = 5.0
STOP_TIMEOUT_S = 15.0
DEFAULT_PG_DIR = str(Path(tempfile.gettempdir()) / "suanli-bench-pg")
DEFAULT_PG_PORT = 54339
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Options:
    """The command line, parsed once."""

    backends: list[str]
    duration: float
    warmup: float
    concurrency: int
    runs: int
    postgres_url: str | None
    keep_logs: bool


@dataclasses.dataclass
class PhaseResult:
    """What one measured window produced, plus the CPU each side used during it."""

    backend: str
    run: int
    label: str
    latencies: list[float]
    errors: Counter[str]
    duration: float
    server_cpu: float
    client_cpu: float
    machine_cpu: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.duration

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in milliseconds (no interpolation: it is a real sample)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[index] * 1000


@dataclasses.dataclass(frozen=True)
class Phase:
    """One request kind: a label and a function that builds the next request's arguments."""

    label: str
    method: str
    path: str
    body: Callable[[], dict[str, str]] | None = None


# --- CPU accounting: tells whether the server, the load generator or the database is busy.


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU of one process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS


# --- The server under test.


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment minus stray SUANLI_* settings, which would skew the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUANLI_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def running_server(data_dir: Path, database_url: str | None, password: str) -> Iterator[Server]:
    """Start `suanli server` on a free loopback port; always stop it, however we leave."""
    server = Server.start(data_dir, database_url, password)
    try:
        yield server
    finally:
        server.stop()


@dataclasses.dataclass
class Server:
    """A `python -m suanli server` child process and where it listens."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(cls, data_dir: Path, database_url: str | None, password: str) -> Server:
        command = [sys.executable, "-m", "suanli", "server", "--port", "0"]
        command += ["--host", "127.0.0.1", "--data-dir", str(data_dir)]
        if database_url:
            command += ["--database-url", database_url]
        log_path = data_dir / "server.log"
        env = clean_env({"SUANLI_ADMIN_PASSWORD": password, "LANG": "C.UTF-8"})
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log
            )
        server = cls(process, "", log_path)
        try:
            server.url = server._wait_for_url()
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_for_url(self) -> str:
        """Read stdout until the 'running at URL' line; the socket is listening by then."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        os.set_blocking(self.process.stdout.fileno(), False)
        buffer = b""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log_path}")
            chunk = self.process.stdout.read()
            if chunk:
                buffer += chunk
                match = URL_LINE.search(buffer.decode(errors="replace"))
                if match:
                    return match.group(1)
            time.sleep(0.05)
        raise RuntimeError(f"server did not start within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL: the benchmark never leaves a server behind."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def error_lines(self) -> list[str]:
        """Server log lines that report failures (tracebacks, ERROR records)."""
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line]


# --- PostgreSQL: one throwaway cluster for the whole command, one fresh database per run.


@contextlib.contextmanager
def postgres_cluster(url: str | None) -> Iterator[str]:
    """Yield an admin URL: the one given, or a throwaway cluster started (and stopped) here."""
    if url:
        yield url
        return
    script = str(REPO / "scripts" / "postgres")
    started = subprocess.run(
        [script, "start", DEFAULT_PG_DIR, str(DEFAULT_PG_PORT)],
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop", DEFAULT_PG_DIR], check=False)
        shutil.rmtree(DEFAULT_PG_DIR, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(admin_url: str, name: str) -> Iterator[str]:
    """Create an empty database so every run starts from the same state; drop it after."""
    import psycopg

    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- The load generator.


async def worker(
    client: httpx.AsyncClient,
    phase: Phase,
    measure_from: float,
    stop_at: float,
    latencies: list[float],
    errors: Counter[str],
) -> None:
    """Closed loop: send, wait for the answer, send again; record only measured-window starts."""
    while (started := time.perf_counter()) < stop_at:
        body = phase.body() if phase.body else None
        try:
            response = await client.request(phase.method, phase.path, json=body)
            ok, kind = response.is_success, f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            ok, kind = False, type(error).__name__
        if started < measure_from:
            continue
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors[kind] += 1


async def drive(
    client: httpx.AsyncClient, phase: Phase, options: Options
) -> tuple[list[float], Counter[str]]:
    """Run `concurrency` workers through warm-up and the measured window, bounded in time."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    measure_from = time.perf_counter() + options.warmup
    stop_at = measure_from + options.duration
    tasks = [
        asyncio.create_task(worker(client, phase, measure_from, stop_at, latencies, errors))
        for _ in range(options.concurrency)
    ]
    _, pending = await asyncio.wait(
        tasks, timeout=options.warmup + options.duration + DRAIN_GRACE_S
    )
    for task in pending:
        task.cancel()
    if pending:
        errors["unfinished at deadline"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    return latencies, errors


async def measure(
    client: httpx.AsyncClient, server: Server, phase: Phase, options: Options, run: int
) -> PhaseResult:
    """One phase, with the CPU the server, this process and the machine used around it."""
    server_before = process_cpu_seconds(server.process.pid)
    client_before = time.process_time()
    machine_before = machine_cpu_seconds()
    wall_before = time.perf_counter()
    latencies, errors = await drive(client, phase, options)
    wall = time.perf_counter() - wall_before
    return PhaseResult(
        backend="",
        run=run,
        label=phase.label,
        latencies=latencies,
        errors=errors,
        duration=options.duration,
        server_cpu=(process_cpu_seconds(server.process.pid) - server_before) / wall,
        client_cpu=(time.process_time() - client_before) / wall,
        machine_cpu=(machine_cpu_seconds() - machine_before) / wall,
    )


async def prepare(client: httpx.AsyncClient, password: str) -> None:
    """Sign in, create the projects the list returns, and check the token reads.

    A token's first use records `last_used_at` (on a GET, in a second, write transaction); the
    seed writes do it here, so the read phases measure the steady state, where that write
    recurs only every five minutes, longer than a phase.
    """
    login = await client.post("/api/v1/auth/login", json={"username": ADMIN, "password": password})
    login.raise_for_status()
    client.headers["Authorization"] = f"Bearer {login.json()['token']}"
    for index in range(SEED_PROJECTS):
        created = await client.post("/api/v1/projects", json={"name": f"seed-{index:02d}"})
        created.raise_for_status()
    (await client.get("/api/v1/me")).raise_for_status()


def phases(run_tag: str) -> list[Phase]:
    """The request kinds, reads first: the writes grow the list the read would return."""
    counter = itertools.count()

    def new_project() -> dict[str, str]:
        return {"name": f"p-{run_tag}-{next(counter)}"}

    return [
        Phase("GET /me", "GET", "/api/v1/me"),
        Phase(f"GET /projects ({SEED_PROJECTS})", "GET", "/api/v1/projects"),
        Phase("POST /projects", "POST", "/api/v1/projects", new_project),
    ]


async def bench_server(
    server: Server, password: str, options: Options, run: int
) -> list[PhaseResult]:
    """All phases against one running server, over one pool of keep-alive connections."""
    limits = httpx.Limits(
        max_connections=options.concurrency, max_keepalive_connections=options.concurrency
    )
    timeout = httpx.Timeout(options.duration + options.warmup + DRAIN_GRACE_S)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        await prepare(client, password)
        return [await measure(client, server, phase, options, run) for phase in phases(f"r{run}")]


def run_once(
    backend: str, run: int, options: Options, pg_admin_url: str | None
) -> list[PhaseResult]:
    """A fresh server on a fresh database for one run of every phase."""
    password = secrets.token_urlsafe(16)
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="suanli-bench-")))
        database_url = None
        if backend == "postgres":
            assert pg_admin_url is not None
            name = f"suanli_bench_{os.getpid()}_{run}"
            database_url = stack.enter_context(fresh_database(pg_admin_url, name))
        server = stack.enter_context(running_server(data_dir, database_url, password))
        results = asyncio.run(bench_server(server, password, options, run))
        server.stop()
        report_server_errors(backend, run, server, options.keep_logs)
    for result in results:
        result.backend = backend
    return results


def report_server_errors(backend: str, run: int, server: Server, keep: bool) -> None:
    """Surface failures the server logged, which a count of status codes alone would hide."""
    lines = server.error_lines()
    if lines:
        print(f"[{backend} run {run}] server logged {len(lines)} error line(s):", file=sys.stderr)
        for line in lines[:10]:
            print(f"    {line}", file=sys.stderr)
    if keep:
        kept = Path(tempfile.gettempdir()) / f"suanli-bench-{backend}-{run}.log"
        kept.write_bytes(server.log_path.read_bytes())
        print(f"[{backend} run {run}] server log kept at {kept}", file=sys.stderr)


# --- Output.


def table(results: list[PhaseResult]) -> str:
    """A Markdown table, ready to paste into bench/README.md."""
    header = (
        "| backend | run | request | req/s | p50 ms | p99 ms | max ms | errors "
        "| server CPU | loadgen CPU | machine CPU |"
    )
    rows = [header, "|" + "---|" * 11]
    for r in results:
        errors = sum(r.errors.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in r.errors.items())})" if errors else ""
        rows.append(
            f"| {r.backend} | {r.run} | {r.label} | {r.rate:,.0f} | {r.percentile(0.50):.1f} "
            f"| {r.percentile(0.99):.1f} | {r.percentile(1.0):.0f} | {errors}{detail} "
            f"| {r.server_cpu:.0%} | {r.client_cpu:.0%} | {r.machine_cpu:.0%} |"
        )
    return "\n".join(rows)


def code_version() -> str:
    """The commit under test, marked dirty when the tree differs: figures belong to a version."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "suanli"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit or 'unknown'}{' (suanli/ modified)' if dirty else ''}"


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per phase")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in flight")
    parser.add_argument("--runs", type=int, default=2, help="fresh server+database per run")
    parser.add_argument(
        "--postgres-url",
        help="admin URL of an existing PostgreSQL (a database is created per run); "
        f"default: a throwaway cluster in {DEFAULT_PG_DIR} on port {DEFAULT_PG_PORT}",
    )
    parser.add_argument("--keep-logs", action="store_true", help="copy server logs to /tmp")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    return Options(
        backends=backends,
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        runs=args.runs,
        postgres_url=args.postgres_url,
        keep_logs=args.keep_logs,
    )


def interrupt(signum: int, _frame: object) -> None:
    """A SIGTERM to the benchmark unwinds like Ctrl-C, so the servers it started are stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    results: list[PhaseResult] = []
    with contextlib.ExitStack() as stack:
        pg_admin_url = None
        if "postgres" in options.backends:
            pg_admin_url = stack.enter_context(postgres_cluster(options.postgres_url))
        for backend in options.backends:
            for run in range(1, options.runs + 1):
                print(f"[{backend} run {run}] ...", file=sys.stderr, flush=True)
                results += run_once(backend, run, options, pg_admin_url)
    print(
        f"duration {options.duration:g} s, warm-up {options.warmup:g} s, "
        f"concurrency {options.concurrency}, {os.cpu_count()} CPUs, code {code_version()}"
    )
    print(table(results))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

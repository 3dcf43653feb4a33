"""The workload controller's scheduling cycle as the server runs it, on the local backend.

`schedule()` alone is timed by bench/scheduler_cycle.py; here it is the whole cycle that the
server times itself and exports on /metrics (`suanli_scheduler_cycle_seconds`): the snapshot
read from the database, the scheduler, and the write of its decisions (pending reasons,
admissions). A real `suanli server` with 8 simulated GPUs gets N jobs of 1 GPU each
(0.1 CPU, `sleep 600`) submitted by 8 threads: 8 run, the rest wait. After a settling time the
histogram is read as the administrator, again after a window of idle cycles (the 2 s tick,
no submits): the mean cycle is the difference's sum / count, with the share of the window's
cycles within 25 and 50 ms (the histogram's buckets); the server's CPU time over the window
is read from its process ("all": every cycle since the start, the submits' included). The
server and its workloads are stopped at the end.

    python bench/controller_cycle.py --jobs 500 --window 30
"""

import argparse
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
from submit_latency import EIGHT_A100S, PASSWORD, local_server

from suanli.client import Client

HISTOGRAM = "suanli_scheduler_cycle_seconds"
LINE = re.compile(rf"^{HISTOGRAM}_(sum|count)(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
BUCKET = re.compile(rf'^{HISTOGRAM}_bucket{{(?:[^}}]*,)?le="([^"]+)"}} (\S+)$', re.MULTILINE)
SHOWN = ("0.025", "0.05")  # the upper bounds (seconds) whose share of the window's cycles is shown
SUBMITTERS = 8


def cycle_totals(url: str, token: str) -> dict[str, float]:
    """The histogram as /metrics shows it now: `sum` (seconds), `count` (cycles) and the
    cumulative count of each bucket by its upper bound (`0.025`, ...)."""
    answer = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    answer.raise_for_status()
    totals = {name: float(value) for name, value in LINE.findall(answer.text)}
    totals.update({bound: float(value) for bound, value in BUCKET.findall(answer.text)})
    return totals


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def submit_all(url: str, token: str, jobs: int) -> None:
    """N jobs of 1 GPU each from a few keep-alive clients: more than the GPUs, so most wait."""
    spec = {
        "project": "bench",
        "command": ["sleep", "600"],
        "resources": {"gpus": 1, "cpus": 0.1, "memory": "64Mi"},
    }
    local = threading.local()

    def submit(_: int) -> None:
        if not hasattr(local, "client"):
            local.client = Client(url, token)
        local.client.jobs.submit(spec)

    with ThreadPoolExecutor(max_workers=SUBMITTERS) as pool:
        list(pool.map(submit, range(jobs)))


def measure(url: str, server: psutil.Process, jobs: int, settle: float, window: float) -> dict:
    with Client(url) as client:
        client.login("admin", PASSWORD)
        client.projects.create("bench")
        token = client.token
    assert token is not None
    begin = time.monotonic()
    submit_all(url, token, jobs)
    submitted = time.monotonic() - begin
    time.sleep(settle)
    before = cycle_totals(url, token)
    cpu0, wall0 = cpu_seconds(server), time.monotonic()
    time.sleep(window)
    after = cycle_totals(url, token)
    cpu1, wall1 = cpu_seconds(server), time.monotonic()
    with Client(url, token) as client:
        running = len(client.jobs.list(state="running", limit=1000))
        pending = len(client.jobs.list(state="pending", limit=1000))
    cycles = after["count"] - before["count"]
    return {
        "submits_per_s": jobs / submitted,
        "cycles": cycles,
        "mean_ms": (after["sum"] - before["sum"]) / cycles * 1000 if cycles else float("nan"),
        "within": [(after[b] - before[b]) / cycles if cycles else float("nan") for b in SHOWN],
        "all_cycles": after["count"],
        "all_mean_ms": after["sum"] / after["count"] * 1000 if after["count"] else float("nan"),
        "server_cpu": (cpu1 - cpu0) / (wall1 - wall0),
        "running": running,
        "pending": pending,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs of 1 GPU submitted")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of cycles measured")
    args = parser.parse_args()
    # Jobs run as their users' own accounts, as the default install does (see submit_latency).
    with local_server(EIGHT_A100S) as (process, url):
        result = measure(url, psutil.Process(process.pid), args.jobs, args.settle, args.window)
    print(f"jobs {args.jobs}, window {args.window:.0f} s, {os.cpu_count()} CPUs")
    print(
        "| running / pending | cycles in window | mean cycle ms | ≤ 25 ms / ≤ 50 ms "
        "| server CPU in window | mean cycle ms, all | submits/s |"
    )
    print("|---|---|---|---|---|---|---|")
    within = " / ".join(f"{share:.0%}" for share in result["within"])
    print(
        f"| {result['running']} / {result['pending']} | {result['cycles']:.0f} "
        f"| {result['mean_ms']:.1f} | {within} | {result['server_cpu']:.1%} "
        f"| {result['all_mean_ms']:.1f} ({result['all_cycles']:.0f}) "
        f"| {result['submits_per_s']:.0f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

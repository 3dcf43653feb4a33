"""Submit → process started latency and submissions per second on the local backend.

Each job is `date +%s.%N`: its output is the moment the process really ran, read back from
its log; latency = that moment − the moment the client began the submit request (one clock:
everything runs on this machine). A submit wakes the scheduler at once; there is no polling
delay to wait out. Bounded: N sequential jobs, then a burst of M concurrent submits.

    python bench/submit_latency.py --jobs 50 --burst 200
"""

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from suanli.client import Client

PASSWORD = "bench-password-1"


EIGHT_A100S = {"SUANLI_SIMULATED_GPUS": json.dumps([{"count": 8, "model": "A100"}])}


def start_server(
    data_dir: Path, settings: dict[str, str] = EIGHT_A100S
) -> tuple[subprocess.Popen[str], str]:
    """`suanli server` on a free port with `settings` (SUANLI_* variables); its URL."""
    env = {
        **os.environ,
        "SUANLI_ADMIN_PASSWORD": PASSWORD,
        "SUANLI_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "suanli", "server", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "http://" in line:
            return process, "http://" + line.split("http://", 1)[1].split()[0]
    raise RuntimeError("server did not start")


def end_workloads(folder: Path) -> None:
    """Workloads outlive their server by design: end the ones started under `folder`, and
    wait for them, so that the folder can be removed after (a wrapper writes into it as it
    ends)."""
    prefix = str(folder.resolve()) + "/"
    ours = [
        process
        for process in psutil.process_iter(["cmdline"])
        if any(arg.startswith(prefix) for arg in process.info["cmdline"] or [])
    ]
    for process in ours:
        if "suanli.backends.local.wrapper" in (process.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                process.terminate()
    psutil.wait_procs(ours, timeout=15)


@contextlib.contextmanager
def local_server(settings: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`suanli server` with `settings` on a temporary folder that the jobs' own accounts may
    reach (the default install, as root, runs each user's jobs as their own account; see
    docs/admin-guide.md, "Security model"); stopped at the end, with its workloads."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as folder:
        Path(folder).chmod(0o755)
        work = {"SUANLI_WORK_DIR": str(Path(folder) / "work")}
        process, url = start_server(Path(folder) / "data", {**settings, **work})
        try:
            yield process, url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            end_workloads(Path(folder))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def started_at(client: Client, job_id: int, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = client.jobs.logs(job_id).text.strip()
        if text:
            return float(text.split()[0])
        time.sleep(0.005)
    raise TimeoutError(f"job {job_id} did not print")


def measure(url: str, jobs: int, burst: int) -> dict[str, float]:
    with Client(url) as client:
        client.login("admin", PASSWORD)
        client.projects.create("bench")
        spec = {"project": "bench", "command": ["date", "+%s.%N"], "resources": {"memory": "64Mi"}}
        latencies = []
        for _ in range(jobs):
            begin = time.time()
            job = client.jobs.submit(spec)
            latencies.append(started_at(client, job.id) - begin)
            while client.jobs.get(job.id).state not in ("succeeded", "failed"):
                time.sleep(0.005)
        # A project whose one GPU a long job holds: what else asks for a GPU there waits, so
        # its burst measures submits without launches. (A quota of 0 GPUs would refuse them.)
        client.projects.create("queued")
        client.projects.set_quota("queued", max_gpus=1)
        holder = client.jobs.submit({**spec, "project": "queued", "command": ["sleep", "600"],
                                     "resources": {"gpus": 1, "memory": "64Mi"}})  # fmt: skip
        while client.jobs.get(holder.id).state != "running":
            time.sleep(0.01)
        token = client.token

    local = threading.local()

    def burst_rate(body: dict[str, object]) -> float:
        def submit(_: int) -> None:
            if not hasattr(local, "client"):  # one keep-alive client per thread
                local.client = Client(url, token)
            local.client.jobs.submit(body)

        begin = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(submit, range(burst)))
        return burst / (time.monotonic() - begin)

    queued = {**spec, "project": "queued", "resources": {"gpus": 1, "memory": "64Mi"}}
    queued_rate = burst_rate(queued)
    rate = burst_rate(spec)
    return {
        "queued_per_s": queued_rate,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.mean(latencies) * 1000,
        "max_ms": max(latencies) * 1000,
        "submits_per_s": rate,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50, help="sequential jobs timed")
    parser.add_argument("--burst", type=int, default=200, help="concurrent submits timed")
    args = parser.parse_args()
    with local_server(EIGHT_A100S) as (_, url):
        result = measure(url, args.jobs, args.burst)
    print(f"jobs {args.jobs}, burst {args.burst}, {os.cpu_count()} CPUs")
    print(
        "| submit→started p50 ms | p99 ms | mean ms | max ms | submits/s, queued "
        "| submits/s, each launched |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {result['p50_ms']:.0f} | {result['p99_ms']:.0f} | {result['mean_ms']:.0f} "
        f"| {result['max_ms']:.0f} | {result['queued_per_s']:.0f} "
        f"| {result['submits_per_s']:.0f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

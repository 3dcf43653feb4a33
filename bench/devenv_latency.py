"""Dev environments through the server's authenticated proxy: create → JupyterLab answering,
and what the proxy adds to a 1 MiB download and to a terminal's websocket round trip.

One real `suanli server` (local backend, 8 simulated A100s, SSH gateway on a free port):

1. **create → JupyterLab answers**: from the start of `POST /api/v1/devenvs` (tools jupyter
   and terminal, a workdir in a temporary directory) to the first 200 of
   `GET /x/<id>/jupyter/api/status` through the proxy with the admin's bearer token. Split
   into create → `running` (the API's state, polled every 10 ms), → the agent's
   `endpoints.json` (ports chosen, JupyterLab spawned), → JupyterLab's first 200 on its own
   port (probed every 50 ms there: probing through the proxy would cost the server CPU on
   the 2 cores JupyterLab starts on), → the first 200 through the proxy. Each environment
   is stopped and deleted after. For comparison, interleaved: plain JupyterLab started by
   hand with the agent's options, spawn → first 200 on its own port; and what a fresh
   interpreter spends importing JupyterLab and the agent (`-X importtime`). Both start
   JupyterLab as installed (`-m jupyterlab`, `import jupyterlab.labapp`: rfc3987_syntax
   included), not through the agent's launcher (`agent.JUPYTERLAB`): the difference is what
   the launcher saves.
2. **proxy overhead on HTTP**: a 1 MiB file in the workdir, fetched through the proxy
   (`/x/<id>/jupyter/files/<name>`, bearer token) and straight from JupyterLab's port (from
   `endpoints.json`, with the environment's token read from the database: the bench only),
   interleaved, one keep-alive connection each; the same for a tiny answer (`api/status`),
   the fixed cost of a request; the server's CPU time per proxied request.
3. **terminal round trips**: `["stdin", "echo rt''<n>p\\r"]` until `rt<n>p` comes back in a
   `["stdout", …]` frame (the quotes keep the terminal's echo of the typed line from
   matching: this is the shell's answer), through the proxy's websocket and straight to the
   agent's, interleaved, one connection each.

    PYTHONPATH=. python3 bench/devenv_latency.py --runs 5      # ≈ 2–4 min
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from submit_latency import EIGHT_A100S, PASSWORD, start_server
from websockets.asyncio.client import ClientConnection, connect

from suanli.client import Client
from suanli.devenvs import endpoints
from suanli.devenvs.endpoints import Endpoints

# The tools' own speed, not isolation's: the agent runs as the server's user (as root, the
# default install would need an interpreter every account can run; docs/admin-guide.md,
# "Security model").
SETTINGS = {**EIGHT_A100S, "SUANLI_SSH_PORT": "0", "SUANLI_WORKLOAD_IDENTITY": "server"}
TOOLS = ["jupyter", "terminal"]
STATE_POLL = 0.01
JUPYTER_POLL = 0.05
MIB = 1 << 20


def stats(values: list[float]) -> dict[str, float]:
    """Median, nearest-rank p90 and max, in milliseconds."""
    ordered = sorted(values)
    return {
        "p50": 1000 * statistics.median(ordered),
        "p90": 1000 * ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "max": 1000 * ordered[-1],
    }


class Bench:
    def __init__(self, url: str, token: str, data_dir: Path, workdir: Path):
        self.url = url
        self.token = token
        self.data_dir = data_dir
        self.workdir = workdir
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.created = 0

    def api(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, "/api/v1" + path, json=body)
        response.raise_for_status()
        return None if response.status_code == 204 else response.json()

    def where(self, env_id: int) -> Endpoints | None:
        return endpoints.read(self.data_dir / "work" / str(env_id))

    def secret(self, env_id: int) -> str:
        """The environment's token, as the proxy adds it (the bench reads the database)."""
        with sqlite3.connect(self.data_dir / "suanli.db") as db:
            (secret,) = db.execute("SELECT secret FROM jobs WHERE id = ?", (env_id,)).fetchone()
        return str(secret)

    def start(self) -> tuple[int, dict[str, float]]:
        """Create one environment and wait until JupyterLab answers through the proxy; the
        moments (s since the create began) it was running, had its endpoints, JupyterLab
        answered on its own port, then through the proxy."""
        self.created += 1
        spec = {
            "project": "bench",
            "name": f"bench-{self.created}",
            "tools": TOOLS,
            "workdir": str(self.workdir),
        }
        began = time.monotonic()
        env_id = self.api("POST", "/devenvs", spec)["id"]
        try:
            return env_id, self._wait(env_id, began)
        except BaseException:
            with contextlib.suppress(Exception):  # leave no JupyterLab behind
                self.finish(env_id)
            raise

    def _wait(self, env_id: int, began: float) -> dict[str, float]:
        moments: dict[str, float] = {}
        deadline = began + 120
        while "running" not in moments:
            state = self.api("GET", f"/devenvs/{env_id}")["state"]
            if state == "running":
                moments["running"] = time.monotonic() - began
            elif state in ("failed", "cancelled", "succeeded"):
                raise RuntimeError(f"environment {env_id} ended: {state}\n{self.log(env_id)}")
            elif time.monotonic() > deadline:
                raise TimeoutError(f"environment {env_id} still {state}")
            else:
                time.sleep(STATE_POLL)
        # Until JupyterLab listens, probe its own port (cheap); then the proxy. Probing
        # through the proxy all along would cost the server ≈ 10 ms of CPU per probe on the
        # 2 cores JupyterLab is starting on.
        status = f"/x/{env_id}/jupyter/api/status"
        own = httpx.Client(headers={"Authorization": f"token {self.secret(env_id)}"}, timeout=5)
        with own:
            while "jupyter" not in moments:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"JupyterLab of {env_id} is silent\n{self.log(env_id)}")
                where = self.where(env_id)
                if where is None:
                    time.sleep(STATE_POLL)
                    continue
                moments.setdefault("agent", time.monotonic() - began)
                if "own_port" not in moments:
                    with contextlib.suppress(httpx.TransportError):
                        if own.get(f"{where.url('jupyter')}{status}").status_code == 200:
                            moments["own_port"] = time.monotonic() - began
                            continue
                    time.sleep(JUPYTER_POLL)
                elif self.http.get(status).status_code == 200:
                    moments["jupyter"] = time.monotonic() - began
                else:
                    time.sleep(STATE_POLL)
        return moments

    def log(self, env_id: int) -> str:
        return str(self.api("GET", f"/devenvs/{env_id}/logs")["text"])

    def finish(self, env_id: int) -> None:
        self.api("POST", f"/devenvs/{env_id}/stop")
        deadline = time.monotonic() + 60
        while self.api("GET", f"/devenvs/{env_id}")["state"] not in ("cancelled", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"environment {env_id} did not stop")
            time.sleep(0.05)
        self.api("DELETE", f"/devenvs/{env_id}")


def plain_jupyter(workdir: Path) -> float:
    """JupyterLab alone, with the agent's options: spawn → first 200 of /api/status. Started
    as installed (`-m jupyterlab`), not through the agent's launcher that skips importing
    rfc3987_syntax: kept so, to show what the launcher saves."""
    port = free_port()
    token = "plain-bench-token"
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--ServerApp.base_url=/x/0/jupyter/", f"--ServerApp.root_dir={workdir}",
        "--ServerApp.allow_origin=*", "--ServerApp.allow_remote_access=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=",
    ]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    began = time.monotonic()
    child = subprocess.Popen(
        argv,
        cwd=workdir,
        env={**env, "JUPYTER_TOKEN": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/x/0/jupyter/api/status"
    try:
        with httpx.Client(headers={"Authorization": f"token {token}"}, timeout=5) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if http.get(url).status_code == 200:
                        return time.monotonic() - began
                if time.monotonic() - began > 120 or child.poll() is not None:
                    raise RuntimeError("plain JupyterLab did not answer")
                time.sleep(JUPYTER_POLL)
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def import_costs(repeats: int = 3) -> dict[str, float]:
    """Where JupyterLab's and the agent's start goes before they do anything: wall time of a
    fresh interpreter importing them, and `-X importtime`'s cumulative time of the modules
    named (median of `repeats`)."""
    seen: dict[str, list[float]] = {}
    modules = {
        "jupyterlab.labapp": ("jupyterlab.labapp", "rfc3987_syntax", "jupyter_server.serverapp"),
        "suanli.devenvs.agent": ("suanli.devenvs.agent", "asyncssh"),
    }
    env = {**os.environ, "PYTHONPATH": endpoints.source_root()}
    for _ in range(repeats):
        for top, parts in modules.items():
            began = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", f"import {top}"],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            seen.setdefault(f"python -c 'import {top}' (wall)", []).append(time.monotonic() - began)
            for line in done.stderr.splitlines():
                fields = [f.strip() for f in line.removeprefix("import time:").split("|")]
                if len(fields) == 3 and fields[2] in parts:
                    seen.setdefault(f"  import {fields[2]} (cumulative)", []).append(
                        int(fields[1]) / 1e6
                    )
    return {label: statistics.median(values) for label, values in seen.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def downloads(
    bench: Bench, env_id: int, repeats: int, server_pid: int
) -> dict[str, dict[str, Any]]:
    """1 MiB and a tiny answer (`api/status`, the fixed cost of a request), each through the
    proxy and straight from JupyterLab, interleaved; the server's CPU per proxied request."""
    name = "bench-1mib.bin"
    body = os.urandom(MIB)
    (bench.workdir / name).write_bytes(body)
    where = bench.where(env_id)
    assert where is not None
    direct = f"http://{where.host}:{where.ports['jupyter']}"
    clients = {
        "proxy": bench.http,
        "direct": httpx.Client(
            headers={"Authorization": f"token {bench.secret(env_id)}"}, timeout=30
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    for label, path, size in (
        ("1 MiB download", f"/x/{env_id}/jupyter/files/{name}", MIB),
        ("tiny GET api/status", f"/x/{env_id}/jupyter/api/status", None),
    ):
        urls = {"proxy": bench.url + path, "direct": direct + path}
        times: dict[str, list[float]] = {"proxy": [], "direct": []}

        def fetch(way: str, urls: dict[str, str] = urls, size: int | None = size) -> float:
            began = time.perf_counter()
            response = clients[way].get(urls[way])
            elapsed = time.perf_counter() - began
            if response.status_code != 200 or (size and len(response.content) != size):
                raise RuntimeError(f"{way}: {response.status_code}, {len(response.content)} B")
            return elapsed

        for way in times:  # warm: connections, caches; and the same bytes both ways
            for _ in range(3):
                fetch(way)
            if size and clients[way].get(urls[way]).content != body:
                raise RuntimeError(f"{way}: not the file's bytes")
        cpu = cpu_seconds(server_pid)
        for n in range(repeats):
            order = ("proxy", "direct") if n % 2 == 0 else ("direct", "proxy")
            for way in order:
                times[way].append(fetch(way))
        results[label] = {**times, "server_cpu": (cpu_seconds(server_pid) - cpu) / repeats}
    clients["direct"].close()
    (bench.workdir / name).unlink()
    return results


async def round_trip(ws: ClientConnection, marker: str) -> float:
    typed = f"{marker[:2]}''{marker[2:]}"  # the shell prints the marker; the echo does not
    began = time.perf_counter()
    await ws.send(json.dumps(["stdin", f"echo {typed}\r"]))
    seen = ""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame[0] == "stdout":
            seen += frame[1]
            if marker in seen:
                return time.perf_counter() - began


async def terminals(bench: Bench, env_id: int, repeats: int, server_pid: int) -> dict[str, Any]:
    where = bench.where(env_id)
    assert where is not None
    ws_base = bench.url.replace("http://", "ws://", 1)
    times: dict[str, Any] = {"proxy": [], "direct": []}
    async with (
        connect(
            f"{ws_base}/x/{env_id}/terminal/ws",
            additional_headers={"Authorization": f"Bearer {bench.token}"},
        ) as proxy,
        connect(
            f"ws://{where.host}:{where.ports['agent']}/ws",
            additional_headers={"Authorization": f"token {bench.secret(env_id)}"},
        ) as direct,
    ):
        sockets = {"proxy": proxy, "direct": direct}
        for way, ws in sockets.items():  # the login shell is up; warm
            for n in range(5):
                await round_trip(ws, f"rt{way}{n}w")
        cpu = cpu_seconds(server_pid)
        for n in range(repeats):
            order = ("proxy", "direct") if n % 2 == 0 else ("direct", "proxy")
            for way in order:
                times[way].append(await round_trip(sockets[way], f"rt{n}p"))
        times["server_cpu"] = (cpu_seconds(server_pid) - cpu) / repeats
    return times


def drain(process: subprocess.Popen[str], lines: list[str]) -> threading.Thread:
    """Keep reading the server's output (its pipe must not fill); keep what went wrong."""

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if "ERROR" in line or "Traceback" in line or "Error" in line:
                lines.append(line.rstrip())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="environments created and timed")
    parser.add_argument("--downloads", type=int, default=100, help="requests each way")
    parser.add_argument("--round-trips", type=int, default=200, help="terminal round trips")
    args = parser.parse_args()
    found: dict[str, Any] = {"load_before": os.getloadavg()}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="suanli-bench-devenv-") as folder:
        data_dir, workdir = Path(folder) / "data", Path(folder) / "work"
        workdir.mkdir()
        process, url = start_server(data_dir, SETTINGS)
        drain(process, problems)
        try:
            with Client(url) as client:
                client.login("admin", PASSWORD)
                client.projects.create("bench")
                token = client.token
            assert token is not None
            bench = Bench(url, token, data_dir, workdir)
            env_id, found["cold"] = bench.start()  # warm-up: first connection, first imports
            bench.finish(env_id)
            found["plain_cold"] = plain_jupyter(workdir)
            found["starts"], found["plain"] = [], []
            for _ in range(args.runs):  # interleaved with plain JupyterLab
                env_id, moments = bench.start()
                found["starts"].append(moments)
                bench.finish(env_id)
                found["plain"].append(plain_jupyter(workdir))
            env_id, _ = bench.start()
            try:
                found["fetched"] = downloads(bench, env_id, args.downloads, process.pid)
                found["typed"] = asyncio.run(
                    terminals(bench, env_id, args.round_trips, process.pid)
                )
            finally:
                bench.finish(env_id)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    found["imports"] = import_costs()
    report(args, found)
    for line in problems:
        print("server:", line)
    return 1 if problems else 0


def report(args: argparse.Namespace, found: dict[str, Any]) -> None:
    before, after = found["load_before"][0], os.getloadavg()[0]
    print(
        f"runs {args.runs}, requests {args.downloads} each way, round trips {args.round_trips}, "
        f"{os.cpu_count()} CPUs, load average {before:.2f} → {after:.2f}"
    )
    print()
    starts = found["starts"]
    phases = {
        "create → running (API state)": [m["running"] for m in starts],
        "running → agent's endpoints.json": [m["agent"] - m["running"] for m in starts],
        "endpoints.json → JupyterLab 200 on its port": [m["own_port"] - m["agent"] for m in starts],
        "its port → first 200 via proxy": [m["jupyter"] - m["own_port"] for m in starts],
        "**create → JupyterLab 200 via proxy** (goal ≤ 5000)": [m["jupyter"] for m in starts],
        "plain JupyterLab: spawn → 200 on its port": found["plain"],
    }
    print("| create → JupyterLab answers | p50 ms | max ms | runs (ms) |")
    print("|---|---|---|---|")
    for label, values in phases.items():
        s = stats(values)
        each = ", ".join(f"{1000 * v:.0f}" for v in values)
        print(f"| {label} | {s['p50']:.0f} | {s['max']:.0f} | {each} |")
    cold = found["cold"]
    print(
        f"warm-up (first environment, not counted): running {1000 * cold['running']:.0f} ms, "
        f"endpoints {1000 * cold['agent']:.0f} ms, JupyterLab {1000 * cold['jupyter']:.0f} ms; "
        f"first plain JupyterLab {1000 * found['plain_cold']:.0f} ms"
    )
    print()
    print("| a fresh interpreter imports | median ms |")
    print("|---|---|")
    for label, seconds in found["imports"].items():
        print(f"| {label} | {1000 * seconds:.0f} |")
    print()
    print(
        "| path | p50 ms | p90 ms | max ms | MiB/s at p50 | ratio proxy/direct p50 / p90 "
        "| server CPU ms per proxied request |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = [(label, times, label.startswith("1 MiB")) for label, times in found["fetched"].items()]
    for title, times, rate in [*rows, ("terminal RTT", found["typed"], False)]:
        p, d = stats(times["proxy"]), stats(times["direct"])
        ratio = f"{p['p50'] / d['p50']:.2f} / {p['p90'] / d['p90']:.2f}"
        cpu = f"{1000 * times['server_cpu']:.1f}"
        for way, s in (("proxy", p), ("direct", d)):
            speed = f"{1000 / s['p50']:.0f}" if rate else "-"
            print(
                f"| {title}, {way} | {s['p50']:.2f} | {s['p90']:.2f} | {s['max']:.2f} "
                f"| {speed} | {ratio if way == 'proxy' else ''} "
                f"| {cpu if way == 'proxy' else ''} |"
            )


if __name__ == "__main__":
    sys.exit(main())

"""Submit → running on Slurm: through Suanli (slurm backend) against plain `sbatch`, on the
same real cluster (scripts/slurm) in the same run, interleaved so both see the same noise.

Each job prints `date +%s.%N` as its first act: latency = that moment − the moment the client
began its submit (one clock: cluster and clients are all on this machine). Suanli's path: the
API call, the scheduler cycle it wakes, the JWT-authenticated submit to slurmrestd, Slurm's
own scheduling and start. The peer: `sbatch --uid=<user>` (a process per submit, munge
authentication, the same Slurm scheduling).

Throughput: a burst of M jobs from 8 threads, each until Slurm has them all (Suanli: every
job left Suanli's queue, i.e. has a Slurm job id; sbatch: every command returned an id).
M is kept within the cluster's 32 CPUs so Suanli's admission does not hold jobs back.

    python bench/slurm_latency.py --jobs 30 --burst 30        # ≈ 2 min; needs root
"""

import argparse
import json
import os
import pwd
import random
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from submit_latency import PASSWORD, start_server

from suanli.client import Client

ROOT = Path(__file__).resolve().parents[1]
USER = "suanli-bench"
# Both paths ask for the same: 1 CPU, 1 GiB, no GPU.
SMALL = {"resources": {"cpus": 1, "memory": "1Gi"}}


def cluster_up(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SUANLI_SLURM_PORT_BASE"] = str(random.randrange(20000, 32000))
    done = subprocess.run(
        [str(ROOT / "scripts" / "slurm"), "start", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def server_up(base: Path, info: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process, url = start_server(
        base / "data",
        {
            "SUANLI_BACKEND": "slurm",
            "SUANLI_SLURM__REST_URL": info["SLURMRESTD_URL"],
            "SUANLI_SLURM__CONF": info["SLURM_CONF"],
            "SUANLI_UNIX_USERS": json.dumps({"admin": USER}),
            # The jobs' users write their logs in their folders there (base is 0755).
            "SUANLI_WORK_DIR": str(base / "work"),
        },
    )
    return process, url


def printed_time(path: Path, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text:
            return float(text.splitlines()[0])
        time.sleep(0.01)
    raise TimeoutError(f"{path} stayed empty")


def via_suanli(client: Client, data: Path) -> float:
    began = time.time()
    job = client.jobs.submit({"project": "bench", "command": ["date", "+%s.%N"], **SMALL})
    return printed_time(data.parent / "work" / str(job.id) / "output.log") - began


def via_sbatch(env: dict[str, str], out_dir: Path, n: int) -> float:
    out = out_dir / f"sbatch-{n}.out"
    began = time.time()
    subprocess.run(
        ["sbatch", "--parsable", f"--uid={USER}", f"--output={out}", "--no-requeue", "--mem=1024M",
         f"--chdir={out_dir}", "--export=NONE", "--wrap", "date +%s.%N"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return printed_time(out) - began


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p90_ms": 1000 * ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "mean_ms": 1000 * statistics.fmean(ordered),
        "max_ms": 1000 * ordered[-1],
    }


def burst_suanli(client: Client, m: int) -> float:
    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = list(
            pool.map(
                lambda _: client.jobs.submit({"project": "bench", "command": ["true"], **SMALL}).id,
                range(m),
            )
        )
    waiting = set(ids)
    while waiting:
        waiting = {i for i in waiting if client.jobs.get(i).state in {"pending", "admitted"}}
        if waiting:
            time.sleep(0.01)
    return m / (time.monotonic() - began)


def burst_sbatch(env: dict[str, str], out_dir: Path, m: int) -> float:
    def one(_: int) -> None:
        subprocess.run(
            ["sbatch", "--parsable", f"--uid={USER}", "--output=/dev/null", f"--chdir={out_dir}",
             "--mem=1024M", "--export=NONE", "--wrap", "true"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip

    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(m)))
    return m / (time.monotonic() - began)


def idle(env: dict[str, str]) -> None:
    while subprocess.run(
        ["squeue", "--noheader", "--states=PD,R,CG"], env=env, capture_output=True, text=True
    ).stdout.strip():
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--burst", type=int, default=30)
    args = parser.parse_args()
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", USER], check=True)
    base = Path(tempfile.mkdtemp(prefix="suanli-bench-slurm-", dir="/tmp"))
    base.chmod(0o755)
    cluster_dir, out_dir = base / "cluster", base / "sbatch"
    out_dir.mkdir()
    os.chown(out_dir, pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid)
    info = cluster_up(cluster_dir)
    env = {"PATH": os.environ["PATH"], "SLURM_CONF": info["SLURM_CONF"]}
    server, url = server_up(base, info)
    try:
        client = Client(url)
        client.login("admin", PASSWORD)
        client.projects.create("bench")
        via_suanli(client, base / "data")  # warm: first token, first connection
        via_sbatch(env, out_dir, -1)
        suanli, sbatch = [], []
        for n in range(args.jobs):  # interleaved: both see the same machine
            suanli.append(via_suanli(client, base / "data"))
            sbatch.append(via_sbatch(env, out_dir, n))
        idle(env)
        rates = {"suanli": burst_suanli(client, args.burst)}
        idle(env)
        rates["sbatch"] = burst_sbatch(env, out_dir, args.burst)
        s, b = summary(suanli), summary(sbatch)
        print("| path | p50 ms | p90 ms | mean ms | max ms | submits/s (burst) |")
        print("|---|---|---|---|---|---|")
        for name, row in (("Suanli → slurmrestd", s), ("plain sbatch", b)):
            rate = rates["suanli" if name.startswith("Suanli") else "sbatch"]
            print(
                f"| {name} | {row['p50_ms']:.0f} | {row['p90_ms']:.0f} | {row['mean_ms']:.0f} "
                f"| {row['max_ms']:.0f} | {rate:.1f} |"
            )
        print(
            f"ratio Suanli/sbatch: p50 {s['p50_ms'] / b['p50_ms']:.2f}, "
            f"mean {s['mean_ms'] / b['mean_ms']:.2f}; "
            f"throughput {rates['suanli'] / rates['sbatch']:.2f}"
        )
    finally:
        server.terminate()
        server.wait(20)
        subprocess.run([str(ROOT / "scripts" / "slurm"), "stop", str(cluster_dir)], check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()

"""The test Slurm cluster of scripts/slurm, started and stopped for a test module: Debian's
Slurm 22.05 with munged, slurmctld, two slurmd (node1, node2, 8 fake GPUs each) and
slurmrestd on loopback. Its directory is under /tmp (munged and slurmrestd run as their own
users, so pytest's private tmp directories will not do). Needs root and Debian's package
archive (the script installs the packages if missing).
"""

import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm"


@dataclass
class Cluster:
    dir: Path
    info: dict[str, str]  # the KEY=VALUE lines scripts/slurm printed
    env: dict[str, str]  # for Slurm's commands: this environment with SLURM_CONF
    start_seconds: float

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed ({done.returncode}): {done.stderr}")
        return done

    def sbatch(self, *args: str) -> int:
        return int(self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (finished jobs stay MinJobAge seconds)."""
        text = self.run("scontrol", "show", "job", "--oneliner", str(job_id)).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait_for_state(self, job_id: int, states: set[str], seconds: float = 30) -> str:
        deadline = time.monotonic() + seconds
        while True:
            state = self.job(job_id)["JobState"]
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {state} after {seconds} s, not {states}")
            time.sleep(0.2)

    def script(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), action, str(self.dir)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )


def free_port_base() -> int:
    """Four consecutive free loopback ports below Linux's ephemeral range (where srun's and
    clients' own ports come from), so that parallel runs and a developer's Slurm keep off."""
    for _ in range(100):
        base = random.randrange(20000, 32000)
        try:
            for port in range(base, base + 4):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no four consecutive free ports found on 127.0.0.1")


def parse(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if re.match(r"^[A-Z_]+=", line))


def live_processes_with(variable: str) -> list[str]:
    """Processes (not zombies) having VARIABLE (NAME=value) in their environment: the
    daemons get SLURM_CONF from the script, jobs from their submitter."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z" and variable.encode() in environ:
            found.append(f"{entry.name} {command}")
    return found


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """Start a cluster in a fresh directory under /tmp, on free ports; stop it at the end and
    check that nothing of it is left running."""
    directory = Path(tempfile.mkdtemp(prefix="suanli-slurm-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SUANLI_SLURM_PORT_BASE"] = str(free_port_base())
    cluster = Cluster(directory, {}, env, 0.0)
    try:
        began = time.monotonic()
        started = cluster.script("start")
        cluster.start_seconds = time.monotonic() - began
        print(f"scripts/slurm start took {cluster.start_seconds:.1f} s:\n{started.stderr}")
        assert started.returncode == 0, f"scripts/slurm start failed:\n{started.stderr}"
        cluster.info = parse(started.stdout)
        env["SLURM_CONF"] = cluster.info["SLURM_CONF"]
        yield cluster
    finally:
        stopped = cluster.script("stop")
        left = live_processes_with(f"SLURM_CONF={directory}/etc/slurm.conf")
        shutil.rmtree(directory, ignore_errors=True)
        assert stopped.returncode == 0, f"scripts/slurm stop failed:\n{stopped.stderr}"
        assert not left, f"still running after scripts/slurm stop: {left}"

"""The test Slurm cluster of scripts/slurm, for real: Debian's Slurm 22.05 with munged,
slurmctld, two slurmd (node1, node2, 8 fake GPUs each) and slurmrestd on loopback.

One cluster serves the module; it is started in a fresh directory under /tmp (munged and
slurmrestd run as their own users, so pytest's private tmp directories will not do), on
free ports, and always stopped at the end. Needs root and Debian's package archive (the
script installs the packages if missing). Nothing is skipped: where Slurm cannot run, these
tests fail and say why.
"""

import getpass
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm"
# Installing the packages (first run on a machine) comes on top of the per-test limit.
pytestmark = pytest.mark.timeout(300)


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


def _free_port_base() -> int:
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


def _parse(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if re.match(r"^[A-Z_]+=", line))


def _live_processes_with(variable: str) -> list[str]:
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="suanli-slurm-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SUANLI_SLURM_PORT_BASE"] = str(_free_port_base())
    cluster = Cluster(directory, {}, env, 0.0)
    try:
        began = time.monotonic()
        started = cluster.script("start")
        cluster.start_seconds = time.monotonic() - began
        print(f"scripts/slurm start took {cluster.start_seconds:.1f} s:\n{started.stderr}")
        assert started.returncode == 0, f"scripts/slurm start failed:\n{started.stderr}"
        cluster.info = _parse(started.stdout)
        env["SLURM_CONF"] = cluster.info["SLURM_CONF"]
        yield cluster
    finally:
        stopped = cluster.script("stop")
        left = _live_processes_with(f"SLURM_CONF={directory}/etc/slurm.conf")
        shutil.rmtree(directory, ignore_errors=True)
        assert stopped.returncode == 0, f"scripts/slurm stop failed:\n{stopped.stderr}"
        assert not left, f"still running after scripts/slurm stop: {left}"


def test_the_script_prints_what_a_client_needs(cluster: Cluster) -> None:
    print(f"installed (if needed) and started in {cluster.start_seconds:.1f} s")
    assert cluster.info["SLURM_CONF"] == f"{cluster.dir}/etc/slurm.conf"
    port = int(cluster.env["SUANLI_SLURM_PORT_BASE"]) + 3
    assert cluster.info["SLURMRESTD_URL"] == f"http://127.0.0.1:{port}"
    assert cluster.info["SLURMRESTD_API"] == "v0.0.38"
    assert cluster.info["SLURM_NODES"] == "node1,node2"
    assert cluster.info["SLURM_GPUS_PER_NODE"] == "8"
    assert cluster.info["SLURM_PARTITION"] == "debug"


def test_sinfo_shows_two_idle_nodes_with_eight_gpus(cluster: Cluster) -> None:
    lines = cluster.run("sinfo", "--noheader", "--Node", "--format=%N|%t|%G|%c|%m|%P").stdout
    assert sorted(lines.split()) == [
        "node1|idle|gpu:8|16|32768|debug*",
        "node2|idle|gpu:8|16|32768|debug*",
    ]


def test_a_one_gpu_job_sees_its_gpu_and_completes(cluster: Cluster) -> None:
    out = cluster.dir / "one-gpu.out"
    job_id = cluster.sbatch(
        "--gres=gpu:1",
        f"--output={out}",
        "--wrap",
        'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"',
    )
    assert cluster.wait_for_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"}) == "COMPLETED"
    assert re.fullmatch(r"CUDA_VISIBLE_DEVICES=[0-7]\n", out.read_text())
    job = cluster.job(job_id)
    assert job["ExitCode"] == "0:0" and job["TresPerNode"] == "gres:gpu:1"
    # No sacct here (no slurmdbd): squeue -t all and the job-completion file keep the end.
    state = cluster.run("squeue", "--noheader", "-t", "all", "-j", str(job_id), "-o", "%T")
    assert state.stdout.strip() == "COMPLETED"
    completions = Path(cluster.info["SLURM_JOBCOMP"]).read_text()
    assert re.search(rf"^JobId={job_id} .*JobState=COMPLETED", completions, re.MULTILINE)


def test_a_two_node_job_runs_a_task_on_each_node(cluster: Cluster) -> None:
    out = cluster.dir / "two-nodes.out"
    job_id = cluster.sbatch(
        "--nodes=2",
        f"--output={out}",
        "--wrap",
        "srun --label printenv SLURMD_NODENAME SLURM_PROCID SLURM_NNODES",
    )
    assert cluster.wait_for_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"}) == "COMPLETED"
    by_task: dict[str, list[str]] = {}
    for line in out.read_text().splitlines():
        task, value = line.split(":", 1)
        by_task.setdefault(task.strip(), []).append(value.strip())
    assert by_task == {"0": ["node1", "0", "2"], "1": ["node2", "1", "2"]}
    assert cluster.job(job_id)["NodeList"] == "node[1-2]"


def test_nine_gpus_on_one_node_are_refused_at_submission(cluster: Cluster) -> None:
    refused = cluster.run(
        "sbatch", "--nodes=1", "--gres=gpu:9", "--job-name=nine-gpus", "--wrap", "true", check=False
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "sbatch: error: Batch job submission failed: Requested node configuration is not available"
    )
    # The refused job still got an id and is kept as FAILED for BadConstraints.
    kept = cluster.run("squeue", "--noheader", "-t", "all", "-n", "nine-gpus", "-o", "%T %r %b")
    assert kept.stdout.split() == ["FAILED", "BadConstraints", "gres:gpu:9"]


def test_scancel_ends_a_running_sleep(cluster: Cluster) -> None:
    job_id = cluster.sbatch("--output=/dev/null", "--wrap", "sleep 300")
    cluster.wait_for_state(job_id, {"RUNNING"})
    deadline = time.monotonic() + 10
    while not _live_processes_with(f"SLURM_JOB_ID={job_id}"):  # the batch shell and sleep
        assert time.monotonic() < deadline, "the job's processes never showed up"
        time.sleep(0.1)
    cluster.run("scancel", str(job_id))
    assert cluster.wait_for_state(job_id, {"CANCELLED", "COMPLETED", "FAILED"}) == "CANCELLED"
    deadline = time.monotonic() + 15
    while left := _live_processes_with(f"SLURM_JOB_ID={job_id}"):
        assert time.monotonic() < deadline, f"still running after scancel: {left}"
        time.sleep(0.1)


def _token(cluster: Cluster, user: str) -> str:
    # `scontrol token` prints SLURM_JWT=<token>; root (SlurmUser) may mint one for anyone.
    printed = cluster.run("scontrol", "token", f"username={user}", "lifespan=600").stdout
    assert printed.startswith("SLURM_JWT=")
    return printed.strip().removeprefix("SLURM_JWT=")


def test_slurmrestd_answers_with_a_jwt(cluster: Cluster) -> None:
    user = getpass.getuser()
    api = f"{cluster.info['SLURMRESTD_URL']}/slurm/{cluster.info['SLURMRESTD_API']}"
    headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": _token(cluster, user)}
    with httpx.Client(timeout=10) as http:
        diag = http.get(f"{api}/diag", headers=headers)
        assert diag.status_code == 200, diag.text
        assert diag.json()["errors"] == []
        assert diag.json()["meta"]["Slurm"]["release"].startswith("22.05.")
        assert isinstance(diag.json()["statistics"]["jobs_submitted"], int)
        ping = http.get(f"{api}/ping", headers=headers)
        assert ping.status_code == 200, ping.text
        assert [p["ping"] for p in ping.json()["pings"]] == ["UP"]
        # Without a token slurmrestd itself refuses (401); a bad token reaches slurmctld,
        # which refuses it, and slurmrestd answers 500 with the failure in "errors".
        assert http.get(f"{api}/ping").status_code == 401
        forged = {**headers, "X-SLURM-USER-TOKEN": headers["X-SLURM-USER-TOKEN"][:-2] + "xx"}
        bad = http.get(f"{api}/ping", headers=forged)
        assert bad.status_code == 500 and bad.json()["errors"], bad.text


def test_slurmrestd_submits_a_two_gpu_job(cluster: Cluster) -> None:
    user = getpass.getuser()
    api = f"{cluster.info['SLURMRESTD_URL']}/slurm/{cluster.info['SLURMRESTD_API']}"
    headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": _token(cluster, user)}
    out = cluster.dir / "rest.out"
    job = {
        "name": "rest-two-gpus",
        "gres": "gpu:2",
        "current_working_directory": str(cluster.dir),
        "standard_output": str(out),
        "environment": {"PATH": "/usr/bin:/bin"},  # required: "environment must be set"
    }
    script = '#!/bin/sh\necho "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"\n'
    with httpx.Client(timeout=10) as http:
        submitted = http.post(
            f"{api}/job/submit", headers=headers, json={"script": script, "job": job}
        )
        assert submitted.status_code == 200, submitted.text
        job_id = submitted.json()["job_id"]
        assert cluster.wait_for_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"}) == "COMPLETED"
        shown = http.get(f"{api}/job/{job_id}", headers=headers).json()["jobs"][0]
    assert shown["job_state"] == "COMPLETED" and shown["user_name"] == user
    assert re.fullmatch(r"CUDA_VISIBLE_DEVICES=[0-7],[0-7]\n", out.read_text())


def test_start_on_a_running_cluster_restarts_it(cluster: Cluster) -> None:
    again = cluster.script("start")
    assert again.returncode == 0, again.stderr
    assert "a cluster is running in" in again.stderr and "restarting it" in again.stderr
    assert _parse(again.stdout) == cluster.info
    states = cluster.run("sinfo", "--noheader", "--Node", "--format=%N %t").stdout
    assert sorted(states.splitlines()) == ["node1 idle", "node2 idle"]
    assert cluster.run("squeue", "--noheader", "-t", "all").stdout == ""  # state starts empty


def test_stop_ends_every_process_of_the_cluster(cluster: Cluster) -> None:
    job_id = cluster.sbatch("--nodes=2", "--output=/dev/null", "--wrap", "srun sleep 300")
    cluster.wait_for_state(job_id, {"RUNNING"})
    stopped = cluster.script("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not _live_processes_with(f"SLURM_CONF={cluster.info['SLURM_CONF']}")
    assert cluster.script("stop").returncode == 0  # idempotent

"""The test Slurm cluster of scripts/slurm, for real: Debian's Slurm 22.05 with munged,
slurmctld, two slurmd (node1, node2, 8 fake GPUs each) and slurmrestd on loopback.

One cluster serves the module; it is started in a fresh directory under /tmp (munged and
slurmrestd run as their own users, so pytest's private tmp directories will not do), on
free ports, and always stopped at the end. Needs root and Debian's package archive (the
script installs the packages if missing). Nothing is skipped: where Slurm cannot run, these
tests fail and say why.
"""

import getpass
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from slurmcluster import Cluster, live_processes_with, parse, running_cluster

# Installing the packages (first run on a machine) comes on top of the per-test limit.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as started:
        yield started


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
    while not live_processes_with(f"SLURM_JOB_ID={job_id}"):  # the batch shell and sleep
        assert time.monotonic() < deadline, "the job's processes never showed up"
        time.sleep(0.1)
    cluster.run("scancel", str(job_id))
    assert cluster.wait_for_state(job_id, {"CANCELLED", "COMPLETED", "FAILED"}) == "CANCELLED"
    deadline = time.monotonic() + 15
    while left := live_processes_with(f"SLURM_JOB_ID={job_id}"):
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
    assert parse(again.stdout) == cluster.info
    states = cluster.run("sinfo", "--noheader", "--Node", "--format=%N %t").stdout
    assert sorted(states.splitlines()) == ["node1 idle", "node2 idle"]
    assert cluster.run("squeue", "--noheader", "-t", "all").stdout == ""  # state starts empty


def test_stop_ends_every_process_of_the_cluster(cluster: Cluster) -> None:
    job_id = cluster.sbatch("--nodes=2", "--output=/dev/null", "--wrap", "srun sleep 300")
    cluster.wait_for_state(job_id, {"RUNNING"})
    stopped = cluster.script("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not live_processes_with(f"SLURM_CONF={cluster.info['SLURM_CONF']}")
    assert cluster.script("stop").returncode == 0  # idempotent

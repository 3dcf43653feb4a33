"""The pure translation between Suanli and Slurm: host lists and gres strings, nodes as hosts,
jobs as statuses, and launches as batch scripts and job descriptions. No Slurm here: the batch
scripts run under bash with fake `scontrol`, `srun` and launchers first on PATH, so what a
user's values become in the shell is checked by a shell, not by reading the text."""

import json
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from suanli.backends.base import ExitStatus, LaunchSpec, Limits, Status
from suanli.backends.slurm.translate import (
    BASE_ENVIRONMENT,
    batch_script,
    expand_hostlist,
    gpus_of,
    host_of,
    job_description,
    sbatch_arguments,
    status_of,
)
from suanli.gpu.model import Gpu, Host
from suanli.scheduler.model import Placement

MIB = 2**20
HANDLE = {"slurm_job_id": 42, "user": "alice", "max_duration": None}
NOW = 5000.0

# -- host lists and gres ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("node[1-3,7]", ["node1", "node2", "node3", "node7"]),
        ("gpu-a[01-02]", ["gpu-a01", "gpu-a02"]),
        ("node[8-10]", ["node8", "node9", "node10"]),
        ("node[098-100]", ["node098", "node099", "node100"]),
        ("login", ["login"]),
        ("login,head", ["login", "head"]),
        ("a[1-2],b,c[5]", ["a1", "a2", "b", "c5"]),
        ("rack[1-2]-ib", ["rack1-ib", "rack2-ib"]),
        (
            "node[1-3,7],gpu-a[01-02],login",
            ["node1", "node2", "node3", "node7", "gpu-a01", "gpu-a02", "login"],
        ),
        ("", []),
    ],
)
def test_expand_hostlist(text: str, names: list[str]) -> None:
    assert expand_hostlist(text) == names


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("gpu:8", [(None, 8)]),
        ("gpu:a100:4(S:0-1)", [("a100", 4)]),
        ("gpu:8(S:0-1)", [(None, 8)]),
        ("gpu:a100:2,gpu:v100:2", [("a100", 2), ("v100", 2)]),
        ("gpu:a100:2(S:0,1),gpu:v100:2(S:1)", [("a100", 2), ("v100", 2)]),
        ("gpu:a100:4(S:0-1),shard:4", [("a100", 4)]),
        ("shard:4", []),
        ("mps:100", []),
        ("", []),
    ],
)
def test_gpus_of(gres: str, gpus: list[tuple[str | None, int]]) -> None:
    assert gpus_of(gres) == gpus


# -- nodes as hosts -----------------------------------------------------------------------


def node(**fields: Any) -> dict[str, Any]:
    """A node as slurmrestd v0.0.38 (and `sinfo --json`) writes it."""
    return {
        "name": "gpu-a01",
        "cpus": 64,
        "real_memory": 515_000,
        "temporary_disk": 100,
        "gres": "gpu:a100:2(S:0-1),gpu:v100:1",
        "state": "idle",
        "state_flags": [],
        "reason": "",
        "partitions": ["gpu", "debug"],
        **fields,
    }


def test_host_of_an_idle_node() -> None:
    assert host_of(node()) == Host(
        name="gpu-a01",
        cpus=64,
        memory_bytes=515_000 * MIB,
        disk_total_bytes=100 * MIB,
        disk_free_bytes=0,
        gpus=(
            Gpu(index=0, uuid="slurm-gpu-a01-gpu0", model="a100", memory_bytes=0),
            Gpu(index=1, uuid="slurm-gpu-a01-gpu1", model="a100", memory_bytes=0),
            Gpu(index=2, uuid="slurm-gpu-a01-gpu2", model="v100", memory_bytes=0),
        ),
        state="idle",
        reason="",
        available=True,
        pools=("gpu", "debug"),
    )


def test_host_of_untyped_gpus_and_no_gres() -> None:
    host = host_of(node(name="n7", gres="gpu:2"))
    assert [(g.index, g.uuid, g.model) for g in host.gpus] == [
        (0, "slurm-n7-gpu0", "GPU"),
        (1, "slurm-n7-gpu1", "GPU"),
    ]
    assert host_of(node(gres="")).gpus == ()
    assert host_of(node(gres=None)).gpus == ()
    assert host_of(node(gres="shard:4")).gpus == ()


@pytest.mark.parametrize(
    ("state", "flags", "shown", "available"),
    [
        ("idle", [], "idle", True),
        ("mixed", [], "mixed", True),
        ("allocated", [], "allocated", True),
        ("mixed", ["DRAIN"], "mixed+drain", False),
        ("idle", ["NOT_RESPONDING"], "idle+not_responding", False),
        ("idle", ["DRAIN", "NOT_RESPONDING"], "idle+drain+not_responding", False),
        ("idle", ["COMPLETING"], "idle+completing", True),
        ("down", [], "down", False),
        ("DOWN", [], "down", False),
        ("idle", ["drain"], "idle+drain", False),
        (None, [], "unknown", False),
    ],
)
def test_host_of_state(state: str | None, flags: list[str], shown: str, available: bool) -> None:
    host = host_of(node(state=state, state_flags=flags, reason="bad gpu"))
    assert (host.state, host.available, host.reason) == (shown, available, "bad gpu")


def test_host_of_a_sparse_node() -> None:
    """Fields slurmrestd leaves out or null do not break the inventory."""
    host = host_of({"name": "n1"})
    assert host == Host(
        name="n1",
        cpus=0,
        memory_bytes=0,
        disk_total_bytes=0,
        disk_free_bytes=0,
        state="unknown",
        available=False,
    )


# -- jobs as statuses ---------------------------------------------------------------------


def job(state: str, **fields: Any) -> dict[str, Any]:
    """A job as slurmrestd v0.0.38 (and `squeue --json`) writes it."""
    return {"job_id": 42, "job_state": state, "state_reason": "None", "restart_cnt": 0, **fields}


def ended(state: str, **fields: Any) -> dict[str, Any]:
    return job(state, **{"nodes": "node1", "start_time": 1000, "end_time": 1060, **fields})


PLACED = {"node": "node1", "gpus": []}
MINUTE = {"wall_seconds": 60.0}


def test_a_job_slurm_forgot_is_lost() -> None:
    status = status_of(None, HANDLE, now=NOW, timed_out=False)
    assert status.running is False
    assert status.exit is not None
    assert status.exit.reason == "lost"
    assert "Slurm no longer knows job 42 " in status.exit.detail


@pytest.mark.parametrize("reason", ["Resources", "Priority"])
def test_pending_is_running_and_queued(reason: str) -> None:
    status = status_of(job("PENDING", state_reason=reason), HANDLE, now=NOW, timed_out=False)
    assert status == Status(running=True, queued=reason)


def test_pending_without_a_reason_shows_its_state() -> None:
    status = status_of(job("CONFIGURING", state_reason=None), HANDLE, now=NOW, timed_out=False)
    assert status == Status(running=True, queued="CONFIGURING")


RESTARTED = "Slurm restarted it (1×) after its node failed"


@pytest.mark.parametrize("state", ["PENDING", "REQUEUED", "REQUEUE_HOLD", "RUNNING"])
def test_a_restart_ends_this_attempt_in_every_state(state: str) -> None:
    """Queued again, or already running again on another node between two looks: this
    attempt ended with its first run (the backend cancels the restart)."""
    requeued = job(state, restart_cnt=1, state_reason="BeginTime", nodes="node2", start_time=2000)
    assert status_of(requeued, HANDLE, now=NOW, timed_out=False) == Status(
        running=False, exit=ExitStatus("node_failed", detail=RESTARTED)
    )


def test_a_restart_that_already_ran_to_completion_is_not_a_success() -> None:
    """Slurm (JobRequeue=1, or slurmrestd ignoring "requeue": false) ran it again on another
    node and it completed between two polls: not `succeeded` with the first start time."""
    rerun = ended("COMPLETED", exit_code=0, restart_cnt=1, nodes="node2", end_time=1090)
    status = status_of(rerun, HANDLE, now=NOW, timed_out=False)
    assert status.running is False and status.placement is None and status.started_at is None
    assert status.exit == ExitStatus(
        "node_failed", detail=f"{RESTARTED}; the restarted run ended as COMPLETED on node2"
    )
    assert status.exit.ended_at == 1090.0


def test_an_ended_job_says_when_it_ended() -> None:
    """A server that was down learns of the end later: the end is Slurm's end time."""
    status = status_of(ended("COMPLETED", exit_code=0), HANDLE, now=NOW, timed_out=False)
    assert status.exit is not None and status.exit.ended_at == 1060.0


def test_running_reports_placement_across_nodes() -> None:
    running = job(
        "RUNNING",
        nodes="node[1-2]",
        gres_detail=["gpu:2(IDX:0-1)", "gpu:a100:3(IDX:4,6-7)"],
        start_time=1000,
    )
    assert status_of(running, HANDLE, now=NOW, timed_out=False) == Status(
        running=True,
        placement={
            "node": "node[1-2]",
            "gpus": [
                {"uuid": "slurm-node1-gpu0"},
                {"uuid": "slurm-node1-gpu1"},
                {"uuid": "slurm-node2-gpu4"},
                {"uuid": "slurm-node2-gpu6"},
                {"uuid": "slurm-node2-gpu7"},
            ],
        },
        started_at=1000.0,
    )


def test_running_without_gpus() -> None:
    running = job(
        "RUNNING", nodes="node3", gres_detail=[], start_time={"set": True, "number": 1000}
    )
    assert status_of(running, HANDLE, now=NOW, timed_out=False) == Status(
        running=True, placement={"node": "node3", "gpus": []}, started_at=1000.0
    )


def test_completed_is_its_exit_code() -> None:
    status = status_of(ended("COMPLETED", exit_code=0), HANDLE, now=NOW, timed_out=False)
    assert status == Status(
        running=False,
        exit=ExitStatus("exit_code", exit_code=0, detail="", usage=MINUTE),
        placement=PLACED,
        started_at=1000.0,
    )


def test_completed_past_the_maximum_is_still_its_exit_code() -> None:
    """It ended on its own; `timed_out` is about what stopped it, and nothing did."""
    handle = {**HANDLE, "max_duration": 30}
    status = status_of(ended("COMPLETED", exit_code=0), handle, now=NOW, timed_out=True)
    assert status.exit == ExitStatus("exit_code", exit_code=0, detail="", usage=MINUTE)


def test_failed_with_an_exit_status() -> None:
    failed = ended("FAILED", exit_code=768, state_reason="NonZeroExitCode")
    assert status_of(failed, HANDLE, now=NOW, timed_out=False) == Status(
        running=False,
        exit=ExitStatus("exit_code", exit_code=3, detail="Slurm: FAILED", usage=MINUTE),
        placement=PLACED,
        started_at=1000.0,
    )


@pytest.mark.parametrize("raw", [9, 9 | 0x80])  # killed by SIGKILL; with a core dump
def test_failed_by_a_signal(raw: int) -> None:
    status = status_of(ended("FAILED", exit_code=raw), HANDLE, now=NOW, timed_out=False)
    assert status.exit == ExitStatus("signal", signal=9, detail="Slurm: FAILED", usage=MINUTE)


def test_timeout() -> None:
    timeout = ended("TIMEOUT", exit_code=0, state_reason="TimeLimit")
    status = status_of(timeout, HANDLE, now=NOW, timed_out=False)
    assert status.exit == ExitStatus("timeout", detail="Slurm: TIMEOUT (TimeLimit)", usage=MINUTE)


def test_cancelled() -> None:
    status = status_of(ended("CANCELLED", exit_code=15), HANDLE, now=NOW, timed_out=False)
    assert status.exit == ExitStatus("cancelled", detail="Slurm: CANCELLED", usage=MINUTE)


def test_cancelled_at_the_maximum_duration_is_a_timeout() -> None:
    """A server restarted after stopping it no longer remembers why: the wall time tells."""
    cancelled = ended("CANCELLED", exit_code=15)
    at_limit = {**HANDLE, "max_duration": 60}
    below = {**HANDLE, "max_duration": 61}
    assert status_of(cancelled, at_limit, now=NOW, timed_out=False).exit == ExitStatus(
        "timeout", detail="Slurm: CANCELLED", usage=MINUTE
    )
    assert status_of(cancelled, below, now=NOW, timed_out=False).exit.reason == "cancelled"
    assert status_of(cancelled, below, now=NOW, timed_out=True).exit.reason == "timeout"


def test_node_fail_names_the_nodes() -> None:
    failed = ended("NODE_FAIL", exit_code=0, nodes="node[1-2]", state_reason="NodeDown")
    status = status_of(failed, HANDLE, now=NOW, timed_out=False)
    assert status.exit == ExitStatus("node_failed", detail="node[1-2]", usage=MINUTE)
    assert status.placement == {"node": "node[1-2]", "gpus": []}


def test_out_of_memory() -> None:
    status = status_of(ended("OUT_OF_MEMORY", exit_code=0), HANDLE, now=NOW, timed_out=False)
    assert status.exit == ExitStatus("oom", detail="Slurm: OUT_OF_MEMORY", usage=MINUTE)


def test_preempted_and_other_ends() -> None:
    preempted = status_of(ended("PREEMPTED"), HANDLE, now=NOW, timed_out=False)
    assert preempted.exit == ExitStatus("preempted", detail="Slurm: PREEMPTED", usage=MINUTE)
    boot_fail = status_of(ended("BOOT_FAIL"), HANDLE, now=NOW, timed_out=False)
    assert boot_fail.exit == ExitStatus("lost", detail="Slurm: BOOT_FAIL", usage=MINUTE)


def test_times_as_number_objects() -> None:
    """Newer slurmrestd writes times as {"set": ..., "number": ...}."""
    completed = job(
        "COMPLETED",
        exit_code=0,
        nodes="node1",
        start_time={"set": True, "number": 1000},
        end_time={"set": True, "number": 1090},
    )
    status = status_of(completed, HANDLE, now=NOW, timed_out=False)
    assert (status.started_at, status.exit.usage) == (1000.0, {"wall_seconds": 90.0})


@pytest.mark.parametrize(
    "start", [0, None, {"set": False, "number": 0}, {"set": True, "number": 0}]
)
def test_a_job_that_never_started_has_no_start_or_usage(start: Any) -> None:
    cancelled = job("CANCELLED", start_time=start, end_time=1060)
    status = status_of(cancelled, {**HANDLE, "max_duration": 1}, now=NOW, timed_out=False)
    assert status == Status(
        running=False, exit=ExitStatus("cancelled", detail="Slurm: CANCELLED"), started_at=None
    )


def test_an_end_slurm_has_not_written_yet_is_now() -> None:
    failed = job("FAILED", exit_code=256, nodes="node1", start_time=1000, end_time=0)
    status = status_of(failed, HANDLE, now=NOW, timed_out=False)
    assert status.exit == ExitStatus(
        "exit_code", exit_code=1, detail="Slurm: FAILED", usage={"wall_seconds": NOW - 1000}
    )


# -- launches as job descriptions ---------------------------------------------------------


def spec(tmp_path: Path, **fields: Any) -> LaunchSpec:
    values: dict[str, Any] = {
        "job_id": 7,
        "argv": ("python", "train.py"),
        "workdir": tmp_path / "work",
        "env": {},
        "placement": Placement(node=""),
        "limits": Limits(),
        "log_path": tmp_path / "job.log",
        "state_dir": tmp_path / "state",
        "name": "train",
        "user": "alice",
    }
    return LaunchSpec(**{**values, **fields})


def test_job_description_in_full(tmp_path: Path) -> None:
    launch = spec(
        tmp_path,
        limits=Limits(cpus=2.5, memory_bytes=3 * 2**30 + 1),
        gpus=2,
        gpu_model="a100",
        nodes=2,
        max_duration=121,
        pool="big",
    )
    assert job_description(launch, partition="default") == {
        "name": "train",
        "comment": "suanli job 7",
        "current_working_directory": str(tmp_path / "work"),
        "standard_output": str(tmp_path / "job.log"),
        "standard_error": str(tmp_path / "job.log"),
        "open_mode": "append",
        "nodes": 2,
        "tasks_per_node": 1,
        "cpus_per_task": 3,
        "requeue": False,
        "environment": BASE_ENVIRONMENT,
        "memory_per_node": 3 * 1024 + 1,
        "gres": "gpu:a100:2",
        "time_limit": 4,
        "partition": "big",
    }


def test_job_description_with_defaults(tmp_path: Path) -> None:
    launch = spec(tmp_path, name="", gpus=4)
    job = job_description(launch, partition="default")
    assert job["name"] == "suanli-7"
    assert job["gres"] == "gpu:4"
    assert job["cpus_per_task"] == 1
    assert job["partition"] == "default"
    assert "memory_per_node" not in job
    assert "time_limit" not in job
    assert job["environment"] == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    assert job["environment"] is not BASE_ENVIRONMENT
    without = job_description(spec(tmp_path), partition=None)
    assert "partition" not in without
    assert "gres" not in without


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(1, 2), (59.5, 2), (60, 2), (61, 3), (3600, 61), (3601, 62)]
)
def test_time_limit_is_a_minute_past_the_maximum(
    seconds: float, minutes: int, tmp_path: Path
) -> None:
    launch = spec(tmp_path, max_duration=seconds)
    assert job_description(launch, partition=None)["time_limit"] == minutes


def test_memory_rounds_up_to_whole_mebibytes(tmp_path: Path) -> None:
    for memory, mib in [(1, 1), (MIB, 1), (MIB + 1, 2), (4 * 2**30, 4096)]:
        launch = spec(tmp_path, limits=Limits(memory_bytes=memory))
        assert job_description(launch, partition=None)["memory_per_node"] == mib


def test_a_long_name_is_cut_to_slurms_limit(tmp_path: Path) -> None:
    launch = spec(tmp_path, name="x" * 200)
    assert job_description(launch, partition=None)["name"] == "x" * 128


def test_sbatch_arguments_for_a_full_description() -> None:
    job = {
        "name": "train run",
        "comment": "suanli job 7",
        "current_working_directory": "/data/work",
        "standard_output": "/data/job.log",
        "standard_error": "/data/job.log",
        "open_mode": "append",
        "nodes": 2,
        "tasks_per_node": 1,
        "cpus_per_task": 3,
        "requeue": False,
        "environment": dict(BASE_ENVIRONMENT),
        "memory_per_node": 1024,
        "gres": "gpu:2",
        "time_limit": 3,
        "partition": "big",
    }
    assert sbatch_arguments(job) == [
        "--job-name=train run",
        "--comment=suanli job 7",
        "--partition=big",
        "--chdir=/data/work",
        "--output=/data/job.log",
        "--error=/data/job.log",
        "--open-mode=append",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=3",
        "--gres=gpu:2",
        "--time=3",
        "--mem=1024M",
        "--no-requeue",
    ]


def test_sbatch_arguments_leave_out_what_is_not_set() -> None:
    assert sbatch_arguments({"name": "x", "nodes": 1}) == ["--job-name=x", "--nodes=1"]
    assert sbatch_arguments({"requeue": True}) == []


# -- launches as batch scripts ------------------------------------------------------------

SLURM_JOB_ID = 123456  # its port: 20000 + 3456
ENV_KEYS = [
    "MASTER_ADDR",
    "MASTER_PORT",
    "NNODES",
    "NODE_RANK",
    "GPUS_PER_NODE",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "SUANLI_JOB_ID",
    "LANG",
    "SLURM_CONF",
    "QUOTED",
    "SUBSTITUTED",
    "MULTILINE",
    "EMPTY",
]
# Prints what the process got: its environment and argv, one JSON line.
REPORT = (
    "import json, os, sys; "
    f"print(json.dumps({{'env': {{k: os.environ.get(k) for k in {ENV_KEYS!r}}}, "
    "'argv': sys.argv[1:]}))"
)


def _fake_tools(tmp_path: Path) -> Path:
    """`scontrol` as on a cluster of node1 (10.0.0.7) and node2; `srun` that runs its command
    once per node with SLURM_NODEID set; `torchrun` and `mpirun` that print their argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    tools = {
        "scontrol": f"""#!/bin/bash
echo "scontrol $*" >> {calls}
case "$1 $2" in
  "show hostnames") echo node1; echo node2 ;;
  "show node") echo "NodeName=$4 Arch=x86_64 CoresPerSocket=8 NodeAddr=10.0.0.7 \\
NodeHostName=$4 Version=23.02.7" | tr -d '\\n' ; echo ;;
esac
""",
        "srun": f"""#!/bin/bash
echo "srun $*" >> {calls}
for id in 0 1; do SLURM_NODEID=$id "${{@: -3}}"; done
""",
        "torchrun": f"#!{sys.executable}\nimport json, os, sys\n"
        "print(json.dumps({'launcher': sys.argv[1:], 'NODE_RANK': os.environ['NODE_RANK']}))\n",
        "mpirun": f"#!{sys.executable}\nimport json, sys\n"
        "print(json.dumps({'launcher': sys.argv[1:]}))\n",
    }
    for name, text in tools.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def run_script(tmp_path: Path, script: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Runs the batch script as Slurm would on the first node: each JSON line it printed,
    and each call of the fake Slurm tools."""
    path = tmp_path / "batch.sh"
    path.write_text(script)
    # Only what Slurm sets itself (sbatch --export=NONE): the script brings the rest.
    env = {"SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_ID": str(SLURM_JOB_ID)}
    done = subprocess.run(
        ["/bin/bash", str(path)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    calls = tmp_path / "calls"
    return (
        [json.loads(line) for line in done.stdout.splitlines()],
        calls.read_text().splitlines() if calls.exists() else [],
    )


def script_spec(tmp_path: Path, **fields: Any) -> LaunchSpec:
    bin_dir = _fake_tools(tmp_path)
    pwned = tmp_path / "pwned"
    return spec(
        tmp_path,
        argv=(sys.executable, "-c", REPORT, "a b", f"$(touch {pwned})", "it's", "", "x\ny", "*"),
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "QUOTED": f"""say "hi" it's `touch {pwned}` ${{HOME}} \\n""",
            "SUBSTITUTED": f"$(touch {pwned}); touch {pwned}",
            "MULTILINE": "line one\nline two\n",
            "EMPTY": "",
        },
        **fields,
    )


USER_ARGV = ["a b", "$(touch {pwned})", "it's", "", "x\ny", "*"]


def _user_argv(tmp_path: Path) -> list[str]:
    return [arg.format(pwned=tmp_path / "pwned") for arg in USER_ARGV]


def test_one_node_script_exports_everything_verbatim(tmp_path: Path) -> None:
    launch = script_spec(tmp_path)
    outputs, calls = run_script(tmp_path, batch_script(launch, slurm_conf="/etc/slurm/x.conf"))
    pwned = tmp_path / "pwned"
    assert outputs == [
        {
            "env": {
                "MASTER_ADDR": "10.0.0.7",
                "MASTER_PORT": "23456",
                "NNODES": "1",
                "NODE_RANK": "0",
                "GPUS_PER_NODE": "0",
                "RANK": "0",
                "LOCAL_RANK": "0",
                "WORLD_SIZE": "1",
                "SUANLI_JOB_ID": "7",
                "LANG": "C.UTF-8",
                "SLURM_CONF": "/etc/slurm/x.conf",
                "QUOTED": f"""say "hi" it's `touch {pwned}` ${{HOME}} \\n""",
                "SUBSTITUTED": f"$(touch {pwned}); touch {pwned}",
                "MULTILINE": "line one\nline two\n",
                "EMPTY": "",
            },
            "argv": _user_argv(tmp_path),
        }
    ]
    assert not pwned.exists()
    assert calls == [
        "scontrol show hostnames node[1-2]",
        "scontrol show node --oneliner node1",
    ]


def test_one_node_script_text(tmp_path: Path) -> None:
    script = batch_script(spec(tmp_path, env={"B": "2", "A": "x y"}))
    lines = script.splitlines()
    assert lines[:2] == ["#!/bin/bash", "# Suanli job 7, written by Suanli's slurm backend."]
    assert lines[2:7] == [
        "export A='x y'",
        "export B=2",
        "export LANG=C.UTF-8",
        "export PATH=/usr/local/bin:/usr/bin:/bin",
        "export SUANLI_JOB_ID=7",
    ]
    assert "MASTER_PORT=$((20000 + SLURM_JOB_ID % 10000))" in lines
    assert lines[-3:] == [
        "NODE_RANK=0",
        'export MASTER_ADDR="$MASTER_ADDR" MASTER_PORT="$MASTER_PORT" NNODES=1 '
        'NODE_RANK="$NODE_RANK" GPUS_PER_NODE=0 RANK="$NODE_RANK" LOCAL_RANK=0 WORLD_SIZE=1',
        "exec python train.py",
    ]
    assert "srun" not in script
    assert "SLURM_CONF" not in script
    assert script.endswith("\n")


def test_the_job_cannot_unset_its_own_id(tmp_path: Path) -> None:
    script = batch_script(spec(tmp_path, env={"SUANLI_JOB_ID": "999"}))
    assert "export SUANLI_JOB_ID=7" in script.splitlines()
    assert "999" not in script


def _srun_line(script: str) -> list[str]:
    """The words of the last command, `exec srun ...`: its inner script spans lines."""
    words = shlex.split(script[script.index("exec srun") :])
    assert words[:2] == ["exec", "srun"]
    return words


def test_two_nodes_run_once_per_node_through_srun(tmp_path: Path) -> None:
    launch = script_spec(tmp_path, nodes=2, gpus=4)
    script = batch_script(launch)
    words = _srun_line(script)
    assert words[2:-3] == [
        "--export=ALL",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
    ]
    assert words[-3:-1] == ["/bin/bash", "-c"]
    inner = words[-1].splitlines()
    assert inner[0] == "NODE_RANK=$SLURM_NODEID"
    assert inner[1].startswith('export MASTER_ADDR="$MASTER_ADDR" ')
    assert inner[2].startswith("exec ")

    outputs, calls = run_script(tmp_path, script)
    assert [(o["env"]["NODE_RANK"], o["env"]["RANK"]) for o in outputs] == [("0", "0"), ("1", "1")]
    for output in outputs:
        assert output["argv"] == _user_argv(tmp_path)
        env = output["env"]
        assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("10.0.0.7", "23456")
        assert (env["NNODES"], env["WORLD_SIZE"], env["GPUS_PER_NODE"]) == ("2", "2", "4")
        assert env["LOCAL_RANK"] == "0"
        assert env["MULTILINE"] == "line one\nline two\n"
    assert not (tmp_path / "pwned").exists()
    assert len([call for call in calls if call.startswith("srun ")]) == 1


def test_torchrun_on_two_nodes(tmp_path: Path) -> None:
    launch = script_spec(tmp_path, nodes=2, gpus=4, launcher="torchrun")
    script = batch_script(launch)
    inner = _srun_line(script)[-1].splitlines()
    command = inner[2]
    assert command.startswith(
        'exec torchrun --nnodes=2 --nproc-per-node=4 --node-rank="$NODE_RANK" '
        '--master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" --no-python '
    )
    assert "RANK=" not in inner[1].replace("NODE_RANK=", "")  # torchrun sets the ranks

    outputs, _ = run_script(tmp_path, script)
    assert outputs == [
        {
            "launcher": [
                "--nnodes=2",
                "--nproc-per-node=4",
                f"--node-rank={rank}",
                "--master-addr=10.0.0.7",
                "--master-port=23456",
                "--no-python",
                sys.executable,
                "-c",
                REPORT,
                *_user_argv(tmp_path),
            ],
            "NODE_RANK": str(rank),
        }
        for rank in (0, 1)
    ]
    assert not (tmp_path / "pwned").exists()


def test_mpirun_runs_once_from_the_first_node(tmp_path: Path) -> None:
    launch = script_spec(tmp_path, nodes=2, gpus=4, launcher="mpirun")
    script = batch_script(launch)
    assert "srun" not in script
    # The user's argv holds a newline: the last command starts on the third line from the end.
    tail = script[script.index("\nNODE_RANK=0\n") + 1 :].splitlines()
    assert tail[1].startswith('export MASTER_ADDR="$MASTER_ADDR" ')
    assert "RANK=" not in tail[1].replace("NODE_RANK=", "")  # mpirun sets the ranks
    assert tail[2].startswith(f"exec mpirun -np 8 {shlex.quote(sys.executable)} -c ")

    outputs, calls = run_script(tmp_path, script)
    assert outputs == [
        {"launcher": ["-np", "8", sys.executable, "-c", REPORT, *_user_argv(tmp_path)]}
    ]
    assert not any(call.startswith("srun") for call in calls)
    assert not (tmp_path / "pwned").exists()


def test_a_path_of_the_jobs_own_replaces_the_base_one(tmp_path: Path) -> None:
    base = batch_script(spec(tmp_path))
    assert "export PATH=/usr/local/bin:/usr/bin:/bin" in base.splitlines()
    own = batch_script(spec(tmp_path, env={"PATH": "/opt/conda/bin:/usr/bin"}))
    assert "export PATH=/opt/conda/bin:/usr/bin" in own.splitlines()
    assert "/usr/local/bin" not in own


def test_a_spec_with_a_placement_is_accepted(tmp_path: Path) -> None:
    """The placement is the local backend's; Slurm places the job itself."""
    launch = replace(spec(tmp_path), placement=Placement(node="elsewhere"))
    assert "elsewhere" not in batch_script(launch)


def test_deepspeed_on_three_nodes(tmp_path: Path) -> None:
    launch = spec(tmp_path, env={"Z": "1", "A": "2"}, nodes=3, launcher="deepspeed", gpus=2)
    script = batch_script(launch)
    assert script == batch_script(launch)  # the same launch, the same script
    words = _srun_line(script)
    assert words[3:5] == ["--nodes=3", "--ntasks=3"]
    inner = words[-1].splitlines()
    assert inner[2] == (
        'exec deepspeed --num_nodes=3 --num_gpus=2 --node_rank="$NODE_RANK" '
        '--master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" --no_ssh --no_python '
        "python train.py"
    )

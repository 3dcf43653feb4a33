"""Between Suanli and Slurm, as pure functions: a launch becomes a batch script and a job
description; Slurm's nodes become hosts; Slurm's view of a job becomes a Status.

Both ways of reaching Slurm (slurmrestd, the command-line tools) speak the same JSON here:
slurmrestd's v0.0.38 job and node objects, which `squeue --json` and `sinfo --json` print too.
"""

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from suanli.backends import launchers
from suanli.backends.base import ExitStatus, LaunchSpec, Status
from suanli.gpu.model import Gpu, Host

MIB = 2**20
# What a job starts with, before its own variables (sbatch runs with --export=NONE).
BASE_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

# Job states (Slurm's `job_state`).
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}

# Node states and flags that take no new work.
UNAVAILABLE_STATES = {"down", "error", "future", "unknown"}
UNAVAILABLE_FLAGS = {
    "DRAIN",
    "DRAINING",
    "DRAINED",
    "FAIL",
    "MAINTENANCE",
    "NOT_RESPONDING",
    "POWERED_DOWN",
    "POWERING_DOWN",
    "REBOOT_REQUESTED",
    "RESERVED",
}

# Placeholders for values only the node knows, rendered as shell words in the script. argv
# cannot hold NUL, so these never collide with what a user wrote.
_NODE_RANK = "\0NODE_RANK\0"
_MASTER_ADDR = "\0MASTER_ADDR\0"
_MASTER_PORT = "\0MASTER_PORT\0"
_SHELL_WORDS = {
    _NODE_RANK: '"$NODE_RANK"',
    _MASTER_ADDR: '"$MASTER_ADDR"',
    _MASTER_PORT: '"$MASTER_PORT"',
}


def job_id_of(handle: Mapping[str, Any]) -> int:
    return int(handle["slurm_job_id"])


# -- submission --------------------------------------------------------------------------


def batch_script(spec: LaunchSpec, *, slurm_conf: str | None = None) -> str:
    """The batch script Slurm runs on the first node. The job's environment is exported
    here (quoted), not handed to sbatch, so no variable of the user's can change how Slurm
    submits the job (SBATCH_*), and both ways of submitting give the job the same one.

    One node runs the command (through its launcher) directly; several run it once per node
    with `srun`, each with its NODE_RANK; `mpirun` is started once and finds the nodes itself.
    """
    env = {**BASE_ENVIRONMENT, **spec.env, "SUANLI_JOB_ID": str(spec.job_id)}
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf  # srun and scontrol inside the job
    lines = [
        "#!/bin/bash",
        f"# Suanli job {spec.job_id}, written by Suanli's slurm backend.",
        *(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())),
    ]
    rendezvous = {
        "nodes": spec.nodes,
        "gpus_per_node": spec.gpus,
        "node_rank": _NODE_RANK,
        "master_addr": _MASTER_ADDR,
        "master_port": _MASTER_PORT,
    }
    node_env = launchers.rendezvous_env(spec.launcher, **rendezvous)
    command = launchers.node_command(spec.launcher, spec.argv, **rendezvous)
    lines += [
        # The first node's address (Slurm's NodeAddr: node names need not resolve).
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'MASTER_ADDR=$(scontrol show node --oneliner "$first" | '
        "sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')",
        f"MASTER_PORT=$(({launchers.PORT_BASE} + SLURM_JOB_ID % {launchers.PORT_SPAN}))",
        "export MASTER_ADDR MASTER_PORT",
    ]
    per_node = [
        "export " + " ".join(f"{name}={_word(value)}" for name, value in node_env.items()),
        "exec " + " ".join(_word(arg) for arg in command),
    ]
    if spec.nodes == 1 or spec.launcher == "mpirun":
        lines += ["NODE_RANK=0", *per_node]
    else:
        inner = "\n".join(["NODE_RANK=$SLURM_NODEID", *per_node])
        lines.append(
            f"exec srun --export=ALL --nodes={spec.nodes} --ntasks={spec.nodes} "
            f"--ntasks-per-node=1 --kill-on-bad-exit=1 /bin/bash -c {shlex.quote(inner)}"
        )
    return "\n".join(lines) + "\n"


def _word(arg: str) -> str:
    """One shell word: quoted, with the placeholders as variable references."""
    parts = re.split(f"({'|'.join(map(re.escape, _SHELL_WORDS))})", str(arg))
    return "".join(_SHELL_WORDS.get(part) or shlex.quote(part) for part in parts if part) or "''"


def job_description(spec: LaunchSpec, *, partition: str | None) -> dict[str, Any]:
    """The job as slurmrestd's v0.0.38 `job` object (the CLI turns it into sbatch flags).
    Slurm's time limit is whole minutes, one more than the job's maximum duration: Suanli
    stops the job at its maximum to the second and Slurm's limit only backs that up."""
    job: dict[str, Any] = {
        "name": spec.name[:128] or f"suanli-{spec.job_id}",
        "comment": f"suanli job {spec.job_id}",
        "current_working_directory": str(spec.workdir),
        "standard_output": str(spec.log_path),
        "standard_error": str(spec.log_path),
        "open_mode": "append",  # retries add to the same log
        "nodes": spec.nodes,
        "tasks_per_node": 1,
        "cpus_per_task": max(1, math.ceil(spec.limits.cpus or 1)),
        "requeue": False,  # a failed node is Suanli's to retry (the job's `retries`)
        # Slurm needs an environment; the job's own is exported by the batch script.
        "environment": dict(BASE_ENVIRONMENT),
    }
    if spec.limits.memory_bytes:
        job["memory_per_node"] = max(1, math.ceil(spec.limits.memory_bytes / MIB))
    if spec.gpus:
        kind = f"gpu:{spec.gpu_model}" if spec.gpu_model else "gpu"
        job["gres"] = f"{kind}:{spec.gpus}"
    if spec.max_duration:
        job["time_limit"] = math.ceil(spec.max_duration / 60) + 1
    chosen = spec.pool or partition
    if chosen:
        job["partition"] = chosen
    return job


def sbatch_arguments(job: Mapping[str, Any]) -> list[str]:
    """The same job as sbatch's flags (the command-line fallback)."""
    flags = {
        "name": "--job-name",
        "comment": "--comment",
        "partition": "--partition",
        "current_working_directory": "--chdir",
        "standard_output": "--output",
        "standard_error": "--error",
        "open_mode": "--open-mode",
        "nodes": "--nodes",
        "tasks_per_node": "--ntasks-per-node",
        "cpus_per_task": "--cpus-per-task",
        "gres": "--gres",
        "time_limit": "--time",
    }
    arguments = [f"{flag}={job[key]}" for key, flag in flags.items() if key in job]
    if "memory_per_node" in job:
        arguments.append(f"--mem={job['memory_per_node']}M")
    if job.get("requeue") is False:
        arguments.append("--no-requeue")
    return arguments


# -- inventory ----------------------------------------------------------------------------

_GRES = re.compile(r"^gpu(?::(?P<type>[^:(]+))?:(?P<count>\d+)")


def gpus_of(gres: str) -> list[tuple[str | None, int]]:
    """(type, count) of each GPU entry of a gres string like "gpu:a100:4(S:0-1),gpu:2"."""
    found = []
    for entry in re.split(r",(?![^(]*\))", gres or ""):
        match = _GRES.match(entry.strip())
        if match:
            found.append((match["type"], int(match["count"])))
    return found


def host_of(node: Mapping[str, Any]) -> Host:
    """A Slurm node as a host. Slurm does not say what a GPU is beyond its gres type, so GPUs
    get stable names of their own (`slurm-<node>-gpu<i>`) and unknown memory (0)."""
    name = str(node["name"])
    gpus = []
    for kind, count in gpus_of(str(node.get("gres") or "")):
        for _ in range(count):
            index = len(gpus)
            gpus.append(
                Gpu(index=index, uuid=gpu_uuid(name, index), model=kind or "GPU", memory_bytes=0)
            )
    state = str(node.get("state") or "unknown").lower()
    flags = [str(f).upper() for f in node.get("state_flags") or []]
    return Host(
        name=name,
        cpus=int(node.get("cpus") or 0),
        memory_bytes=int(node.get("real_memory") or 0) * MIB,
        disk_total_bytes=int(node.get("temporary_disk") or 0) * MIB,
        disk_free_bytes=0,
        gpus=tuple(gpus),
        state="+".join([state, *(f.lower() for f in flags)]),
        reason=str(node.get("reason") or ""),
        available=state not in UNAVAILABLE_STATES and not UNAVAILABLE_FLAGS & set(flags),
        pools=tuple(str(p) for p in node.get("partitions") or ()),
    )


def gpu_uuid(node: str, index: int) -> str:
    return f"slurm-{node}-gpu{index}"


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed host lists: "node[1-3,7],gpu-a[01-02],login" → every name."""
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", text or ""):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not match:
            names.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            width = len(low)
            for number in range(int(low), int(high or low) + 1):
                names.append(f"{prefix}{number:0{width}d}{suffix}")
    return names


# -- status -------------------------------------------------------------------------------


def status_of(
    job: Mapping[str, Any] | None, handle: Mapping[str, Any], *, now: float, timed_out: bool
) -> Status:
    """Slurm's view of a job (None: Slurm no longer knows it) as a Status. `timed_out`: the
    backend stopped it for reaching its maximum duration."""
    if job is None:
        return Status(
            running=False,
            exit=ExitStatus(
                "lost",
                detail=f"Slurm no longer knows job {job_id_of(handle)} (it ended more than "
                "MinJobAge ago, or slurmctld lost its state)",
            ),
        )
    state = str(job.get("job_state") or "")
    if requeued(job):
        return _restarted(job, state)
    if state in QUEUED_STATES:
        reason = str(job.get("state_reason") or "None")
        return Status(running=True, queued=state if reason == "None" else reason)
    started = _time(job.get("start_time"))
    if state in RUNNING_STATES:
        return Status(running=True, placement=placement_of(job), started_at=started)
    ended = _time(job.get("end_time")) or now
    usage = {"wall_seconds": max(0.0, ended - started)} if started else {}
    # Stopped by Suanli at its maximum duration, by this process or one before it.
    limit = handle.get("max_duration")
    timed_out = timed_out or bool(limit and usage and usage["wall_seconds"] >= limit)
    return Status(
        running=False,
        exit=replace(_exit(job, state, timed_out, usage), ended_at=ended),
        placement=placement_of(job) if job.get("nodes") else None,
        started_at=started,
    )


def requeued(job: Mapping[str, Any]) -> bool:
    return int(job.get("restart_cnt") or 0) > 0


def _restarted(job: Mapping[str, Any], state: str) -> Status:
    """Slurm started it again after its first start failed or its node was lost
    (slurmrestd 22.05 and clusters with JobRequeue=1 ignore "requeue": false), in whatever
    state it is now: queued again, running again on another node, or already ended there
    between two looks. This attempt ended with its first run; a retry is Suanli's, as a new
    job, and the backend cancels what Slurm restarted (poll), so nothing runs twice."""
    count = int(job.get("restart_cnt") or 0)
    detail = f"Slurm restarted it ({count}×) after its node failed"
    ended_at = None
    if state not in QUEUED_STATES | RUNNING_STATES:
        detail += f"; the restarted run ended as {state} on {job.get('nodes') or '?'}"
        ended_at = _time(job.get("end_time"))
    return Status(running=False, exit=ExitStatus("node_failed", detail=detail, ended_at=ended_at))


def _exit(job: Mapping[str, Any], state: str, timed_out: bool, usage: dict) -> ExitStatus:
    raw = int(job.get("exit_code") or 0)
    code, signal = raw >> 8, raw & 0x7F
    detail = f"Slurm: {state}" + (f" ({job['state_reason']})" if _said(job) else "")
    if state == "COMPLETED":
        return ExitStatus("exit_code", exit_code=code, detail="", usage=usage)
    if state == "TIMEOUT" or timed_out:
        return ExitStatus("timeout", detail=detail, usage=usage)
    if state == "NODE_FAIL":
        return ExitStatus("node_failed", detail=str(job.get("nodes") or ""), usage=usage)
    if state == "OUT_OF_MEMORY":
        return ExitStatus("oom", detail=detail, usage=usage)
    if state == "PREEMPTED":
        return ExitStatus("preempted", detail=detail, usage=usage)
    if state == "CANCELLED":
        return ExitStatus("cancelled", detail=detail, usage=usage)
    if state == "FAILED" and signal:
        return ExitStatus("signal", signal=signal, detail=detail, usage=usage)
    if state == "FAILED":
        return ExitStatus("exit_code", exit_code=code, detail=detail, usage=usage)
    return ExitStatus("lost", detail=detail, usage=usage)  # BOOT_FAIL, DEADLINE, ...


def _said(job: Mapping[str, Any]) -> bool:
    return str(job.get("state_reason") or "None") not in {"None", "NonZeroExitCode"}


def placement_of(job: Mapping[str, Any]) -> dict[str, Any]:
    """Where Slurm runs it, in the form of a job's placement: the node list as Slurm writes
    it and the GPUs it gave on each node (gres_detail, one entry a node, e.g.
    "gpu:2(IDX:0-1)")."""
    nodes = expand_hostlist(str(job.get("nodes") or ""))
    gpus = []
    for node, detail in zip(nodes, job.get("gres_detail") or (), strict=False):
        match = re.search(r"IDX:([^)]*)\)", str(detail))
        for index in _indices(match[1] if match else ""):
            gpus.append({"uuid": gpu_uuid(node, index)})
    return {"node": str(job.get("nodes") or ""), "gpus": gpus}


def _indices(text: str) -> Iterable[int]:
    for item in text.split(","):
        low, _, high = item.partition("-")
        if low.isdigit():
            yield from range(int(low), int(high or low) + 1)


def _time(value: Any) -> float | None:
    """Slurm's times: Unix seconds; 0 (or a number object without one) means not yet."""
    if isinstance(value, Mapping):
        value = value.get("number") if value.get("set", True) else None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None

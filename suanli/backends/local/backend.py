"""The local backend: workloads as processes on this host, one wrapper process per job.

`launch` writes the plan into the job's state directory and starts the wrapper
(`python -m suanli.backends.local.wrapper <state_dir>`) in a session of its own, then returns
at once with the handle

    {"pid": <wrapper pid>, "pgid": <wrapper's process group = its session>,
     "start_time": <field 22 of /proc/<pid>/stat>, "state_dir": "<path>"}

The pid with its start time names the wrapper for the life of the machine, so a server started
later (after a crash, even a SIGKILL) polls and stops the same job from the handle alone; the
wrapper outlives the server and writes how the job ended into `status.json` whether anyone
listens or not. The job itself runs in a process group of its own inside the wrapper's
session (its id is in `process.json`).

`launch` is idempotent per state directory: asked again for a job it already started (a
server that crashed between launching and recording the handle), it returns the same handle
and never starts the job twice.

Unix users: `spec.run_as` runs the job as that account (the server must run as root). An
account that does not exist, root, or the server's own user is refused with a failed status
(exit code 125 and a detail that says why) rather than run as someone else; GPU fractions
too (see the identity rule in `suanli.backends.local.mps`). The wrapper itself gets only an
allow-listed environment: nothing of the server's (its secrets included) reaches a job, not
even through `/proc/<wrapper>/environ`.

Read-only mounts (`spec.mounts`) need root as well: the job's process binds them in a mount
namespace of its own, which the host never sees (see `suanli.backends.local.mounts`). A
server that does not run as root says so in its capabilities and refuses a job with mounts
(exit code 125) rather than run it without them.
"""

import contextlib
import hashlib
import logging
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import suanli
from suanli import faults
from suanli.backends import launchers
from suanli.backends.base import Capabilities, ExitStatus, Handle, LaunchSpec, Status
from suanli.backends.local import cgroups, state
from suanli.backends.local.jobstats import JobStats
from suanli.backends.local.mps import MpsDaemons, device_environment
from suanli.backends.local.watchdog import Offence, ProcessSample, Share, offenders, sample
from suanli.config import Settings
from suanli.gpu.discovery import discover, is_simulated_uuid
from suanli.gpu.model import Host
from suanli.gpu.nvml import Nvml, load_nvml
from suanli.monitoring.gpu import GpuSampler
from suanli.monitoring.model import Sample
from suanli.monitoring.node import NodeSampler

log = logging.getLogger(__name__)

WRAPPER_MODULE = "suanli.backends.local.wrapper"


class Refused(Exception):
    """A job that must not start; the detail is what the user reads."""


class LocalBackend:
    """Runs workloads as local processes. See the module docstring.

    settings: the work directory (MPS pipes live under it) and simulated GPUs.
    nvml: an `Nvml` to use instead of loading the real one (tests pass a test double).
    cgroup_parent: the cgroup under each hierarchy's root that holds the jobs' cgroups.
    cgroup_mounts: where to read the mounts from (tests point it elsewhere).
    timeout_grace_seconds: SIGTERM → SIGKILL delay for jobs that reach their max duration and
        for jobs stopped by the GPU memory watchdog.
    watchdog_interval: seconds between two NVML samples of the GPU memory watchdog.
    gpu_memory_slack_bytes: what a fractional job may use beyond its share before the
        watchdog stops it (room for the CUDA context).
    """

    name = "local"
    capabilities: Capabilities

    def __init__(
        self,
        settings: Settings,
        *,
        nvml: Nvml | None = None,
        mps: MpsDaemons | None = None,
        cgroup_parent: str = "suanli",
        cgroup_mounts: Path = Path("/proc/self/mounts"),
        timeout_grace_seconds: float = 10.0,
        watchdog_interval: float = 5.0,
        gpu_memory_slack_bytes: int = 256 * 2**20,
        python: str = sys.executable,
    ) -> None:
        self.settings = settings
        # Binding a path into a job's own mount namespace takes root (CAP_SYS_ADMIN).
        self.capabilities = Capabilities(mounts=os.geteuid() == 0)
        self.work_dir = Path(settings.effective_work_dir)
        self.mps = mps or MpsDaemons(self.work_dir)
        self.cgroup_parent = cgroup_parent
        self.hierarchies = cgroups.detect(cgroup_mounts)
        self.timeout_grace_seconds = timeout_grace_seconds
        self.watchdog_interval = watchdog_interval
        self.gpu_memory_slack_bytes = gpu_memory_slack_bytes
        self.python = python
        self._nvml = nvml
        self._nvml_loaded = nvml is not None
        self._samples: tuple[float, list[ProcessSample]] | None = None
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._plans: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._host: Host | None = None
        self._samplers: tuple[NodeSampler, GpuSampler, JobStats] | None = None
        log.info("local backend: cgroups %s", self.hierarchies.describe())

    # -- inventory and telemetry --------------------------------------------------------
    def inventory(self) -> tuple[Host, ...]:
        if self._host is None:  # the first look of this process: reap what a crash left
            self.reconcile_gpu_shares()
        host = discover(self.settings, nvml=self._get_nvml())
        self._host = host
        return (host,)

    def telemetry(self, busy: Mapping[str, float], jobs: Mapping[int, Handle]) -> list[Sample]:
        """This host's samples: psutil for the node and the jobs' process trees, NVML (or
        the simulated devices' model) for the GPUs found by the last inventory."""
        host = self._host or self.inventory()[0]
        if self._samplers is None:
            self._samplers = (
                NodeSampler(host.name, self.settings.data_dir),
                GpuSampler(host.name, self._get_nvml(), self.settings.data_dir),
                JobStats(host.name),
            )
        node_sampler, gpu_sampler, job_stats = self._samplers
        roots = {job: int(h.get("pid") or 0) for job, h in jobs.items() if h.get("pid")}
        now = time.time()
        return [
            *node_sampler.sample(now),
            *gpu_sampler.sample(now, host.gpus, busy),
            *job_stats.sample(now, roots),
        ]

    # -- launch --------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Handle:
        state_dir = Path(spec.state_dir).absolute()
        with self._lock:
            self._reap()
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            existing = self._existing(state_dir)
            if existing is not None:
                return existing
            Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
            plan = self._plan(spec, state_dir)
            try:
                plan["env"] = {
                    **plan["env"],
                    **device_environment(spec.job_id, spec.placement, self.work_dir),
                }
                plan["run_as"] = self._identity(spec)
                self._check_mounts(spec)
            except (Refused, ValueError) as error:
                return self._refuse(state_dir, plan, str(error))
            job_cgroups = cgroups.JobCgroups(
                self.hierarchies, self.cgroup_parent, f"job-{spec.job_id}-{_key(state_dir)[:8]}"
            )
            plan["warnings"] += job_cgroups.create(plan["limits"])
            plan["cgroups"]["dirs"] = job_cgroups.to_json()
            plan["warnings"] += self._acquire_gpu_shares(plan, state_dir)
            state.write_json(state_dir / state.JOB, plan)
            faults.point("local.planned")
            try:
                with open(state_dir / state.WRAPPER_LOG, "ab") as wrapper_log:
                    child = subprocess.Popen(  # noqa: S603 - our own module, an argument vector
                        [self.python, "-m", WRAPPER_MODULE, str(state_dir)],
                        stdin=subprocess.DEVNULL,
                        stdout=wrapper_log,
                        stderr=wrapper_log,
                        start_new_session=True,
                        close_fds=True,
                        cwd="/",
                        env=_wrapper_environment(),
                    )
            except OSError:
                job_cgroups.remove(timeout=0)
                self._release_gpu_shares(state_dir)
                (state_dir / state.JOB).unlink()
                raise
            self._children[child.pid] = child
            faults.point("local.wrapper_started")
            handle = self._handle(child.pid, state_dir)
            state.write_json(state_dir / state.HANDLE, handle)
            return handle

    @staticmethod
    def _handle(pid: int, state_dir: Path) -> Handle:
        return {
            "pid": pid,
            "pgid": pid,
            "start_time": (state.start_time(pid) or 0) if pid else 0,
            "state_dir": str(state_dir),
        }

    def _plan(self, spec: LaunchSpec, state_dir: Path) -> dict[str, Any]:
        # One node: the launcher's rendezvous is this host.
        rendezvous = {
            "nodes": 1,
            "gpus_per_node": len(spec.placement.devices),
            "node_rank": "0",
            "master_addr": "127.0.0.1",
            "master_port": str(launchers.master_port(spec.job_id)),
        }
        argv = launchers.node_command(spec.launcher, spec.argv, **rendezvous)
        return {
            "job_id": spec.job_id,
            "argv": [str(a) for a in argv],
            "workdir": str(Path(spec.workdir).absolute()),
            "env": {**launchers.rendezvous_env(spec.launcher, **rendezvous), **spec.env},
            "log_path": str(Path(spec.log_path).absolute()),
            "limits": asdict(spec.limits),
            "run_as": spec.run_as,
            "max_duration": spec.max_duration,
            "timeout_grace": self.timeout_grace_seconds,
            "cgroups": {"hierarchies": self.hierarchies.to_json(), "parent": self.cgroup_parent},
            "placement": {
                "node": spec.placement.node,
                "devices": [asdict(share) for share in spec.placement.devices],
            },
            # As given: the wrapper refuses a relative path rather than guess what it meant.
            "mounts": [{"source": str(m.source), "target": str(m.target)} for m in spec.mounts],
            "mps": [],
            "warnings": [],
        }

    def _existing(self, state_dir: Path) -> Handle | None:
        """The handle of a launch already made in this state directory, if any."""
        handle = state.read_json(state_dir / state.HANDLE)
        if isinstance(handle, dict):
            return handle
        if not (state_dir / state.JOB).exists():
            return None
        pid = _find_wrapper(state_dir)
        if pid is None and not any(
            (state_dir / name).exists() for name in (state.READY, state.STATUS)
        ):
            return None  # planned, never started: start it now
        handle = self._handle(pid or 0, state_dir)
        state.write_json(state_dir / state.HANDLE, handle)
        return handle

    @staticmethod
    def _identity(spec: LaunchSpec) -> str | None:
        """The account the job runs as: its own, whatever GPUs it has (each GPU's MPS
        serves one account at a time, and the scheduler never mixes accounts on one)."""
        if spec.run_as is None:
            return None
        try:
            entry = pwd.getpwnam(spec.run_as)
        except KeyError:
            raise Refused(f"the Unix user {spec.run_as!r} does not exist") from None
        if entry.pw_uid == os.geteuid():
            raise Refused(
                f"refusing to run the job as {spec.run_as!r}, the server's own user: with a "
                "user mapping, jobs never run as the server"
            )
        if entry.pw_uid == 0:
            raise Refused(f"refusing to run the job as {spec.run_as!r}: jobs never run as root")
        return spec.run_as

    def _check_mounts(self, spec: LaunchSpec) -> None:
        """A job that asked for mounts never runs without them."""
        if spec.mounts and not self.capabilities.mounts:
            raise Refused("this server cannot mount paths into jobs: it does not run as root")

    def _refuse(self, state_dir: Path, plan: dict[str, Any], detail: str) -> Handle:
        state.write_json(state_dir / state.JOB, plan)
        with contextlib.suppress(OSError):
            fd = state.open_log(plan["log_path"])
            os.write(fd, f"[suanli] the job did not start: {detail}\n".encode())
            os.close(fd)
        now = time.time()
        status = {"reason": "exit_code", "code": 125, "signal": None, "detail": detail}
        state.write_json(state_dir / state.STATUS, {**status, "started_at": now, "ended_at": now})
        handle = self._handle(0, state_dir)
        state.write_json(state_dir / state.HANDLE, handle)
        return handle

    def _acquire_gpu_shares(self, plan: dict[str, Any], state_dir: Path) -> list[str]:
        warnings = []
        for share in plan["placement"]["devices"]:
            if not share["memory_bytes"] and not share["compute_percent"]:
                continue
            uuid = share["device"]
            if is_simulated_uuid(uuid):
                warnings.append(f"GPU share on {uuid} is not enforced: the device is simulated")
                continue
            key = _key(state_dir)
            plan["mps"].append({"device": uuid, "key": key})
            problem = self.mps.acquire(uuid, key, state_dir)
            if problem:
                warnings.append(problem)
        return warnings

    # -- poll ----------------------------------------------------------------------------
    def poll(self, handle: Handle) -> Status:
        state_dir = Path(handle["state_dir"])
        self._reap()
        status = state.read_json(state_dir / state.STATUS)
        if status is None:
            if state.is_running(int(handle.get("pid") or 0), handle.get("start_time")):
                self._watch([handle])
                return Status(running=True, warnings=self.warnings(handle))
            # It may have written its status and exited between the two looks.
            status = state.read_json(state_dir / state.STATUS)
        if status is None:
            status = self._lost(handle, state_dir)
        self._release_gpu_shares(state_dir)
        return Status(
            running=False,
            exit=ExitStatus(
                reason=str(status.get("reason", "lost")),
                exit_code=status.get("code"),
                signal=status.get("signal"),
                detail=str(status.get("detail", "")),
                usage=dict(status.get("usage") or {}),
                ended_at=status.get("ended_at"),
            ),
            warnings=self.warnings(handle),
        )

    def _lost(self, handle: Handle, state_dir: Path) -> dict[str, Any]:
        """The wrapper is gone and said nothing: end whatever of the job is left, and record
        the job as lost so every later poll says the same."""
        detail = "the job's wrapper process is gone and recorded no exit status"
        process = state.read_json(state_dir / state.PROCESS) or {}
        killed = _kill_session_group(int(handle.get("pid") or 0), int(process.get("pgid") or 0))
        if process.get("cgroups"):
            job_cgroups = cgroups.JobCgroups.existing(
                cgroups.Hierarchies.from_json(process.get("hierarchies") or {}),
                process["cgroups"],
            )
            killed |= job_cgroups.pids()
            job_cgroups.kill_all()
            job_cgroups.remove(timeout=0.5)
        if killed:
            detail += f"; {len(killed)} process(es) it left behind were killed"
        now = time.time()
        status = {"reason": "lost", "code": None, "signal": None, "detail": detail}
        state.write_json(state_dir / state.STATUS, {**status, "ended_at": now})
        return status

    def _reap(self) -> None:
        """Collect the exit of wrappers this process started (no zombies left behind)."""
        with self._lock:
            for pid, child in list(self._children.items()):
                if child.poll() is not None:
                    del self._children[pid]

    # -- stop ----------------------------------------------------------------------------
    def stop(self, handle: Handle, *, reason: str, grace_seconds: float) -> None:
        self._stop(handle, reason=reason, grace_seconds=grace_seconds)

    def _stop(self, handle: Handle, *, reason: str, grace_seconds: float, detail: str = "") -> None:
        """Write the request, then SIGTERM the wrapper, which does the rest in its own time.

        A wrapper that has not yet set up its SIGTERM handler would die of the signal, so
        only a wrapper that said `ready` gets it. The wrapper writes `ready` and then reads
        `stop.json`; we write `stop.json` and then look for `ready`: one of the two always
        sees the other, so no stop is lost."""
        state_dir = Path(handle["state_dir"])
        if (state_dir / state.STATUS).exists():
            return
        request = {
            "reason": reason,
            "detail": detail,
            "grace_seconds": max(0.0, float(grace_seconds)),
            "requested_at": time.time(),
        }
        earlier = state.read_json(state_dir / state.STOP)
        if isinstance(earlier, dict):  # the first reason stands; a shorter grace applies
            request["reason"] = earlier.get("reason", reason)
            request["detail"] = earlier.get("detail", detail)
            request["grace_seconds"] = min(
                request["grace_seconds"], float(earlier.get("grace_seconds", grace_seconds))
            )
        state.write_json(state_dir / state.STOP, request)
        pid = int(handle.get("pid") or 0)
        if (state_dir / state.READY).exists() and state.is_running(pid, handle.get("start_time")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    # -- warnings ------------------------------------------------------------------------
    def address(self, node: str) -> str:
        """Every workload runs on this host: reached on loopback."""
        return "127.0.0.1"

    def warnings(self, handle: Handle) -> tuple[str, ...]:
        state_dir = Path(handle["state_dir"])
        found = state.read_json(state_dir / state.WARNINGS)
        if found is None:  # the wrapper has not set the job up yet
            found = self._plan_of(state_dir).get("warnings", [])
        return tuple(str(w) for w in found)

    def _plan_of(self, state_dir: Path) -> dict[str, Any]:
        key = str(state_dir)
        if key not in self._plans:
            plan = state.read_json(state_dir / state.JOB)
            if not isinstance(plan, dict):
                return {}
            self._plans[key] = plan
        return self._plans[key]

    # -- GPU fractions: MPS daemons and the memory watchdog ------------------------------
    def _release_gpu_shares(self, state_dir: Path) -> None:
        plan = self._plan_of(state_dir)
        for entry in plan.get("mps", []):
            self.mps.release(entry["device"], entry["key"])
        self._plans.pop(str(state_dir), None)

    def reconcile_gpu_shares(self) -> None:
        """Stop MPS daemons whose jobs all ended (e.g. while the server was down)."""

        def still_used(state_dir: Path) -> bool:
            if (state_dir / state.STATUS).exists():
                return False
            handle = state.read_json(state_dir / state.HANDLE)
            if not isinstance(handle, dict):
                return (state_dir / state.JOB).exists() and not (state_dir / state.READY).exists()
            return state.is_running(int(handle.get("pid") or 0), handle.get("start_time"))

        self.mps.reconcile(still_used)

    def _get_nvml(self) -> Nvml | None:
        if not self._nvml_loaded:
            self._nvml = load_nvml()
            self._nvml_loaded = True
        return self._nvml

    def _shares(self, handles: Iterable[Handle]) -> list[tuple[Handle, Share]]:
        found = []
        for handle in handles:
            state_dir = Path(handle["state_dir"])
            plan = self._plan_of(state_dir)
            process = state.read_json(state_dir / state.PROCESS) or {}
            groups = {int(handle.get("pid") or 0), int(process.get("pgid") or 0)} - {0}
            for share in plan.get("placement", {}).get("devices", []):
                if share["memory_bytes"] > 0 and not is_simulated_uuid(share["device"]):
                    found.append(
                        (
                            handle,
                            Share(str(state_dir), share["device"], share["memory_bytes"],
                                  frozenset(groups)),
                        )
                    )  # fmt: skip
        return found

    def enforce_gpu_shares(self, handles: Iterable[Handle]) -> list[Offence]:
        """Stop (reason `oom`) the fractional jobs among `handles` that use more GPU memory
        than their share; returns what was found. `poll` does this for each running job."""
        shares = self._shares(handles)
        if not shares:
            return []
        nvml = self._get_nvml()
        if nvml is None:
            return []
        now = time.monotonic()
        if self._samples is None or now - self._samples[0] >= self.watchdog_interval:
            self._samples = (now, sample(nvml, sorted({s.device for _, s in shares})))
        found = offenders(
            self._samples[1], [s for _, s in shares], slack_bytes=self.gpu_memory_slack_bytes
        )
        by_job = {s.job: h for h, s in shares}
        for offence in found:
            log.warning("job in %s: %s", offence.job, offence.detail)
            self._stop(
                by_job[offence.job],
                reason="oom",
                grace_seconds=self.timeout_grace_seconds,
                detail=offence.detail,
            )
        return found

    def _watch(self, handles: list[Handle]) -> None:
        try:
            self.enforce_gpu_shares(handles)
        except Exception:  # the watchdog must never break polling
            log.exception("GPU memory watchdog failed")


# What the wrapper takes of the server's environment: how to find programs, the locale and
# where Python finds `suanli`. Nothing else: the server's variables hold its secrets (the
# administrator's password, the database's URL), and a job could read its wrapper's.
_WRAPPER_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH")


def _wrapper_environment() -> dict[str, str]:
    """An allow-listed environment for the wrapper, with this very `suanli` importable even
    when it runs from a source tree."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in _WRAPPER_VARIABLES or key.startswith("LC_")
    }
    source = str(Path(suanli.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if source not in paths:
        env["PYTHONPATH"] = os.pathsep.join([source, *paths])
    return env


def _key(state_dir: Path) -> str:
    return hashlib.sha256(str(state_dir).encode()).hexdigest()[:20]


def _find_wrapper(state_dir: Path) -> int | None:
    """The pid of a running wrapper of this state directory, found by its command line."""
    wanted = ["-m", WRAPPER_MODULE, str(state_dir)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[-1:] == [""]:
            argv = argv[:-1]
        if argv[-3:] == wanted and state.is_running(int(entry.name), None):
            return int(entry.name)
    return None


def _kill_session_group(session: int, pgid: int) -> set[int]:
    """SIGKILL the processes of the job's process group `pgid` inside the wrapper's session
    `session` (both ids must match, so a reused id never hits a stranger)."""
    killed: set[int] = set()
    if session <= 0 or pgid <= 0:
        return killed
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = state.proc_stat(int(entry.name))
        if fields is None or len(fields) <= 6 or fields[3] == "Z":
            continue
        if int(fields[5]) == pgid and int(fields[6]) == session:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.add(int(entry.name))
    return killed

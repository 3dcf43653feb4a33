"""The backend protocol and the data it speaks.

Handles are plain JSON-serialisable dicts: the controller stores them in the database before
and after each side effect, so a restarted server can hand them back to the backend and
re-adopt what still runs (see docs/architecture.md).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from suanli.gpu.model import Host
from suanli.monitoring.model import Sample
from suanli.scheduler.model import Placement

Handle = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    cpus: float | None = None  # CPU quota in cores
    memory_bytes: int | None = None
    pids: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, asked by the controller and the kinds instead of its name."""

    # The backend's engine places work on nodes and GPUs and queues it itself (Slurm):
    # Suanli then admits on quotas and total capacity only, and a launched workload is
    # running only once poll() says it left the engine's queue.
    places_work: bool = False
    # A workload's ports are reached on its node over the network (Slurm), not on this
    # host's loopback (local): a workload serving ports must then listen on the node's
    # address and ask for its token.
    remote: bool = False
    # Paths can be mounted read-only into a workload (LaunchSpec.mounts).
    mounts: bool = False


@dataclass(frozen=True)
class Mount:
    """A path of the host (`source`) seen read-only by the workload at `target`."""

    source: Path
    target: Path


@dataclass(frozen=True)
class LaunchSpec:
    job_id: int
    argv: tuple[str, ...]  # run as an argument vector, never through a shell of user strings
    workdir: Path
    env: dict[str, str]
    placement: Placement
    limits: Limits
    log_path: Path  # stdout and stderr, appended; survives the job
    state_dir: Path  # the backend's own files for this job (exit status, pid, ...)
    run_as: str | None = None  # Unix account (never root); None: the server's own user
    max_duration: float | None = None  # seconds; the backend ends the job as "timeout"
    name: str = ""
    user: str = ""  # the Suanli user it runs for
    # Names of the ports the workload serves (a dev environment's tools, a service's API).
    ports: tuple[str, ...] = ()
    # Read-only mounts; only for a backend whose capabilities say `mounts`.
    mounts: tuple[Mount, ...] = ()
    # What an engine that places work itself needs (Capabilities.places_work); a backend that
    # was given a placement uses that. GPUs, CPUs and memory are per node.
    nodes: int = 1
    gpus: int = 0
    gpu_model: str | None = None
    pool: str | None = None  # the engine's partition; None: its default
    launcher: str = "none"  # see suanli.backends.launchers


@dataclass(frozen=True)
class ExitStatus:
    """How a workload ended. `reason`: exit_code | signal | oom | timeout | cancelled |
    preempted | lost (the backend cannot tell: process gone, no status written)."""

    reason: str
    exit_code: int | None = None
    signal: int | None = None
    detail: str = ""
    # What the workload used, where the backend knows it: cpu_seconds, max_rss_bytes,
    # memory_peak_bytes, wall_seconds.
    usage: dict[str, float] = field(default_factory=dict)
    # Unix time it ended, where the backend knows it (a server that was down learns of the
    # end later: the job's end is this, not the time it was told). When, not how: left out
    # of comparisons.
    ended_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Status:
    running: bool  # started or still queued in the engine: not ended
    exit: ExitStatus | None = None  # set when not running
    # Limits the backend could not apply (e.g. no cgroup controller), said in plain words.
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # Still waiting in the engine's own queue: its reason, in its words (Slurm: "Resources",
    # "Priority", ...). Empty once the workload started.
    queued: str = ""
    # Where the engine placed it, once started: {"node": ..., "gpus": [{"uuid": ...}]}, in
    # the form of a job's placement. None: the backend was given the placement.
    placement: dict[str, Any] | None = None
    started_at: float | None = None  # Unix time the engine started it, where it says


class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def inventory(self) -> tuple[Host, ...]:
        """The hosts (nodes) and devices this backend can run on."""
        ...

    def launch(self, spec: LaunchSpec) -> Handle:
        """Start the workload and return at once with its handle. Idempotent for one
        attempt (`spec.state_dir`): asked again — by a server killed before it recorded the
        handle — it returns the handle of what it started, or starts it if it never did;
        it never starts one attempt twice."""
        ...

    def poll(self, handle: Handle) -> Status:
        """Is it still running; if not, how did it end. Works on handles from earlier runs of
        the server (re-adoption)."""
        ...

    def stop(self, handle: Handle, *, reason: str, grace_seconds: float) -> None:
        """SIGTERM, wait up to the grace period, then SIGKILL. `reason` (cancelled,
        preempted, timeout) is what poll() reports afterwards. Must not block the caller for
        the grace period: the kill happens in the background or in a later poll."""
        ...

    def telemetry(self, busy: Mapping[str, float], jobs: Mapping[int, Handle]) -> list[Sample]:
        """Node and GPU samples of every host, now, and the CPU and memory of the running
        `jobs` (see suanli.monitoring.model). `busy` maps a GPU's UUID to the share of it
        that jobs hold: simulated devices report from it."""
        ...

    def address(self, node: str) -> str:
        """Where the server reaches the ports of a workload that runs on `node` (its
        placement's node): loopback for local processes, the node for an engine's."""
        ...

    def warnings(self, handle: Handle) -> tuple[str, ...]:
        """Limits that could not be applied to this workload, in plain words."""
        ...

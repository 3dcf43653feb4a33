"""The scheduler's inputs and outputs: plain frozen data, built by the caller from the DB.

Times are seconds on any monotonic scale the caller chooses (the controller uses Unix time,
the trace replay a simulated clock); the scheduler never reads a clock itself.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    low = 0
    normal = 1
    high = 2


@dataclass(frozen=True)
class Device:
    """A schedulable GPU, or a MIG instance of one (then `mig_profile` is set)."""

    id: str  # GPU or MIG UUID
    node: str
    model: str  # e.g. "NVIDIA A100-SXM4-80GB"; simulated devices say so in `model`
    memory_bytes: int
    # Devices with the same group are close (NVLink or one PCIe switch); same socket is
    # closer than across sockets. Used to keep multi-GPU jobs together.
    group: str = ""
    socket: int = 0
    shared: bool = False  # fractions of it may be granted (only then)
    schedulable: bool = True  # False when drained
    mig_profile: str | None = None  # e.g. "1g.10gb"


@dataclass(frozen=True)
class Node:
    name: str
    cpus: float
    memory_bytes: int
    devices: tuple[Device, ...] = ()
    schedulable: bool = True
    pools: tuple[str, ...] = ()  # a cluster engine's partitions


@dataclass(frozen=True)
class Quota:
    """None means no limit beyond capacity (see suanli.db.models.ProjectQuota)."""

    project: str
    guaranteed_gpus: int = 0
    max_gpus: int | None = None
    max_gpus_per_user: int | None = None
    cpus: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class Request:
    """What a workload asks for. Either whole GPUs (`gpus`, optionally of `gpu_model`) or one
    GPU fraction (`gpu_memory_bytes` and/or `gpu_compute_percent` > 0, with gpus == 0)."""

    gpus: int = 0
    gpu_model: str | None = None
    gpu_memory_bytes: int = 0
    gpu_compute_percent: int = 0
    cpus: float = 1.0
    memory_bytes: int = 0
    nodes: int = 1  # > 1: gpus and cpus are per node (multi-node, later backends)

    @property
    def is_fraction(self) -> bool:
        return self.gpus == 0 and (self.gpu_memory_bytes > 0 or self.gpu_compute_percent > 0)


@dataclass(frozen=True)
class DeviceShare:
    """A device granted to a workload: whole (memory 0 and compute 0) or a fraction of it."""

    device: str
    memory_bytes: int = 0
    compute_percent: int = 0

    @property
    def whole(self) -> bool:
        return self.memory_bytes == 0 and self.compute_percent == 0


@dataclass(frozen=True)
class Placement:
    node: str
    devices: tuple[DeviceShare, ...] = ()


@dataclass(frozen=True)
class Workload:
    id: int
    project: str
    user: str
    request: Request
    priority: Priority = Priority.normal
    submitted_at: float = 0.0
    preemptible: bool = True
    max_duration: float | None = None  # seconds; used by backfill
    # Set for running workloads:
    started_at: float | None = None
    placement: Placement | None = None
    # The Unix identity its GPU work runs under. A GPU's MPS daemon serves one identity at a
    # time (a client of another one blocks until every client of the current one has ended),
    # so fractions of different identities never share a GPU; "" is an identity like any
    # other. Whole GPUs and CPU-only work ignore it.
    identity: str = ""


@dataclass(frozen=True)
class Snapshot:
    now: float
    nodes: tuple[Node, ...]
    quotas: Mapping[str, Quota]  # by project name; a project without one has Quota(project)
    pending: tuple[Workload, ...]
    running: tuple[Workload, ...]
    # Decayed past usage per project (GPU-seconds or dominant-share-seconds): fair share.
    usage: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Admission:
    workload: int
    placement: Placement | None  # None when placement is left to the backend's engine
    # The GPUs it counts against its quotas (devices.gpu_charge), as this cycle counted them:
    # kept on the workload, never computed again. How much, not what: left out of comparisons.
    charge: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class Preemption:
    victim: int
    beneficiary: int  # the pending workload it makes room for


@dataclass(frozen=True)
class PendingReason:
    """Why a workload waits, as a catalogue key (`reason.<code>`) and its parameters, so the
    console and CLI can say it in the reader's language; `position` is 1-based in the queue."""

    code: str
    params: Mapping[str, Any] = field(default_factory=dict)
    position: int = 0


@dataclass(frozen=True)
class Decisions:
    admit: tuple[Admission, ...] = ()
    preempt: tuple[Preemption, ...] = ()
    pending: Mapping[int, PendingReason] = field(default_factory=dict)

"""Small builders for scheduler snapshots: a node of GPUs, a workload, a running workload."""

from collections.abc import Iterable, Sequence

from suanli.scheduler.model import (
    Decisions,
    Device,
    DeviceShare,
    Node,
    Placement,
    Priority,
    Quota,
    Request,
    Snapshot,
    Workload,
)

GIB = 2**30
A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"


def gpu_node(
    name: str = "n1",
    gpus: int = 8,
    *,
    model: str = A100,
    memory_gib: int = 80,
    group_size: int = 4,
    shared: Iterable[int] = (),
    drained: Iterable[int] = (),
    cpus: float = 64,
    memory: int = 512 * GIB,
    schedulable: bool = True,
) -> Node:
    """A node with `gpus` devices `<name>-g<i>`, in topology groups of `group_size` (one
    socket per two groups)."""
    shared, drained = set(shared), set(drained)
    devices = tuple(
        Device(
            id=f"{name}-g{i}",
            node=name,
            model=model,
            memory_bytes=memory_gib * GIB,
            group=f"{name}-nvl{i // group_size}",
            socket=i // (2 * group_size),
            shared=i in shared,
            schedulable=i not in drained,
        )
        for i in range(gpus)
    )
    return Node(name, cpus, memory, devices, schedulable)


def job(
    id: int,
    project: str = "p",
    *,
    user: str = "u",
    gpus: int = 1,
    model: str | None = None,
    fraction_gib: int = 0,
    compute: int = 0,
    cpus: float = 1,
    memory_gib: int = 0,
    priority: Priority = Priority.normal,
    submitted_at: float | None = None,
    preemptible: bool = True,
    max_duration: float | None = None,
    identity: str = "",
) -> Workload:
    fraction = fraction_gib > 0 or compute > 0
    request = Request(
        gpus=0 if fraction else gpus,
        gpu_model=model,
        gpu_memory_bytes=fraction_gib * GIB,
        gpu_compute_percent=compute,
        cpus=cpus,
        memory_bytes=memory_gib * GIB,
    )
    return Workload(
        id=id,
        project=project,
        user=user,
        request=request,
        priority=priority,
        submitted_at=float(id) if submitted_at is None else submitted_at,
        preemptible=preemptible,
        max_duration=max_duration,
        identity=identity,
    )


def running(
    workload: Workload,
    node: str,
    devices: Sequence[str] = (),
    *,
    started_at: float = 0.0,
    fraction: tuple[str, int, int] | None = None,
) -> Workload:
    """`workload` running on `node` with whole `devices`, or one fraction (device, GiB, %)."""
    shares: tuple[DeviceShare, ...]
    if fraction is not None:
        device, gib, compute = fraction
        shares = (DeviceShare(device, gib * GIB, compute),)
    else:
        shares = tuple(DeviceShare(d) for d in devices)
    return Workload(
        id=workload.id,
        project=workload.project,
        user=workload.user,
        request=workload.request,
        priority=workload.priority,
        submitted_at=workload.submitted_at,
        preemptible=workload.preemptible,
        max_duration=workload.max_duration,
        started_at=started_at,
        placement=Placement(node, shares),
        identity=workload.identity,
    )


def snapshot(
    nodes: Sequence[Node],
    pending: Sequence[Workload] = (),
    run: Sequence[Workload] = (),
    quotas: Iterable[Quota] = (),
    *,
    now: float = 1000.0,
    usage: dict[str, float] | None = None,
) -> Snapshot:
    return Snapshot(
        now=now,
        nodes=tuple(nodes),
        quotas={q.project: q for q in quotas},
        pending=tuple(pending),
        running=tuple(run),
        usage=usage or {},
    )


def admitted(decisions: Decisions) -> dict[int, Placement | None]:
    return {a.workload: a.placement for a in decisions.admit}


def devices_of(decisions: Decisions, workload: int) -> list[str]:
    placement = admitted(decisions)[workload]
    assert placement is not None
    return [share.device for share in placement.devices]

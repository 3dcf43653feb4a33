"""Nodes and GPUs: stored from the backend's inventory, changed by administrators (drain,
shared), and turned into the scheduler's view."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from suanli.core.errors import NotFound
from suanli.db.engine import Database
from suanli.db.models import GpuDevice, Node, utcnow
from suanli.gpu.model import Host
from suanli.scheduler import model as sched
from suanli.services import audit
from suanli.services.actor import Actor
from suanli.services.common import commit, require_admin


def record_inventory(session: Session, backend: str, hosts: Sequence[Host]) -> None:
    """Store what the backend found. Administrators' choices (drain, shared) are kept; a GPU
    that disappeared stays listed as not present, so its jobs and history still make sense."""
    for host in hosts:
        node = session.get(Node, host.name, options=[selectinload(Node.gpus)])
        if node is None:
            node = Node(name=host.name, backend=backend)
            session.add(node)
        node.cpus, node.memory_bytes = host.cpus, host.memory_bytes
        node.disk_total_bytes, node.disk_free_bytes = host.disk_total_bytes, host.disk_free_bytes
        node.driver, node.seen_at = host.driver, utcnow()
        node.engine_state, node.engine_reason = host.state, host.reason[:500]
        node.available, node.pools = host.available, list(host.pools)
        known = {gpu.uuid: gpu for gpu in node.gpus}
        found: set[str] = set()
        for gpu in host.gpus:
            devices = [(gpu.uuid, gpu.memory_bytes, None, None)]
            if gpu.mig_enabled:
                devices = [(m.uuid, m.memory_bytes, m.profile, gpu.uuid) for m in gpu.mig_instances]
            for uuid, memory, profile, parent in devices:
                device = known.get(uuid) or GpuDevice(uuid=uuid, node_name=node.name)
                if uuid not in known:
                    node.gpus.append(device)
                device.index, device.model, device.memory_bytes = gpu.index, gpu.model, memory
                device.pci_bus_id, device.numa_node = gpu.pci_bus_id, gpu.numa_node
                device.topology_group = gpu.group
                device.mig_profile, device.parent_uuid = profile, parent
                device.simulated, device.present = gpu.simulated, True
                found.add(uuid)
        for uuid, device in known.items():
            if uuid not in found:
                device.present = False
    session.commit()


def list_nodes(session: Session) -> Sequence[Node]:
    """Every signed-in user may see the nodes and GPUs: what is free is no secret."""
    return session.scalars(select(Node).options(selectinload(Node.gpus)).order_by(Node.name)).all()


def inventory(database: Database) -> tuple[sched.Node, ...]:
    """The nodes for a feasibility check at submit, read in a short transaction of their own
    before the request's write transaction begins: SQLite's write lock is not held while
    they load."""
    with database.reading() as session:
        return scheduler_nodes(session)


def scheduler_nodes(session: Session) -> tuple[sched.Node, ...]:
    return tuple(
        sched.Node(
            name=node.name,
            cpus=float(node.cpus),
            memory_bytes=node.memory_bytes,
            schedulable=node.schedulable and node.available,
            pools=tuple(node.pools),
            devices=tuple(
                sched.Device(
                    id=gpu.uuid,
                    node=node.name,
                    model=gpu.model,
                    memory_bytes=gpu.memory_bytes,
                    group=gpu.topology_group,
                    socket=gpu.numa_node,
                    shared=gpu.shared,
                    schedulable=gpu.schedulable and gpu.present,
                    mig_profile=gpu.mig_profile,
                )
                for gpu in node.gpus
            ),
        )
        for node in list_nodes(session)
    )


def set_node(
    session: Session, actor: Actor, name: str, *, schedulable: bool, reason: str = ""
) -> Node:
    require_admin(actor)
    node = session.get(Node, name)
    if node is None:
        raise NotFound("error.node_not_found", name=name)
    node.schedulable, node.drain_reason = schedulable, "" if schedulable else reason
    audit.record(
        session,
        actor,
        "node.drain" if not schedulable else "node.undrain",
        target_type="node",
        target=name,
        detail={"reason": reason},
    )
    commit(session, "error.conflict")
    return node


def set_gpu(
    session: Session,
    actor: Actor,
    uuid: str,
    *,
    schedulable: bool | None = None,
    reason: str = "",
    shared: bool | None = None,
) -> GpuDevice:
    require_admin(actor)
    gpu = session.get(GpuDevice, uuid)
    if gpu is None:
        raise NotFound("error.gpu_not_found", uuid=uuid)
    diff: dict[str, object] = {}
    if schedulable is not None and schedulable != gpu.schedulable:
        gpu.schedulable, gpu.drain_reason = schedulable, "" if schedulable else reason
        diff["schedulable"] = [not schedulable, schedulable]
    if shared is not None and shared != gpu.shared:
        gpu.shared = shared
        diff["shared"] = [not shared, shared]
    if diff:
        audit.record(
            session,
            actor,
            "gpu.update",
            target_type="gpu",
            target=uuid,
            detail={**diff, "reason": reason},
        )
        commit(session, "error.conflict")
    return gpu

"""Nodes and GPUs: everyone signed in sees them; administrators drain and share. Who uses a
GPU (`used_by`) is named only to the members of the job's project and to administrators."""

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy.orm import Session

from suanli.api.deps import CallerDep, SessionDep
from suanli.db.models import Node
from suanli.schemas.nodes import GPU_UUID_PATTERN, GpuOut, GpuUpdate, NodeOut, NodeUpdate
from suanli.services import cluster, nodes
from suanli.services.actor import Actor

router = APIRouter(tags=["nodes"])
NodeName = Annotated[str, Path(max_length=255, pattern=r"^[^\x00/]+$")]
GpuUuid = Annotated[str, Path(max_length=96, pattern=GPU_UUID_PATTERN)]


def _node_out(node: Node, users: dict[str, list[str]]) -> NodeOut:
    return NodeOut(
        name=node.name,
        backend=node.backend,
        cpus=node.cpus,
        memory_bytes=node.memory_bytes,
        disk_total_bytes=node.disk_total_bytes,
        disk_free_bytes=node.disk_free_bytes,
        driver=node.driver,
        schedulable=node.schedulable,
        drain_reason=node.drain_reason,
        seen_at=node.seen_at,
        engine_state=node.engine_state,
        engine_reason=node.engine_reason,
        available=node.available,
        pools=list(node.pools),
        gpus=[
            GpuOut.model_validate(gpu).model_copy(update={"used_by": users.get(gpu.uuid, [])})
            for gpu in node.gpus
        ],
    )


def _gpu_users(session: Session, reader: Actor) -> dict[str, list[str]]:
    """Which jobs hold each GPU now, as "user#id", or "another-project" for a job the reader
    may not see."""
    holders = cluster.gpu_holders(session, reader)
    return {uuid: [h.label for h in held] for uuid, held in holders.items()}


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(caller: CallerDep, session: SessionDep) -> list[NodeOut]:
    """Every node and GPU. A GPU's `used_by` lists one entry per job on it: "user#id" for
    the jobs of your projects (administrators: all), "another-project" for the others."""
    users = _gpu_users(session, caller.actor)
    return [_node_out(node, users) for node in nodes.list_nodes(session)]


@router.patch("/nodes/{name}", response_model=NodeOut)
def update_node(
    name: NodeName, body: NodeUpdate, caller: CallerDep, session: SessionDep
) -> NodeOut:
    """Drain (schedulable=false, with a reason) or undrain a node (administrators). Running
    work is not stopped; nothing new starts there."""
    node = nodes.set_node(
        session, caller.actor, name, schedulable=body.schedulable, reason=body.reason
    )
    return _node_out(node, _gpu_users(session, caller.actor))


@router.patch("/gpus/{uuid}", response_model=GpuOut)
def update_gpu(uuid: GpuUuid, body: GpuUpdate, caller: CallerDep, session: SessionDep) -> GpuOut:
    """Drain or undrain a GPU, or make it shared (takes fractions) or exclusive
    (administrators)."""
    gpu = nodes.set_gpu(
        session,
        caller.actor,
        uuid,
        schedulable=body.schedulable,
        reason=body.reason,
        shared=body.shared,
    )
    return GpuOut.model_validate(gpu)

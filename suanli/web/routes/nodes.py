"""Nodes and their GPUs: state, fractions and who uses each; administrators drain and share."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response

from suanli.api.deps import SessionDep
from suanli.schemas.nodes import GPU_UUID_PATTERN
from suanli.services import cluster, nodes
from suanli.web import render, session
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
NodeName = Annotated[str, Path(max_length=255, pattern=r"^[^\x00/]+$")]
GpuUuid = Annotated[str, Path(max_length=96, pattern=GPU_UUID_PATTERN)]
Reason = Annotated[str, Form(max_length=500)]


@router.get("/nodes")
def list_nodes(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    all_nodes = nodes.list_nodes(db)
    holders = cluster.gpu_holders(db, viewer.actor)
    return render.page(
        request,
        "nodes.html",
        nav="nodes",
        nodes=all_nodes,
        holders=holders,
        states={gpu.uuid: cluster.state_of(gpu, holders) for n in all_nodes for gpu in n.gpus},
        capacity=cluster.capacity(all_nodes, holders),
    )


@router.post("/nodes/{name}")
def change_node(
    name: NodeName,
    db: SessionDep,
    viewer: ViewerDep,
    action: Annotated[Literal["drain", "undrain"], Form()],
    reason: Reason = "",
) -> Response:
    nodes.set_node(db, viewer.actor, name, schedulable=action == "undrain", reason=reason)
    return render.redirect("/nodes", flash=f"web.flash.node_{action}")


@router.post("/gpus/{uuid}")
def change_gpu(
    uuid: GpuUuid,
    db: SessionDep,
    viewer: ViewerDep,
    action: Annotated[Literal["drain", "undrain", "share", "unshare"], Form()],
    reason: Reason = "",
) -> Response:
    changes: dict[str, bool] = {
        "drain": {"schedulable": False},
        "undrain": {"schedulable": True},
        "share": {"shared": True},
        "unshare": {"shared": False},
    }[action]
    nodes.set_gpu(db, viewer.actor, uuid, reason=reason, **changes)
    return render.redirect("/nodes", flash=f"web.flash.gpu_{action}")

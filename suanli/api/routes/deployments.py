"""Deployments: create, list, show, scale, stop, start, remove, and their replicas' logs."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session

from suanli.api.deployment_outputs import deployment_detail_out, deployments_out
from suanli.api.deps import CallerDep, SessionDep, SettingsDep, WorkloadsDep
from suanli.api.problems import language_of
from suanli.db.models import Deployment
from suanli.kinds import replica
from suanli.schemas.deployments import (
    DeploymentDetailOut,
    DeploymentListQuery,
    DeploymentOut,
    DeploymentScale,
    DeploymentSpec,
)
from suanli.schemas.jobs import LogQuery
from suanli.schemas.system import LogChunkOut
from suanli.schemas.types import MAX_INT32
from suanli.services import deployments

router = APIRouter(prefix="/deployments", tags=["deployments"])
DeploymentId = Annotated[int, Path(ge=1, le=MAX_INT32)]
ReplicaId = Annotated[int, Path(ge=1, le=MAX_INT32)]


def _detail(request: Request, session: Session, deployment: Deployment) -> DeploymentDetailOut:
    return deployment_detail_out(session, deployment, language_of(request))


@router.post("", response_model=DeploymentDetailOut, status_code=201)
def create(
    spec: DeploymentSpec,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> DeploymentDetailOut:
    """Create a deployment: `replicas` copies of its template are kept running. A template
    no node could ever run, or larger than the project's quota lets it hold, is refused
    (422, naming the resource)."""
    deployment = workloads.create_deployment(session, caller.actor, spec)
    return _detail(request, session, deployment)


@router.get("", response_model=list[DeploymentOut])
def list_deployments(
    query: Annotated[DeploymentListQuery, Query()], caller: CallerDep, session: SessionDep
) -> list[DeploymentOut]:
    """Newest first, from the projects you belong to, with their replicas counted."""
    found = deployments.list_deployments(session, caller.actor, query)
    return deployments_out(session, found)


@router.get("/{deployment_id}", response_model=DeploymentDetailOut)
def show(
    deployment_id: DeploymentId, request: Request, caller: CallerDep, session: SessionDep
) -> DeploymentDetailOut:
    """With its template and its replicas, newest first (the live ones and the last that
    ended)."""
    return _detail(request, session, deployments.get(session, caller.actor, deployment_id))


@router.post("/{deployment_id}/scale", response_model=DeploymentDetailOut)
def scale(
    deployment_id: DeploymentId,
    body: DeploymentScale,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> DeploymentDetailOut:
    """Want this many replicas: missing ones are started, surplus ones stopped (those not
    yet running first, then the youngest)."""
    deployment = workloads.scale_deployment(session, caller.actor, deployment_id, body.replicas)
    return _detail(request, session, deployment)


@router.post("/{deployment_id}/stop", response_model=DeploymentDetailOut)
def stop(
    deployment_id: DeploymentId,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> DeploymentDetailOut:
    """Stop every replica; the deployment stays, and `start` brings it back."""
    deployment = workloads.stop_deployment(session, caller.actor, deployment_id)
    return _detail(request, session, deployment)


@router.post("/{deployment_id}/start", response_model=DeploymentDetailOut)
def start(
    deployment_id: DeploymentId,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> DeploymentDetailOut:
    """Start a stopped deployment again, with as many replicas as before."""
    deployment = workloads.start_deployment(session, caller.actor, deployment_id)
    return _detail(request, session, deployment)


@router.delete("/{deployment_id}", status_code=204)
def remove(
    deployment_id: DeploymentId, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> None:
    """Forget a stopped deployment whose replicas have all ended; its name is free again."""
    deployments.remove(session, caller.actor, deployment_id, settings)


@router.get("/{deployment_id}/replicas/{replica_id}/logs", response_model=LogChunkOut)
def logs(
    deployment_id: DeploymentId,
    replica_id: ReplicaId,
    query: Annotated[LogQuery, Query()],
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> LogChunkOut:
    """A replica's output, as a job's: from `offset` (or the last `tail` lines); follow it
    by asking again from `next_offset` until `finished` is true."""
    deployments.find_replica(session, caller.actor, deployment_id, replica_id)
    chunk = workloads.read_log(
        session,
        caller.actor,
        replica_id,
        kind=replica.KIND.name,
        offset=query.offset,
        limit=query.limit,
        tail=query.tail,
    )
    return LogChunkOut(text=chunk.text, next_offset=chunk.next_offset, finished=chunk.finished)

"""Deployments: create, list, show, scale, stop, start, remove.

A deployment is desired state: `replicas` workloads of the replica kind made from its
template. Services only write that state; the deployment controller
(suanli.controllers.deployments) starts, stops and replaces its replicas. Who may do what is
as for jobs: members and owners create in their project, every member sees, the author, the
project's owners and administrators change and stop it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from suanli.config import Settings
from suanli.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from suanli.core.roles import ProjectRole
from suanli.core.states import ACTIVE, State
from suanli.db.models import Deployment, Job, Membership, Project
from suanli.kinds import demand, replica
from suanli.kinds.base import Kind
from suanli.scheduler import model as sched
from suanli.schemas.deployments import DeploymentListQuery, DeploymentSpec
from suanli.services import audit, jobs
from suanli.services.actor import Actor
from suanli.services.common import commit
from suanli.services.jobs import check_quota, check_runnable, remove_folders
from suanli.services.projects import access, writable

ACTIVE_STATE, STOPPED = "active", "stopped"
REPLICA = replica.KIND.name
LIVE = (State.pending, *ACTIVE)


def create(
    session: Session,
    actor: Actor,
    spec: DeploymentSpec,
    nodes: Sequence[sched.Node],
    unix_users: Mapping[str, str],
) -> Deployment:
    """Refuse a template no node could ever run, or larger than the project's quota lets it
    hold at once, as a job's; then keep the desired state."""
    project = project_for(session, actor, spec.project, unix_users)
    check_template(spec.template, project, nodes, prefix="template.")
    return keep(
        session, actor, project, spec.name, replica.KIND, spec.template, replicas=spec.replicas
    )


def project_for(
    session: Session, actor: Actor, name: str, unix_users: Mapping[str, str]
) -> Project:
    """The project a member deploys into, if it takes new work and they may run it."""
    project, _ = access(session, actor, name, ProjectRole.member)
    writable(project)
    if unix_users and actor.name not in unix_users:
        raise Forbidden("error.no_unix_user", name=actor.name)
    return project


def check_template(
    template: Any, project: Project, nodes: Sequence[sched.Node], *, prefix: str
) -> None:
    """A replica some node could run within the project's quota; the fields of an error
    named as the request names them (`prefix`)."""
    try:
        check_runnable(template, nodes)
        check_quota(template, project, nodes)
    except InvalidInput as error:
        error.field = f"{prefix}{error.field}" if error.field else prefix.rstrip(".")
        raise


def keep(
    session: Session,
    actor: Actor,
    project: Project,
    name: str,
    kind: Kind,
    template: BaseModel,
    *,
    replicas: int,
    scaling: dict[str, Any] | None = None,
    inputs: list[dict[str, Any]] | None = None,
) -> Deployment:
    """The desired state, under a name free in the project."""
    taken = select(Deployment.id).where(
        Deployment.project_id == project.id, Deployment.name == name
    )
    if session.scalar(taken) is not None:
        raise Conflict("error.deployment_exists", field="name", name=name)
    deployment = Deployment(
        kind=kind.name,
        name=name,
        project=project,
        user_id=actor.account.id,
        user_name=actor.name,
        template=template.model_dump(mode="json"),
        spec_version=kind.version,
        request=demand.of(template),
        replicas=replicas,
        scaling=scaling,
        inputs=inputs or [],
        state=ACTIVE_STATE,
    )
    session.add(deployment)
    session.flush()
    audit_event(session, actor, f"{_noun(kind)}.create", deployment, replicas=replicas)
    commit(session, "error.deployment_exists", field="name", name=name)
    return deployment


def list_deployments(
    session: Session,
    actor: Actor,
    query: DeploymentListQuery,
    kind: str = REPLICA,
) -> Sequence[Deployment]:
    statement = (
        select(Deployment).options(selectinload(Deployment.project)).order_by(Deployment.id.desc())
    )
    if not actor.is_admin:
        mine = select(Membership.project_id).where(Membership.user_id == actor.account.id)
        statement = statement.where(Deployment.project_id.in_(mine))
    if query.project:
        statement = statement.join(Project).where(Project.name == query.project)
    if query.state:
        statement = statement.where(Deployment.state == query.state)
    return session.scalars(statement.where(Deployment.kind == kind)).all()


def get(
    session: Session,
    actor: Actor,
    deployment_id: int,
    need: ProjectRole = ProjectRole.viewer,
    kind: str = REPLICA,
) -> Deployment:
    """A deployment of `kind` the actor may see: a model service is not a deployment to the
    deployments' routes (they would scale it past its range), nor the other way round."""
    deployment = session.get(Deployment, deployment_id, options=[selectinload(Deployment.project)])
    key = "error.service_not_found" if kind == "service" else "error.deployment_not_found"
    missing = NotFound(key, id=deployment_id)
    if deployment is None or deployment.kind != kind:
        raise missing
    try:
        access(session, actor, deployment.project.name, need)
    except NotFound:
        raise missing from None
    return deployment


def counts(session: Session, deployment_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Live replicas per deployment: running, and on their way (pending to starting)."""
    rows = session.execute(
        select(Job.deployment_id, Job.state, func.count())
        .where(Job.deployment_id.in_(deployment_ids), Job.state.in_(LIVE))
        .group_by(Job.deployment_id, Job.state)
    ).all()
    result = {i: {"running": 0, "starting": 0} for i in deployment_ids}
    for deployment_id, state, number in rows:
        key = "running" if state == State.running else "starting"
        result[deployment_id][key] += number
    return result


def replicas_of(session: Session, deployment: Deployment, limit: int = 50) -> Sequence[Job]:
    """Its replicas, newest first: the live ones and the last that ended."""
    return session.scalars(
        select(Job)
        .options(selectinload(Job.project))
        .where(Job.deployment_id == deployment.id)
        .order_by(Job.id.desc())
        .limit(limit)
    ).all()


def scale(
    session: Session, actor: Actor, deployment_id: int, replicas: int, kind: str = REPLICA
) -> Deployment:
    deployment = managed(session, actor, deployment_id, kind)
    writable(deployment.project)
    before = deployment.replicas
    deployment.replicas = replicas
    audit_event(session, actor, "deployment.scale", deployment, replicas=replicas, before=before)
    commit(session, "error.conflict")
    return deployment


def stop(session: Session, actor: Actor, deployment_id: int, kind: str = REPLICA) -> Deployment:
    """No replicas wanted: the controller stops them all; the template stays."""
    deployment = managed(session, actor, deployment_id, kind)
    if deployment.state != STOPPED:
        deployment.state = STOPPED
        audit_event(session, actor, "deployment.stop", deployment)
        commit(session, "error.conflict")
    return deployment


def start(session: Session, actor: Actor, deployment_id: int, kind: str = REPLICA) -> Deployment:
    """Wanted again, as many as before; the backoff of earlier failures is forgotten."""
    deployment = managed(session, actor, deployment_id, kind)
    writable(deployment.project)
    if deployment.state != ACTIVE_STATE:
        deployment.state = ACTIVE_STATE
        deployment.failures, deployment.next_start_at = 0, None
        audit_event(session, actor, "deployment.start", deployment)
        commit(session, "error.conflict")
    return deployment


def remove(
    session: Session, actor: Actor, deployment_id: int, settings: Settings, kind: str = REPLICA
) -> None:
    """Forget a stopped deployment whose replicas have all ended: their rows go with it, and
    their folders (logs, the backend's state) after the commit."""
    deployment = managed(session, actor, deployment_id, kind)
    live = select(Job.id).where(Job.deployment_id == deployment.id, Job.state.in_(LIVE))
    if deployment.state != STOPPED or session.scalar(live.limit(1)) is not None:
        raise Conflict("error.deployment_not_stopped", name=deployment.name)
    replica_ids = session.scalars(select(Job.id).where(Job.deployment_id == deployment.id)).all()
    audit_event(session, actor, "deployment.remove", deployment)
    session.delete(deployment)
    commit(session, "error.conflict")
    for replica_id in replica_ids:
        remove_folders(settings, replica_id)


def find_replica(
    session: Session,
    actor: Actor,
    deployment_id: int,
    replica_id: int,
    kind: str = REPLICA,
) -> Job:
    """A replica of this deployment, if the actor may see the deployment: one of another
    deployment (or no replica at all) is a 404 as for a replica that does not exist."""
    deployment = get(session, actor, deployment_id, kind=kind)
    found = jobs.get_job(session, actor, replica_id, kind=kind, history=False)
    if found.deployment_id != deployment.id:
        raise NotFound("error.replica_not_found", id=replica_id)
    return found


def managed(session: Session, actor: Actor, deployment_id: int, kind: str = REPLICA) -> Deployment:
    deployment = get(session, actor, deployment_id, kind=kind)
    if actor.is_admin or deployment.user_id == actor.account.id:
        return deployment
    _, role = access(session, actor, deployment.project.name)
    if role != ProjectRole.owner:
        raise Forbidden("error.deployment_not_yours")
    return deployment


def _noun(kind: Kind) -> str:
    """How the audit log names it: a deployment, or a (model) service."""
    return "service" if kind.name == "service" else "deployment"


def audit_event(
    session: Session, actor: Actor, action: str, deployment: Deployment, **detail: object
) -> None:
    audit.record(
        session,
        actor,
        action,
        target_type="deployment",
        target=deployment.name,
        project=deployment.project,
        detail=dict(detail),
    )

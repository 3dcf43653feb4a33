"""Model services: deploy, update (rolling), list, show, stop, start, remove.

A service is a deployment (suanli.services.deployments) whose replicas are of the service
kind: an engine serving a model version, or a command of the user's own listening on a
port. Here are the rules of deploying one: the engine registered, the model version readable
by the deployer and fitting the GPUs asked for, replicas a number or a range to autoscale in.
The gateway (suanli.serving) reaches its ready replicas; the deployment controller keeps them.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from suanli.config import Settings
from suanli.core.errors import Forbidden, InvalidInput, NotFound
from suanli.core.quantities import format_bytes
from suanli.db.models import DataVersion, Deployment, Job, Project
from suanli.kinds import demand
from suanli.kinds import service as service_kind
from suanli.scheduler import model as sched
from suanli.schemas.deployments import DeploymentListQuery
from suanli.schemas.services import (
    Scaling,
    ServiceSpec,
    ServiceTemplate,
    ServiceUpdate,
    replica_range,
)
from suanli.services import data, deployments
from suanli.services.actor import Actor
from suanli.services.common import commit


def deploy(
    session: Session,
    actor: Actor,
    spec: ServiceSpec,
    nodes: Sequence[sched.Node],
    settings: Settings,
) -> Deployment:
    project = deployments.project_for(session, actor, spec.project, settings.unix_users)
    template = spec.template()
    check_engine(settings, template)
    deployments.check_template(template, project, nodes, prefix="")
    inputs = _model(session, actor, project, template, nodes)
    low, high = replica_range(spec.replicas)
    scaling = scaling_of(spec, low, high)
    return deployments.keep(
        session,
        actor,
        project,
        spec.name,
        service_kind.KIND,
        template,
        replicas=max(low, 1) if scaling else low,
        scaling=scaling,
        inputs=inputs,
    )


def update(
    session: Session,
    actor: Actor,
    service_id: int,
    change: ServiceUpdate,
    nodes: Sequence[sched.Node],
    settings: Settings,
) -> Deployment:
    """A new template (model version, arguments, environment, resources) is rolled out one
    replica at a time by the deployment controller; replicas and scaling apply at once."""
    deployment = deployments.managed(session, actor, service_id, SERVICE)
    project = deployment.project
    current = service_kind.KIND.load(deployment.template, deployment.spec_version)
    given = change.model_dump(exclude_unset=True, exclude={"replicas", "scaling"})
    template = ServiceTemplate.model_validate({**current.model_dump(), **given})
    if given:
        check_engine(settings, template)
        deployments.check_template(template, project, nodes, prefix="")
        deployment.inputs = _model(session, actor, project, template, nodes)
        deployment.template = template.model_dump(mode="json")
        deployment.request = demand.of(template)
        deployment.failures, deployment.next_start_at = 0, None
    if change.replicas is not None or change.scaling is not None:
        low, high = replica_range(change.replicas) if change.replicas else _bounds(deployment)
        merged = ServiceSpec.model_validate(
            {
                **template.model_dump(),
                "project": project.name,
                "name": deployment.name,
                "replicas": f"{low}..{high}",
                "scaling": (change.scaling or _scaling_spec(deployment)).model_dump(),
            }
        )
        deployment.scaling = scaling_of(merged, low, high)
        deployment.replicas = (
            min(high, max(low, deployment.replicas, 1)) if deployment.scaling else low
        )
    deployments.audit_event(session, actor, "service.update", deployment, fields=sorted(given))
    commit(session, "error.conflict")
    return deployment


def scaling_of(spec: ServiceSpec, low: int, high: int) -> dict[str, Any] | None:
    """The autoscaler's settings for a range; None for a fixed number of replicas."""
    if low == high:
        return None
    return {"min": low, "max": high, **spec.scaling.model_dump()}


def check_engine(settings: Settings, template: ServiceTemplate) -> None:
    if template.engine is None:
        return
    engine = settings.engines.get(template.engine)
    if engine is None:
        raise InvalidInput(
            "error.engine_unknown",
            field="engine",
            engine=template.engine,
            engines=", ".join(sorted(settings.engines)) or "-",
        )
    if template.model is None and any("{model}" in part for part in engine.command):
        raise InvalidInput("error.engine_needs_model", field="model", engine=template.engine)


def list_services(session: Session, actor: Actor, project: str | None) -> Sequence[Deployment]:
    query = DeploymentListQuery(project=project)
    return deployments.list_deployments(session, actor, query, kind=service_kind.KIND.name)


SERVICE = service_kind.KIND.name


def get(session: Session, actor: Actor, service_id: int) -> Deployment:
    return deployments.get(session, actor, service_id, kind=SERVICE)


def by_name(session: Session, actor: Actor, project: str, name: str) -> Deployment:
    found = session.scalar(
        select(Deployment.id)
        .join(Project)
        .where(
            Project.name == project,
            Deployment.name == name,
            Deployment.kind == service_kind.KIND.name,
        )
    )
    if found is None:
        raise NotFound("error.service_name_not_found", project=project, name=name)
    try:
        return get(session, actor, found)
    except NotFound:
        raise NotFound("error.service_name_not_found", project=project, name=name) from None


def ready_counts(session: Session, ids: Sequence[int]) -> dict[int, int]:
    rows = session.execute(
        select(Job.deployment_id, func.count())
        .where(
            Job.deployment_id.in_(ids),
            Job.state == "running",
            Job.stop_reason == "",
            Job.ready_at.is_not(None),
        )
        .group_by(Job.deployment_id)
    ).all()
    counts = dict.fromkeys(ids, 0)
    counts.update({deployment_id: number for deployment_id, number in rows})
    return counts


def recent_replicas(
    session: Session, ids: Sequence[int], per_service: int = 3
) -> dict[int, list[Job]]:
    """Each service's newest replicas (what its reason is read from), in one query."""
    rows = session.scalars(
        select(Job)
        .options(selectinload(Job.project))
        .where(Job.deployment_id.in_(ids))
        .order_by(Job.id.desc())
        .limit(max(50, per_service * len(ids) * 4))
    ).all()
    found: dict[int, list[Job]] = {}
    for job in rows:
        kept = found.setdefault(job.deployment_id or 0, [])
        if len(kept) < per_service:
            kept.append(job)
    return found


def _model(
    session: Session,
    actor: Actor,
    project: Project,
    template: ServiceTemplate,
    nodes: Sequence[sched.Node],
) -> list[dict[str, Any]]:
    """The model version, resolved now with the deployer's rights (a tag is followed once:
    every replica serves the same bytes), and refused when its files alone are larger than
    the GPU memory a replica asks for."""
    if template.model is None:
        return []
    try:
        inputs = data.resolve(session, actor, project, "model", [template.model], "model")
    except InvalidInput as error:
        error.field = "model"
        raise
    except (NotFound, Forbidden) as error:
        error.field = "model"
        raise
    version = session.get(DataVersion, int(inputs[0]["version_id"]))  # type: ignore[arg-type]
    room = gpu_memory(template, nodes)
    if version is not None and room and version.size_bytes > room:
        raise InvalidInput(
            "error.model_too_large",
            field="resources",
            model=str(inputs[0]["ref"]),
            size=format_bytes(version.size_bytes),
            room=format_bytes(room),
        )
    return inputs


def gpu_memory(template: ServiceTemplate, nodes: Sequence[sched.Node]) -> int:
    """The GPU memory one replica gets at most (0: no GPU asked for, the model runs on
    CPUs): its fraction's memory, or its whole GPUs' on the largest node that has them."""
    resources = template.resources
    if resources.gpu_memory:
        return resources.gpu_memory
    if not resources.gpus:
        return 0
    best = 0
    for node in nodes:
        devices = [
            d for d in node.devices if resources.gpu_model is None or resources.gpu_model in d.model
        ]
        if len(devices) >= resources.gpus:
            largest = sorted((d.memory_bytes for d in devices), reverse=True)
            best = max(best, sum(largest[: resources.gpus]) * resources.nodes)
    return best


def _bounds(deployment: Deployment) -> tuple[int, int]:
    scaling = deployment.scaling
    if scaling:
        return int(scaling["min"]), int(scaling["max"])
    return deployment.replicas, deployment.replicas


def _scaling_spec(deployment: Deployment) -> Scaling:
    kept = {k: v for k, v in (deployment.scaling or {}).items() if k not in ("min", "max")}
    return Scaling.model_validate(kept)


def summary(settings: Settings, deployment: Deployment) -> Mapping[str, str]:
    """What a list shows of a service: its model, engine and protocol."""
    model = next(
        (str(item["ref"]) for item in deployment.inputs or [] if item.get("kind") == "model"),
        "",
    )
    return {
        "model": model,
        "engine": str(deployment.template.get("engine") or ""),
        "protocol": service_kind.protocol_of(settings, deployment.template),
    }

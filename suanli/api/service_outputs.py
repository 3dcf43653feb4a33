"""Model services as their readers see them, for the API's routes and the console's pages."""

from collections.abc import Sequence

from sqlalchemy.orm import Session

from suanli.api.deployment_outputs import health
from suanli.api.outputs import job_out
from suanli.config import Settings
from suanli.db.models import Deployment, Job, ServiceKey, ServiceSweep
from suanli.schemas.services import (
    PointOut,
    ReplicaOut,
    ServiceDetailOut,
    ServiceKeyOut,
    ServiceOut,
    SizingOut,
    SweepOut,
)
from suanli.services import deployments, serving
from suanli.serving.sizing import Sizing


def service_out(
    settings: Settings,
    deployment: Deployment,
    counted: dict[str, int],
    ready: int,
    reason: str = "",
) -> ServiceOut:
    running, starting = counted.get("running", 0), counted.get("starting", 0)
    scaling = deployment.scaling or {}
    shown = serving.summary(settings, deployment)
    state = health(deployment, ready, starting + running - ready)
    return ServiceOut(
        id=deployment.id,
        name=deployment.name,
        project=deployment.project.name,
        user=deployment.user_name,
        state=deployment.state,
        model=shown["model"],
        engine=shown["engine"],
        protocol=shown["protocol"],
        replicas=deployment.replicas,
        min_replicas=int(scaling.get("min", deployment.replicas)),
        max_replicas=int(scaling.get("max", deployment.replicas)),
        ready=ready,
        running=running,
        starting=starting,
        failures=deployment.failures,
        next_start_at=deployment.next_start_at,
        created_at=deployment.created_at,
        health=state,
        reason=reason if state != "ready" else "",
    )


def services_out(
    session: Session, settings: Settings, found: Sequence[Deployment], language: str
) -> list[ServiceOut]:
    """A list, with ready replicas counted and the reason of those not ready, in a few
    queries for all."""
    ids = [d.id for d in found]
    counted = deployments.counts(session, ids)
    ready = serving.ready_counts(session, ids)
    recent = serving.recent_replicas(session, ids)
    return [
        service_out(
            settings,
            d,
            counted[d.id],
            ready[d.id],
            why([replica_out(job, language) for job in recent.get(d.id, [])]),
        )
        for d in found
    ]


def service_detail_out(
    session: Session,
    settings: Settings,
    deployment: Deployment,
    language: str,
    ssh_port: int | None = None,
) -> ServiceDetailOut:
    counted = deployments.counts(session, [deployment.id])[deployment.id]
    ready = serving.ready_counts(session, [deployment.id])[deployment.id]
    replicas = deployments.replicas_of(session, deployment)
    shown = [replica_out(job, language, deployment) for job in replicas]
    out = service_out(settings, deployment, counted, ready, why(shown))
    protocol = out.protocol
    endpoint = endpoint_of(settings, deployment, protocol, ssh_port)
    return ServiceDetailOut(
        **out.model_dump(),
        template=dict(deployment.template),
        scaling=deployment.scaling,
        replicas_list=shown,
        endpoint=endpoint,
    )


def endpoint_of(
    settings: Settings, deployment: Deployment, protocol: str, ssh_port: int | None
) -> str:
    """How to call it: the gateway's /v1 and the model's name, the proxy's path (http), or
    the SSH gateway's forwarded port (grpc, tcp)."""
    base, project, name = settings.effective_public_url, deployment.project.name, deployment.name
    if protocol == "openai":
        return f"{base}/v1 (model {project}/{name})"
    if protocol in ("grpc", "tcp"):
        port = ssh_port or settings.ssh_port
        host = settings.effective_ssh_host
        return f"ssh -N -L 9000:{name}.{project}:0 services@{host} -p {port}"
    return f"{base}/s/{project}/{name}/"


def replica_out(job: Job, language: str, deployment: Deployment | None = None) -> ReplicaOut:
    shown = job_out(job, language)
    ready = job.state == "running" and job.ready_at is not None and not job.stop_reason
    current = deployment is None or (
        job.spec == deployment.template and (job.inputs or []) == (deployment.inputs or [])
    )
    return ReplicaOut(**shown.model_dump(), ready=ready, current=current)


def why(replicas: Sequence[ReplicaOut]) -> str:
    """Why it is not ready, in plain words: the newest replica's wait or end."""
    for replica in replicas:
        if replica.pending is not None:
            return replica.pending.message
        if replica.exit is not None and replica.exit.reason not in ("cancelled",):
            message, detail = replica.exit.message, replica.exit.detail.strip()
            if detail and detail.lower().rstrip(".") not in message.lower():
                message = f"{message} {detail}"
            return message
        if replica.state in ("admitted", "starting", "running") and not replica.ready:
            return ""
    return ""


def key_out(key: ServiceKey, used: int) -> ServiceKeyOut:
    return ServiceKeyOut(
        id=key.id,
        project=key.project.name,
        name=key.name,
        user=key.user_name,
        prefix=key.prefix,
        models=key.models,
        requests_per_minute=key.requests_per_minute,
        tokens_per_minute=key.tokens_per_minute,
        token_budget=key.token_budget,
        budget_period=key.budget_period,
        used_in_period=used,
        created_at=key.created_at,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def sweep_out(sweep: ServiceSweep, service: str) -> SweepOut:
    return SweepOut(
        id=sweep.id,
        service=service,
        state=sweep.state,
        params=dict(sweep.params),
        points=[PointOut(**p) for p in sweep.points],
        error=sweep.error,
        job_id=sweep.job_id,
        user=sweep.user_name,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
    )


def sizing_out(sweep: ServiceSweep, answer: Sizing, gpus_per_replica: object) -> SizingOut:
    per_replica = float(gpus_per_replica) if isinstance(gpus_per_replica, int | float) else 0.0
    return SizingOut(
        sweep_id=sweep.id,
        replicas=answer.replicas,
        concurrency=answer.concurrency,
        requests_per_second_per_replica=answer.requests_per_second_per_replica,
        gpus=answer.replicas * per_replica if answer.replicas is not None else None,
        best_ttft_p95_ms=answer.lowest_ttft_p95_ms,
    )

"""Model services: deploy, list, show, update (rolling), stop, start, remove, replicas'
logs; the engines to deploy with; usage per hour or day (JSON or CSV)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from suanli.api.deps import CallerDep, DatabaseDep, SessionDep, SettingsDep, WorkloadsDep
from suanli.api.problems import language_of
from suanli.api.service_outputs import service_detail_out, services_out, sizing_out, sweep_out
from suanli.config import Settings
from suanli.db.models import Deployment
from suanli.kinds import service as service_kind
from suanli.schemas.jobs import LogQuery
from suanli.schemas.services import (
    EngineOut,
    ServiceDetailOut,
    ServiceListQuery,
    ServiceOut,
    ServiceSpec,
    ServiceUpdate,
    SizingOut,
    SizingQuery,
    SweepOut,
    SweepSpec,
    UsageQuery,
    UsageRow,
)
from suanli.schemas.system import LogChunkOut
from suanli.schemas.types import MAX_INT32
from suanli.services import deployments, service_usage, serving, sweeps

router = APIRouter(tags=["services"])
ServiceId = Annotated[int, Path(ge=1, le=MAX_INT32)]
ReplicaId = Annotated[int, Path(ge=1, le=MAX_INT32)]


def _detail(
    request: Request, session: Session, settings: Settings, deployment: Deployment
) -> ServiceDetailOut:
    ssh_port = request.app.state.ssh_port
    return service_detail_out(session, settings, deployment, language_of(request), ssh_port)


@router.post("/services", response_model=ServiceDetailOut, status_code=201)
def deploy(
    spec: ServiceSpec,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    workloads: WorkloadsDep,
) -> ServiceDetailOut:
    """Deploy a model version with an engine (or a command that listens on $PORT). Its
    name is the model name callers give the gateway (`project/name`, or `name` with a key
    of the project). `replicas`: a number, or `min..max` to autoscale (0 as the minimum:
    scaled to zero when idle, woken by the next request)."""
    deployment = workloads.deploy_service(session, caller.actor, spec)
    return _detail(request, session, settings, deployment)


@router.get("/services", response_model=list[ServiceOut])
def list_services(
    query: Annotated[ServiceListQuery, Query()],
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> list[ServiceOut]:
    """Newest first, from the projects you belong to, with ready replicas counted and why
    those not ready are not."""
    found = serving.list_services(session, caller.actor, query.project)
    return services_out(session, settings, found, language_of(request))


@router.get("/services/{service_id}", response_model=ServiceDetailOut)
def show(
    service_id: ServiceId,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ServiceDetailOut:
    deployment = serving.get(session, caller.actor, service_id)
    return _detail(request, session, settings, deployment)


@router.patch("/services/{service_id}", response_model=ServiceDetailOut)
def update(
    service_id: ServiceId,
    change: ServiceUpdate,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    workloads: WorkloadsDep,
) -> ServiceDetailOut:
    """A new model version, arguments, environment or resources are rolled out one replica
    at a time, each new one ready before an old one stops; replicas and scaling at once."""
    deployment = workloads.update_service(session, caller.actor, service_id, change)
    return _detail(request, session, settings, deployment)


@router.post("/services/{service_id}/stop", response_model=ServiceDetailOut)
def stop(
    service_id: ServiceId,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    workloads: WorkloadsDep,
) -> ServiceDetailOut:
    serving.get(session, caller.actor, service_id)
    deployment = workloads.stop_deployment(session, caller.actor, service_id, serving.SERVICE)
    return _detail(request, session, settings, deployment)


@router.post("/services/{service_id}/start", response_model=ServiceDetailOut)
def start(
    service_id: ServiceId,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    workloads: WorkloadsDep,
) -> ServiceDetailOut:
    serving.get(session, caller.actor, service_id)
    deployment = workloads.start_deployment(session, caller.actor, service_id, serving.SERVICE)
    return _detail(request, session, settings, deployment)


@router.delete("/services/{service_id}", status_code=204)
def remove(
    service_id: ServiceId, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> None:
    """Forget a stopped service whose replicas have all ended; its usage stays."""
    serving.get(session, caller.actor, service_id)
    deployments.remove(session, caller.actor, service_id, settings, serving.SERVICE)


@router.get("/services/{service_id}/replicas/{replica_id}/logs", response_model=LogChunkOut)
def logs(
    service_id: ServiceId,
    replica_id: ReplicaId,
    query: Annotated[LogQuery, Query()],
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> LogChunkOut:
    """A replica's output (the engine's log): why it failed to start, what it serves."""
    serving.get(session, caller.actor, service_id)
    replica = deployments.find_replica(
        session, caller.actor, service_id, replica_id, kind=service_kind.KIND.name
    )
    chunk = workloads.read_log(
        session,
        caller.actor,
        replica.id,
        kind=service_kind.KIND.name,
        offset=query.offset,
        limit=query.limit,
        tail=query.tail,
    )
    return LogChunkOut(text=chunk.text, next_offset=chunk.next_offset, finished=chunk.finished)


@router.post("/services/{service_id}/sweeps", response_model=SweepOut, status_code=201)
def sweep(
    service_id: ServiceId,
    spec: SweepSpec,
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> SweepOut:
    """Run a load sweep (capacity planning): vLLM's serving benchmark through the gateway
    at concurrency 1, 2, 4, … up to `max_concurrency`, as a job of the project. Its curves
    (TTFT, TPOT, throughput per concurrency) appear here when the job has ended."""
    found = workloads.start_sweep(session, caller.actor, service_id, spec)
    return sweep_out(found, serving.get(session, caller.actor, service_id).name)


@router.get("/services/{service_id}/sweeps", response_model=list[SweepOut])
def sweeps_of(
    service_id: ServiceId, caller: CallerDep, database: DatabaseDep, settings: SettingsDep
) -> list[SweepOut]:
    """Newest first; those whose job ended are read (and their keys revoked) first."""
    with database.writing() as session:
        service = serving.get(session, caller.actor, service_id)
        sweeps.settle(session, settings, service.id)
    with database.reading() as session:
        return [
            sweep_out(s, service.name)
            for s in sweeps.list_sweeps(session, caller.actor, service_id)
        ]


@router.get("/services/{service_id}/sizing", response_model=SizingOut)
def sizing_of(
    service_id: ServiceId,
    query: Annotated[SizingQuery, Query()],
    caller: CallerDep,
    session: SessionDep,
) -> SizingOut:
    """How many replicas serve `rps` requests per second with a TTFT p95 of at most
    `ttft_p95_ms`, from the service's newest sweep (or the one named): from measured
    latency and throughput, not from FLOPS."""
    found, answer = sweeps.size(session, caller.actor, service_id, query)
    gpus = serving.get(session, caller.actor, service_id).request.get("gpus")
    return sizing_out(found, answer, gpus)


@router.get("/engines", response_model=list[EngineOut])
def engines(caller: CallerDep, settings: SettingsDep) -> list[EngineOut]:
    """The engines the administrator registered, to deploy services with."""
    return [
        EngineOut(
            name=name,
            version=engine.version,
            protocol=engine.protocol,
            needs_model=any("{model}" in part for part in engine.command),
        )
        for name, engine in sorted(settings.engines.items())
    ]


@router.get("/service-usage", response_model=list[UsageRow])
def usage(
    query: Annotated[UsageQuery, Query()], caller: CallerDep, session: SessionDep
) -> list[UsageRow]:
    """Requests and tokens per hour or day, model, user and key (the last day by hour, the
    last month by day, unless `since` and `until` say otherwise)."""
    rows = service_usage.usage(session, caller.actor, query)
    return [_row(row) for row in rows]


@router.get(
    "/service-usage.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def usage_csv(
    query: Annotated[UsageQuery, Query()], caller: CallerDep, session: SessionDep
) -> StreamingResponse:
    """The same, as CSV, for a spreadsheet or an invoice."""
    rows = service_usage.usage(session, caller.actor, query)
    name = f"usage-{query.project}-{query.group}.csv"
    return StreamingResponse(
        service_usage.as_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def _row(row: service_usage.Usage) -> UsageRow:
    return UsageRow(
        period=row.period,
        model=row.model,
        user=row.user,
        key=row.key,
        requests=row.requests,
        errors=row.errors,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        counted=row.counted,
        ttft_ms_avg=row.ttft_ms_avg,
    )

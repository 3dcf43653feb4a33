"""Time series (query, catalogue, latest values) and `/metrics` for Prometheus."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from suanli.api.deps import CallerDep, SessionDep
from suanli.api.problems import ERROR_RESPONSES
from suanli.core.states import State
from suanli.db.models import Job, Project
from suanli.monitoring.model import METRICS, Sample
from suanli.monitoring.prometheus import CONTENT_TYPE
from suanli.monitoring.prometheus import exposition as render
from suanli.schemas.metrics import MetricOut, MetricQuery, QueryOut
from suanli.services import monitoring

router = APIRouter(prefix="/metrics", tags=["metrics"])
exposition = APIRouter(tags=["metrics"])


def latest_samples(request: Request) -> list[Sample]:
    runtime = request.app.state.runtime
    return list(runtime.metrics.latest) if runtime is not None else []


@router.get("/catalogue", response_model=list[MetricOut])
def catalogue(caller: CallerDep) -> list[MetricOut]:
    """Every metric Suanli collects, with its unit and, for GPUs, its dcgm-exporter name."""
    return [
        MetricOut(name=name, help=m.help, unit=m.unit, kind=m.kind, dcgm=m.dcgm)
        for name, m in METRICS.items()
    ]


@router.get("/query", response_model=QueryOut)
def query(
    params: Annotated[MetricQuery, Query()], caller: CallerDep, session: SessionDep
) -> QueryOut:
    """A metric's series over a time range. Node and GPU metrics are open to everyone signed
    in; `job_*` metrics need a `job=<id>` matcher and access to that job's project."""
    return monitoring.query(session, caller.actor, params)


@exposition.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
        **ERROR_RESPONSES,
    },
)
def prometheus(request: Request, caller: CallerDep, session: SessionDep) -> Response:
    """Nodes, GPUs (dcgm-exporter names) and the platform itself, for Prometheus. Scrape
    with a token: `authorization: {type: Bearer, credentials: sl_...}`."""
    states = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    queues = session.execute(
        select(Project.name, func.count())
        .join(Job, Job.project_id == Project.id)
        .where(Job.state == State.pending)
        .group_by(Project.name)
    ).all()
    gauges = {
        "suanli_jobs": (
            "Jobs by state",
            [({"state": state}, count) for state, count in states],
        ),
        "suanli_queue_length": (
            "Jobs waiting, per project",
            [({"project": name}, count) for name, count in queues],
        ),
    }
    platform = request.app.state.platform
    page = render(latest_samples(request), gauges, [platform.api_latency, platform.scheduler_cycle])
    return Response(page, media_type=CONTENT_TYPE)

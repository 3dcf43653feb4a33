"""Time series (query, catalogue, latest values) and `/metrics` for Prometheus."""

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from suanli.api.deps import CallerDep, SessionDep
from suanli.api.problems import ERROR_RESPONSES
from suanli.core.states import State
from suanli.db.models import Job, Project
from suanli.monitoring import store
from suanli.monitoring.model import METRICS, Sample
from suanli.monitoring.prometheus import CONTENT_TYPE
from suanli.monitoring.prometheus import exposition as render
from suanli.schemas.metrics import MetricOut, MetricQuery, QueryOut, SeriesOut
from suanli.services import jobs

router = APIRouter(prefix="/metrics", tags=["metrics"])
exposition = APIRouter(tags=["metrics"])
DEFAULT_POINTS = 240


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
    match = params.match()
    if params.metric.startswith("job_"):
        job_id = match.get("job", "")
        jobs.get_job(session, caller.actor, int(job_id) if job_id.isdigit() else 0)
    now = int(time.time())
    end = int(params.end.timestamp()) if params.end else now
    start = end - params.range
    step = params.step or max(10, params.range // DEFAULT_POINTS)
    found = store.query(session, params.metric, match, start, end, step, now)
    return QueryOut(
        start=datetime.fromtimestamp(start, UTC),
        end=datetime.fromtimestamp(end, UTC),
        step=max(step, (end - start) // store.MAX_POINTS + 1),
        unit=METRICS[params.metric].unit,
        series=[SeriesOut(metric=s.name, labels=s.labels, points=s.points) for s in found],
    )


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

"""Time series (query, catalogue, latest values) and `/metrics` for Prometheus.

`/metrics` shows every tenant (jobs' series, queues per project): it is for administrators,
and for the tokens they make for Prometheus (kind `metrics`), which read nothing else.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import func, select

from suanli.api.deps import CallerDep, SessionDep, bearer, client_address, get_database
from suanli.api.problems import ERROR_RESPONSES
from suanli.core.errors import Unauthenticated
from suanli.core.states import State
from suanli.db.models import Job, Project
from suanli.monitoring.model import METRICS, Sample
from suanli.monitoring.prometheus import CONTENT_TYPE
from suanli.monitoring.prometheus import exposition as render
from suanli.schemas.metrics import MetricOut, MetricQuery, QueryOut
from suanli.services import monitoring, tokens
from suanli.services.actor import Actor
from suanli.services.common import require_admin

router = APIRouter(prefix="/metrics", tags=["metrics"])
exposition = APIRouter(tags=["metrics"])


def scraper(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    """An administrator, by any live token of theirs: a `metrics` token as well as the
    others (which is why this is not `get_caller`, which refuses `metrics` tokens). The
    right is checked at every scrape, so a demoted administrator's tokens stop reading."""
    secret = credentials.credentials.strip() if credentials else ""
    if not secret:
        raise Unauthenticated()
    database = get_database(request)
    with database.reading() as session:
        user, token = tokens.authenticate_any(session, secret)
    if tokens.needs_last_used(token):
        with database.writing() as writer:
            tokens.touch(writer, token.id)
    actor = Actor(user=user, address=client_address(request))
    require_admin(actor)
    return actor


ScraperDep = Annotated[Actor, Depends(scraper)]


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
    in; `job_*` metrics need a `job=<id>` matcher and access to that job's project; series
    labelled with a job (a GPU process's memory) show only to those who may see the job."""
    return monitoring.query(session, caller.actor, params)


@exposition.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
        **ERROR_RESPONSES,
    },
)
def prometheus(request: Request, scraper: ScraperDep, session: SessionDep) -> Response:
    """Nodes, GPUs (dcgm-exporter names), jobs and the platform itself, for Prometheus
    (administrators). Scrape with a token made for it (`POST /api/v1/me/tokens` with
    `kind: metrics`), which reads nothing else: `authorization: {type: Bearer, credentials:
    sl_...}`."""
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
    page = render(
        latest_samples(request),
        gauges,
        [platform.api_latency, platform.scheduler_cycle, *platform.gateway.all()],
    )
    return Response(page, media_type=CONTENT_TYPE)

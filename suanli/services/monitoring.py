"""Reading the time series: who may see which, over what range and step.

Node and GPU series are open to everyone signed in (capacity is no secret); a job's series
(`job_*`, labelled `job=<id>`) only to those who may see the job.
"""

import time
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from suanli.monitoring import store
from suanli.monitoring.model import METRICS
from suanli.schemas.metrics import MetricQuery, QueryOut, SeriesOut
from suanli.services import jobs
from suanli.services.actor import Actor

DEFAULT_POINTS = 240


def query(session: Session, actor: Actor, params: MetricQuery) -> QueryOut:
    match = params.match()
    if params.metric.startswith("job_"):
        job_id = match.get("job", "")
        jobs.get_job(session, actor, int(job_id) if job_id.isdigit() else 0)
    now = int(time.time())
    end = int(params.end.timestamp()) if params.end else now
    start = end - params.range
    step = params.step or max(10, params.range // DEFAULT_POINTS)
    step = max(step, (end - start) // store.MAX_POINTS + 1)
    found = store.query(session, params.metric, match, start, end, step, now)
    return QueryOut(
        start=datetime.fromtimestamp(start, UTC),
        end=datetime.fromtimestamp(end, UTC),
        step=step,
        unit=METRICS[params.metric].unit,
        series=[SeriesOut(metric=s.name, labels=s.labels, points=s.points) for s in found],
    )

"""Reading the time series, and who may see what of the tenants in monitoring.

Node and GPU series are open to everyone signed in (capacity and hardware health are no
secret: every signed-in user sees the nodes); a job's series (`job_*`, labelled `job=<id>`)
only to those who may see the job. The same rule holds for anything else whose labels name a
tenant (an alert, a silence, a rule, a GPU process's memory): see `Sight`.
"""

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.db.models import Job, Membership, Project
from suanli.monitoring import store
from suanli.monitoring.model import METRICS
from suanli.schemas.metrics import MetricQuery, QueryOut, SeriesOut
from suanli.schemas.types import MAX_INT32
from suanli.services import jobs
from suanli.services.actor import Actor

DEFAULT_POINTS = 240
# Labels that name a tenant: a job (its id and name), its project, its user.
TENANT_LABELS = frozenset({"job", "job_name", "project", "user"})


@dataclass(frozen=True)
class Sight:
    """What a reader may see of the tenants: administrators everything; anyone else the
    projects they belong to (any role) and those projects' jobs, as the projects' and jobs'
    own pages decide. Labels that name no tenant (a node, a GPU) are open to everyone."""

    everything: bool
    project_ids: frozenset[int] = frozenset()
    projects: frozenset[str] = frozenset()
    jobs: frozenset[str] = frozenset()  # visible jobs among those asked about, ids as text

    def sees_project(self, project_id: int) -> bool:
        return self.everything or project_id in self.project_ids

    def sees(self, labels: Mapping[str, str]) -> bool:
        """Whether labels may be shown: every job and project they name must be visible. A
        user or a job's name without its job or project cannot be checked, so it is hidden."""
        if self.everything or not TENANT_LABELS & labels.keys():
            return True
        if "job" in labels and str(labels["job"]) not in self.jobs:
            return False
        if "project" in labels and str(labels["project"]) not in self.projects:
            return False
        return "job" in labels or "project" in labels


def sight(session: Session, actor: Actor, labels: Iterable[Mapping[str, str]] = ()) -> Sight:
    """The actor's sight, knowing the jobs named in `labels` (so that one query answers for
    a whole page of alerts or series)."""
    if actor.is_admin:
        return Sight(everything=True)
    mine = session.execute(
        select(Project.id, Project.name)
        .join(Membership, Membership.project_id == Project.id)
        .where(Membership.user_id == actor.account.id)
    ).all()
    project_ids = frozenset(project_id for project_id, _ in mine)
    named = {int(v) for one in labels if _is_id(v := str(one.get("job", "")))}
    visible: frozenset[str] = frozenset()
    if named and project_ids:
        found = session.scalars(
            select(Job.id).where(Job.id.in_(named), Job.project_id.in_(project_ids))
        )
        visible = frozenset(str(job_id) for job_id in found)
    return Sight(
        everything=False,
        project_ids=project_ids,
        projects=frozenset(name for _, name in mine),
        jobs=visible,
    )


def _is_id(text: str) -> bool:
    return text.isdigit() and 0 < int(text) <= MAX_INT32


def query(session: Session, actor: Actor, params: MetricQuery) -> QueryOut:
    """A metric's series. `job_*` metrics need a `job=<id>` matcher naming a job the actor
    may see (else 404, as for the job itself); of any metric, series whose labels name a
    tenant the actor may not see are left out."""
    match = params.match()
    if params.metric.startswith("job_"):
        job_id = match.get("job", "")
        jobs.get_job(session, actor, int(job_id) if _is_id(job_id) else 0)
    now = int(time.time())
    end = int(params.end.timestamp()) if params.end else now
    start = end - params.range
    step = params.step or max(10, params.range // DEFAULT_POINTS)
    step = max(step, (end - start) // store.MAX_POINTS + 1)
    found = store.query(session, params.metric, match, start, end, step, now)
    reader = sight(session, actor, (s.labels for s in found))
    return QueryOut(
        start=datetime.fromtimestamp(start, UTC),
        end=datetime.fromtimestamp(end, UTC),
        step=step,
        unit=METRICS[params.metric].unit,
        series=[
            SeriesOut(metric=s.name, labels=s.labels, points=s.points)
            for s in found
            if reader.sees(s.labels)
        ],
    )

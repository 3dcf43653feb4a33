"""The deployment controller: keeps each deployment at its wanted number of replicas.

Every tick it compares each deployment with its replicas (rows of its replica kind) and
writes the difference: new pending replicas for what is missing, a stop (`scaled_down`) for
what is surplus. Replicas that keep ending by themselves are replaced one at a time, after a
backoff that doubles with each failure in a row (5 s up to 5 min); one that ran for
`HEALTHY_SECONDS` ends the streak. The decision is a pure function of the rows (`plan`), so
a restarted server decides as the one before it would have.

It launches nothing itself: new replicas are pending rows that the workload controller
schedules and launches like any workload.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.core.states import ACTIVE, State
from suanli.db.engine import Database
from suanli.db.models import Deployment, Job
from suanli.kinds import demand
from suanli.services.jobs import note

INTERVAL = 2.0
HEALTHY_SECONDS = 60.0
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 300.0
SCALED_DOWN = "scaled_down"
LIVE = (State.pending, *ACTIVE)


@dataclass(frozen=True)
class Replica:
    id: int
    state: str
    stop_reason: str
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class Plan:
    start: int  # new replicas to add
    stop: tuple[int, ...]  # replicas to stop
    failures: int  # replicas that ended by themselves in a row
    next_start_at: float | None  # the next replacement waits until then


def plan(wanted: int, replicas: Sequence[Replica], now: float) -> Plan:
    """What to do for a deployment that wants `wanted` replicas and has `replicas` (live
    and recently ended, any order)."""
    live = [r for r in replicas if r.state in LIVE and not r.stop_reason]
    ended = sorted(
        (r for r in replicas if r.state not in LIVE and r.finished_at is not None),
        key=lambda r: (r.finished_at, r.id),
        reverse=True,
    )
    failures = _streak(ended, live, now)
    if len(live) > wanted:
        # The not yet running go first, then the youngest.
        order = sorted(live, key=lambda r: (r.state == State.running, -r.id))
        return Plan(0, tuple(r.id for r in order[: len(live) - wanted]), failures, None)
    missing = wanted - len(live)
    if not missing or not failures:
        return Plan(missing, (), failures, None)
    if any(r.state != State.running for r in live):
        return Plan(0, (), failures, None)  # after failures: one replacement at a time
    last_end = ended[0].finished_at or now
    next_start = float(math.ceil(last_end + backoff(failures)))  # whole seconds: kept as shown
    if now < next_start:
        return Plan(0, (), failures, next_start)
    return Plan(1, (), failures, None)


def backoff(failures: int) -> float:
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (failures - 1))


def _streak(ended: Sequence[Replica], live: Sequence[Replica], now: float) -> int:
    """Replicas that ended by themselves, newest first, until one that was stopped on
    purpose or had run long enough to count as healthy. A replica started since the last of
    them that has now run that long ends the streak too."""
    last_end = ended[0].finished_at if ended else None
    if last_end is not None and any(
        r.state == State.running
        and r.started_at is not None
        and r.started_at >= last_end
        and now - r.started_at >= HEALTHY_SECONDS
        for r in live
    ):
        return 0
    count = 0
    for replica in ended:
        if replica.stop_reason:
            break
        ran = (replica.finished_at or 0.0) - (replica.started_at or replica.finished_at or 0.0)
        if ran >= HEALTHY_SECONDS:
            break
        count += 1
    return count


class DeploymentController:
    name = "deployments"
    interval = INTERVAL

    def __init__(self, database: Database, wake: Callable[[], None]):
        self.database = database
        self.wake = wake

    def tick(self) -> None:
        now = time.time()
        with self.database.reading() as session:
            deployments = session.execute(
                select(Deployment.id, Deployment.state, Deployment.replicas)
            ).all()
            plans = {
                row.id: plan(
                    row.replicas if row.state == "active" else 0,
                    self._replicas(session, row.id),
                    now,
                )
                for row in deployments
            }
        if not any(p.start or p.stop for p in plans.values()) and not self._shown_changed(plans):
            return
        with self.database.writing() as session:
            changed = False
            for deployment_id, decided in plans.items():
                deployment = session.get(Deployment, deployment_id)
                if deployment is None:
                    continue
                changed |= self._apply(session, deployment, decided)
            session.commit()
        if changed:
            self.wake()

    def _replicas(self, session: Session, deployment_id: int) -> list[Replica]:
        """Its live replicas and the last twenty that ended: enough for the streak."""
        rows = session.execute(
            select(Job.id, Job.state, Job.stop_reason, Job.started_at, Job.finished_at)
            .where(Job.deployment_id == deployment_id)
            .order_by(Job.id.desc())
            .limit(200)
        ).all()
        live = [r for r in rows if r.state in LIVE]
        ended = [r for r in rows if r.state not in LIVE][:20]
        return [
            Replica(r.id, r.state, r.stop_reason, _epoch(r.started_at), _epoch(r.finished_at))
            for r in (*live, *ended)
        ]

    def _shown_changed(self, plans: dict[int, Plan]) -> bool:
        """Whether a deployment's failures or next start, as shown, need writing."""
        with self.database.reading() as session:
            shown = {
                row.id: (row.failures, _epoch(row.next_start_at))
                for row in session.execute(
                    select(Deployment.id, Deployment.failures, Deployment.next_start_at)
                ).all()
            }
        return any(shown.get(i) != (p.failures, p.next_start_at) for i, p in plans.items())

    def _apply(self, session: Session, deployment: Deployment, decided: Plan) -> bool:
        deployment.failures = decided.failures
        deployment.next_start_at = (
            datetime.fromtimestamp(decided.next_start_at, UTC) if decided.next_start_at else None
        )
        for replica_id in decided.stop:
            job = session.get(Job, replica_id)
            if job is not None and job.state in LIVE and not job.stop_reason:
                job.stop_reason = SCALED_DOWN
                note(job, "event.scale_down")
        for _ in range(decided.start):
            session.add(_replica(deployment))
        return bool(decided.start or decided.stop)


def _replica(deployment: Deployment) -> Job:
    job = Job(
        kind=deployment.kind,
        name=deployment.name,
        project_id=deployment.project_id,
        user_id=deployment.user_id,
        user_name=deployment.user_name,
        spec=dict(deployment.template),
        spec_version=deployment.spec_version,
        request=dict(deployment.request),
        priority=str(deployment.template.get("priority", "normal")),
        gpus=demand.waiting_gpus(deployment.request),
        state=State.pending,
        deployment=deployment,
    )
    note(job, "event.replica_of", deployment=deployment.name)
    return job


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None

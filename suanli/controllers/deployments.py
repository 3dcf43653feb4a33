"""The deployment controller: keeps each deployment at its wanted number of replicas.

Every tick it compares each deployment with its replicas (rows of its replica kind) and
writes the difference: new pending replicas for what is missing, a stop (`scaled_down`) for
what is surplus. Replicas that keep ending by themselves are replaced one at a time, after a
backoff that doubles with each failure in a row (5 s up to 5 min); one that ran for
`HEALTHY_SECONDS` ends the streak. The decision is a pure function of the rows (`plan`), so
a restarted server decides as the one before it would have.

A deployment whose template (or what it reads) changed is updated rolling: one new replica
at a time, and an old one stops only once a new one is ready (a service's replica answers
its health check; another kind's is running), so the count that serves never drops.

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
from suanli.kinds.registry import kind_of
from suanli.services.jobs import note

INTERVAL = 2.0
HEALTHY_SECONDS = 60.0
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 300.0
SCALED_DOWN = "scaled_down"
UPDATED = "updated"
LIVE = (State.pending, *ACTIVE)


@dataclass(frozen=True)
class Replica:
    id: int
    state: str
    stop_reason: str
    started_at: float | None
    finished_at: float | None
    outdated: bool = False  # made from an earlier template: replaced by a rolling update
    ready: bool = True  # serving (a live replica of a kind that is not probed: running)


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
    if any(r.outdated for r in live):
        return _rolling(wanted, live, ended, failures, now)
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


def _rolling(
    wanted: int, live: Sequence[Replica], ended: Sequence[Replica], failures: int, now: float
) -> Plan:
    """One new replica at a time; an old one stops for each new one that is ready beyond
    the wanted count (the old ones not serving first). New ones that keep failing wait for
    the backoff while the old ones go on serving."""
    old = [r for r in live if r.outdated]
    new = [r for r in live if not r.outdated]
    serving_new = sum(1 for r in new if r.ready)
    surplus = serving_new + len(old) - wanted if wanted else len(old)
    order = sorted(old, key=lambda r: (r.ready, r.state == State.running, -r.id))
    stop = tuple(r.id for r in order[: max(0, surplus)])
    if len(new) >= wanted or any(not r.ready for r in new):
        return Plan(0, stop, failures, None)
    if failures:
        last_end = ended[0].finished_at if ended else now
        next_start = float(math.ceil((last_end or now) + backoff(failures)))
        if now < next_start:
            return Plan(0, stop, failures, next_start)
    return Plan(1, stop, failures, None)


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
            deployments = session.scalars(select(Deployment)).all()
            plans = {
                deployment.id: plan(
                    deployment.replicas if deployment.state == "active" else 0,
                    self._replicas(session, deployment),
                    now,
                )
                for deployment in deployments
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

    def _replicas(self, session: Session, deployment: Deployment) -> list[Replica]:
        """Its live replicas and the last twenty that ended: enough for the streak."""
        rows = session.execute(
            select(
                Job.id,
                Job.state,
                Job.stop_reason,
                Job.started_at,
                Job.finished_at,
                Job.spec,
                Job.inputs,
                Job.ready_at,
            )
            .where(Job.deployment_id == deployment.id)
            .order_by(Job.id.desc())
            .limit(200)
        ).all()
        live = [r for r in rows if r.state in LIVE]
        ended = [r for r in rows if r.state not in LIVE][:20]
        probed = kind_of(deployment.kind).probed
        return [
            Replica(
                r.id,
                r.state,
                r.stop_reason,
                _epoch(r.started_at),
                _epoch(r.finished_at),
                outdated=r.spec != deployment.template or (r.inputs or []) != deployment.inputs,
                ready=r.state == State.running and (r.ready_at is not None or not probed),
            )
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
                if job.spec != deployment.template or job.inputs != deployment.inputs:
                    job.stop_reason = UPDATED
                    note(job, "event.replaced_by_update")
                else:
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
        inputs=list(deployment.inputs or []),
    )
    note(job, "event.replica_of", deployment=deployment.name)
    return job


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None

"""The workload controller: follows running workloads, stops what was asked to stop,
schedules, and launches what the scheduler admitted. It knows workloads of every kind only
through the kinds registry (how one launches, its own stop reasons) and the scheduler request
kept at submit (suanli.kinds.demand); it never names a kind.

Each side effect is bracketed by database writes: a workload is `starting` (and its attempt
counted) before the backend launches it, and gets its handle right after. A server killed in
between finds a `starting` row without a handle and adopts it: the backend's launch is
idempotent for one attempt, so it is neither lost nor started twice.
"""

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from suanli import faults
from suanli.backends.base import Backend, ExitStatus, Handle, LaunchSpec, Limits, Status
from suanli.config import Settings
from suanli.core.states import ACTIVE, TERMINAL, State
from suanli.db.engine import Database
from suanli.db.models import Job, Project, utcnow
from suanli.kinds import demand
from suanli.kinds.base import Start, Unreadable, Unsupported
from suanli.kinds.demand import Demand
from suanli.kinds.registry import KINDS, kind_of
from suanli.monitoring.prometheus import Histogram
from suanli.scheduler import decayed_usage, schedule
from suanli.scheduler import model as sched
from suanli.services import unixaccounts, workfolders
from suanli.services.jobs import PRIORITIES, job_dir, log_path, move, note, quota_of
from suanli.services.nodes import scheduler_nodes

log = logging.getLogger("suanli.controllers.workloads")

STOP_GRACE_SECONDS = 10.0
# Seconds between ticks; shorter while an engine's queue holds a launched job, so that its
# start is seen (and shown) within half a second.
INTERVAL = 2.0
ENGINE_START_INTERVAL = 0.5
# A launched job still in its engine's queue: reason.engine_queued, with the engine's reason.
ENGINE_QUEUED = "engine_queued"
USAGE_HALF_LIFE = 7 * 86400.0
# The stop reason, then exit reason, of a workload whose row can no longer be read.
UNREADABLE = "unreadable"


class WorkloadController:
    name = "workloads"
    interval = INTERVAL

    def __init__(
        self,
        settings: Settings,
        database: Database,
        backend: Backend,
        cycle_times: Histogram | None = None,
        replica_ended: Callable[[], None] | None = None,
    ):
        """`replica_ended`: called after a tick in which a deployment's workload ended, so
        that its deployment replaces it at once rather than at its next tick."""
        self.settings = settings
        self.database = database
        self.backend = backend
        self.engine = backend.name.capitalize()  # as users read it: "Slurm"
        self.cycle_times = cycle_times
        self.usage: dict[str, float] = {}
        self._last_tick: float | None = None
        self._demands: dict[int, Demand] = {}
        # Derived this cycle for rows from before requests were kept: written back with it.
        self._demand_json: dict[int, dict[str, Any]] = {}
        self.replica_ended = replica_ended
        self._replica_ended = False

    def tick(self) -> None:
        self.follow()
        self.send_stops()
        started = time.perf_counter()
        admitted = self.schedule()
        if self.cycle_times is not None:
            self.cycle_times.observe(time.perf_counter() - started)
        self.launch(admitted)
        if self._replica_ended and self.replica_ended is not None:
            self.replica_ended()
        self._replica_ended = False

    # 1. Follow what runs: re-adopts jobs after a restart, records how they ended.
    def follow(self) -> None:
        with self.database.reading() as session:
            rows = session.execute(
                select(
                    Job.id,
                    Job.handle,
                    Job.state,
                    Job.warnings,
                    Job.pending_code,
                    Job.pending_params,
                ).where(Job.state.in_([State.starting, State.running]))
            ).all()
        queued = False
        for row in rows:
            if row.handle is None:  # the server stopped between `starting` and the handle
                self.adopt(row.id)
                continue
            status = self.backend.poll(row.handle)
            queued = queued or bool(status.running and status.queued)
            if self._unchanged(row, status):
                continue  # no write transaction for a job whose news is no news
            with self.database.writing() as session:
                job = _load(session, row.id)
                if job is None or job.state not in (State.starting, State.running):
                    continue
                if status.running:
                    job.warnings = list(status.warnings)
                    if job.state == State.starting:
                        self._starting(job, status)
                else:
                    self._take_engine_start(job, status)  # it may have ended unseen running
                    self._ended(job, status.exit or ExitStatus("lost", detail="no exit status"))
                session.commit()
        self.interval = ENGINE_START_INTERVAL if queued else INTERVAL

    def adopt(self, job_id: int) -> None:
        """A job left `starting` without a handle by a server that stopped mid-launch: the
        backend may have started it, or not. Its launch is idempotent for the same attempt
        (the same state directory): asked again it returns the handle of what it started,
        or starts it now if it never did. Either way exactly one process runs, tracked by
        this row; nothing is declared lost while it may still run."""
        with self.database.writing() as session:
            job = _load(session, job_id)
            if job is None or job.state != State.starting or job.handle is not None:
                return
            try:
                spec = self._launch_spec(job, fresh=False)
                outcome: Handle | Exception = self.backend.launch(spec)
            except Exception as error:
                log.exception("re-adopting job %s failed", job_id)
                outcome = error
            note(job, "event.adopted")
            self._launched(job, outcome)
            session.commit()

    def _unchanged(self, row: Any, status: Status) -> bool:
        """Still running (or still queued for the same reason) with the same warnings."""
        if not status.running or list(status.warnings) != list(row.warnings or ()):
            return False
        if row.state == State.running:
            return True
        return bool(status.queued) and (row.pending_code, row.pending_params) == (
            ENGINE_QUEUED,
            self._queued_params(status),
        )

    def _queued_params(self, status: Status) -> dict[str, str]:
        return {"engine": self.engine, "reason": status.queued}

    def _starting(self, job: Job, status: Status) -> None:
        """A job in the engine's queue: show the engine's reason until it starts."""
        if status.queued:
            job.pending_code, job.pending_params = ENGINE_QUEUED, self._queued_params(status)
            return
        job.pending_code, job.pending_params = "", {}
        self._take_engine_start(job, status)
        event, params = _placed("event.started_on", _placement(job.placement))
        move(job, State.running, event, **params)

    @staticmethod
    def _take_engine_start(job: Job, status: Status) -> None:
        """Where and when the engine started it, as far as the engine says and we lack."""
        if status.placement and not job.placement:
            job.placement = status.placement
        if status.started_at and not job.started_at:
            job.started_at = datetime.fromtimestamp(status.started_at, UTC)

    def _ended(self, job: Job, exit: ExitStatus) -> None:
        self._replica_ended = self._replica_ended or job.deployment_id is not None
        self._record_exit(job, exit)
        if job.state in TERMINAL and exit.ended_at:  # not the time we learnt it
            job.finished_at = datetime.fromtimestamp(exit.ended_at, UTC)

    def _record_exit(self, job: Job, exit: ExitStatus) -> None:
        job.exit_reason, job.exit_code, job.exit_signal = exit.reason, exit.exit_code, exit.signal
        if job.stop_reason != UNREADABLE:  # else the detail says why it could not be read
            job.exit_detail = exit.detail[:2000]
        job.usage = dict(exit.usage)
        retries = _retries(job)
        stop = job.stop_reason
        if stop and stop != "preempted":  # cancelled, or a reason of its kind's own
            _end_stopped(job, "event.cancelled")
        elif exit.reason == "exit_code" and exit.exit_code == 0 and not stop:
            move(job, State.succeeded, "event.succeeded")
        elif job.attempts <= retries and exit.reason != "cancelled":
            reason = "preempted" if stop == "preempted" else exit.reason
            self._requeue(
                job,
                "event.requeued",
                reason=reason,
                detail=exit.detail,
                attempt=job.attempts,
                attempts=retries + 1,
            )
        else:
            if stop == "preempted":
                job.exit_reason = "preempted"
            move(job, State.failed, "event.failed", **_exit_params(job))

    def _requeue(self, job: Job, event: str, **params: Any) -> None:
        job.handle, job.placement, job.stop_reason, job.stop_sent_at = None, None, "", None
        move(job, State.pending, event, **params)

    # 2. Stops asked for by users (cancel) or by the scheduler (preemption).
    def send_stops(self) -> None:
        with self.database.writing() as session:
            jobs = session.scalars(
                select(Job).where(
                    Job.stop_reason != "",
                    Job.stop_sent_at.is_(None),
                    Job.state.in_([State.pending, *ACTIVE]),
                )
            ).all()
            for job in jobs:
                # Pending (a replica scaled down while it waited), or admitted and not
                # launched yet: nothing to stop.
                if job.handle is None:
                    if job.stop_reason == "preempted":
                        self._requeue(job, "event.preempted_before_start")
                    else:
                        _end_stopped(job, "event.cancelled_before_start")
                    continue
                self.backend.stop(
                    job.handle, reason=job.stop_reason, grace_seconds=STOP_GRACE_SECONDS
                )
                job.stop_sent_at = utcnow()
                note(job, f"event.stopping_{job.stop_reason}")
            session.commit()

    # 3. Decide: one scheduler cycle over a snapshot of the database.
    def schedule(self) -> list[int]:
        """Decide on a read snapshot, then apply the decisions in a short write transaction,
        re-checking each job's state: SQLite's write lock is held for the writes only, not
        for the whole cycle, so submits are not held up by scheduling."""
        now = time.time()
        with self.database.reading() as session:
            active = session.execute(
                select(
                    Job.id,
                    Job.kind,
                    Job.state,
                    Job.stop_reason,
                    Job.placement,
                    Job.priority,
                    Job.user_name,
                    Job.submitted_at,
                    Job.started_at,
                    Project.name,
                    Job.pending_code,
                    Job.pending_params,
                    Job.pending_position,
                )
                .join(Project)
                .where(Job.state.in_([State.pending, *ACTIVE]))
            ).all()
            nodes = scheduler_nodes(session)
            quotas = _quotas(session)
            kept = _kept(session, [row.id for row in active if row.id not in self._demands])
        self._forget({row.id for row in active})
        places_work = self.backend.capabilities.places_work
        unreadable: dict[int, str] = {}
        workloads: dict[int, sched.Workload] = {}
        for row in active:
            try:
                workloads[row.id] = self._workload(row, kept)
            except Unreadable as error:  # failed below; the rest of the queue goes on
                unreadable[row.id] = str(error)
        pending = tuple(
            workloads[row.id]
            for row in active
            if row.state == State.pending and not row.stop_reason and row.id in workloads
        )
        # An engine's jobs hold capacity without a placement of ours; our own are counted
        # from their placement.
        running = tuple(
            workloads[row.id]
            for row in active
            if row.state in ACTIVE and (row.placement or places_work) and row.id in workloads
        )
        if self._last_tick is not None:
            self.usage = decayed_usage(
                self.usage,
                running,
                elapsed=now - self._last_tick,
                half_life=USAGE_HALF_LIFE,
                nodes=nodes,
            )
        self._last_tick = now
        decisions = schedule(
            sched.Snapshot(
                now=now,
                nodes=nodes,
                quotas=quotas,
                pending=pending,
                running=running,
                usage=self.usage,
            ),
            places_work=places_work,
        )
        shown = {
            row.id: (row.pending_code, row.pending_params, row.pending_position) for row in active
        }
        changed_reasons = {
            job_id: reason
            for job_id, reason in decisions.pending.items()
            if shown.get(job_id) != (reason.code, dict(reason.params), reason.position)
        }
        derived = {
            row.id: self._demand_json[row.id] for row in active if row.id in self._demand_json
        }
        if not (decisions.admit or decisions.preempt or changed_reasons or unreadable or derived):
            return []
        admitted = []
        with self.database.writing() as session:
            self._keep_derived(session, derived)
            for job_id, reason in unreadable.items():
                job = _load(session, job_id)
                if job is not None and job.state in (State.pending, *ACTIVE):
                    self._unreadable(job, reason)
            for admission in decisions.admit:
                job = session.get(Job, admission.workload)
                if job is None or job.state != State.pending or job.stop_reason:
                    continue  # cancelled meanwhile: the next cycle decides again
                job.placement = _placement_dict(admission.placement)
                job.gpus = admission.charge
                job.pending_code, job.pending_params, job.pending_position = "", {}, 0
                event, params = _placed("event.admitted", admission.placement)
                move(job, State.admitted, event, **params)
                admitted.append(job.id)
            for preemption in decisions.preempt:
                victim = session.get(Job, preemption.victim)
                if victim is not None and victim.state in ACTIVE and not victim.stop_reason:
                    victim.stop_reason = "preempted"
                    note(victim, "event.preempted_for", job=preemption.beneficiary)
            for job_id, reason in changed_reasons.items():
                job = session.get(Job, job_id)
                if job is not None and job.state == State.pending:
                    job.pending_code, job.pending_params = reason.code, dict(reason.params)
                    job.pending_position = reason.position
            session.commit()
        return admitted

    def _workload(self, row: Any, kept: dict[int, Any]) -> sched.Workload:
        wanted = self._demand(row, kept)
        placement = None
        if row.placement and not self.backend.capabilities.places_work:  # an engine's: for people
            placement = _placement(row.placement)
        return sched.Workload(
            id=row.id,
            project=row.name,
            user=row.user_name,
            request=wanted.request,
            priority=PRIORITIES.get(row.priority, sched.Priority.normal),
            submitted_at=row.submitted_at.timestamp(),
            preemptible=wanted.preemptible,
            max_duration=wanted.max_duration,
            started_at=row.started_at.timestamp() if row.started_at else None,
            placement=placement,
            identity=unixaccounts.account_of(self.settings, row.user_name) or "",
        )

    def _demand(self, row: Any, kept: dict[int, Any]) -> Demand:
        """What the workload asks of the scheduler, as kept at submit; read once, when the
        workload is first seen (`kept`), not on every cycle. A row from before it was kept
        gets it derived from its spec here, and kept by this cycle's write. Unreadable when
        neither can be read."""
        if row.id not in self._demands:
            kind = kind_of(row.kind)  # a kind this server does not know is not scheduled
            stored = kept.get(row.id)
            if stored is None:
                raise Unreadable("the row changed while it was read")
            request = stored.request
            if request is None:
                request = demand.of(kind.load(stored.spec, stored.spec_version))
                self._demand_json[row.id] = request
            self._demands[row.id] = demand.read(request)
        return self._demands[row.id]

    def _keep_derived(self, session: Session, derived: dict[int, dict[str, Any]]) -> None:
        for job_id, kept in derived.items():
            job = session.get(Job, job_id)
            if job is not None and job.request is None:
                job.request = kept
        self._demand_json.clear()

    def _unreadable(self, job: Job, reason: str) -> None:
        """A row the server cannot read any more (changed by hand, or by a downgrade): it
        fails, saying why, instead of stopping the scheduling of every other workload. One
        that may still run is stopped first (what it holds can no longer be counted)."""
        if job.stop_reason == UNREADABLE:
            return  # being stopped
        log.warning("workload %s cannot be read: %s", job.id, reason)
        job.exit_reason, job.exit_detail = UNREADABLE, reason[:2000]
        if job.handle is not None:
            job.stop_reason, job.stop_sent_at = UNREADABLE, None
            return
        move(job, State.failed, "event.unreadable", reason=reason)

    def _forget(self, active: set[int]) -> None:
        for job_id in set(self._demands) - active:
            del self._demands[job_id]

    # 4. Act: launch, with the attempt written down before and the handle right after.
    def launch(self, job_ids: list[int]) -> None:
        """Launch what was admitted: one write transaction marks them all `starting`, the
        backend starts each, one more records every handle (two commits however many jobs
        a cycle admits: a burst of submits is not held up by a commit per job)."""
        if not job_ids:
            return
        specs: dict[int, LaunchSpec] = {}
        with self.database.writing() as session:
            for job_id in job_ids:
                job = _load(session, job_id)
                if job is None or job.state != State.admitted:
                    continue
                job.attempts += 1
                move(job, State.starting, "event.attempt", attempt=job.attempts)
                try:
                    specs[job_id] = self._launch_spec(job, fresh=True)
                except Unreadable as error:
                    self._unreadable(job, str(error))
                except (unixaccounts.AccountError, OSError, Unsupported) as error:
                    self._ended(job, ExitStatus("launch_error", detail=str(error)))
            session.commit()
        if specs:
            faults.point("launch.marked_starting")
        outcomes: dict[int, Handle | Exception] = {}
        for job_id, spec in specs.items():
            try:
                outcomes[job_id] = self.backend.launch(spec)
            except Exception as error:  # a launch error fails this attempt, not the others
                log.exception("launching job %s failed", job_id)
                outcomes[job_id] = error
            faults.point("launch.launched_one")
        if not outcomes:
            return
        with self.database.writing() as session:
            for job_id, outcome in outcomes.items():
                job = _load(session, job_id)
                if job is not None:
                    self._launched(job, outcome)
            session.commit()
        faults.point("launch.recorded")

    def _launched(self, job: Job, outcome: Handle | Exception) -> None:
        """Record what the backend's launch gave: the handle, or why it failed."""
        if isinstance(outcome, Exception):
            self._ended(job, ExitStatus("launch_error", detail=str(outcome)))
            return
        job.handle = outcome
        job.warnings = list(self.backend.warnings(outcome))
        if self.backend.capabilities.places_work:  # in its engine's queue: follow() sees it start
            note(job, "event.submitted_to_engine", engine=self.engine)
            self.interval = ENGINE_START_INTERVAL
        else:
            job.started_at = utcnow()
            move(job, State.running, "event.started")

    def _launch_spec(self, job: Job, *, fresh: bool) -> LaunchSpec:
        """What the backend needs to start this attempt: the platform's part (account,
        folder, resources, placement) here, the command and its surroundings from the kind.
        `fresh`: a new attempt; else the same attempt again, for `adopt`."""
        kind = kind_of(job.kind)
        spec = kind.load(job.spec, job.spec_version)
        run_as = unixaccounts.account_of(self.settings, job.user_name)
        account = unixaccounts.ensure(self.settings, run_as, job.user_name) if run_as else None
        folder = workfolders.prepare(
            self.settings, job.id, account, first=fresh and job.attempts == 1
        )
        env = {**spec.env, "SUANLI_PROJECT": job.project.name, "SUANLI_USER": job.user_name}
        capabilities = self.backend.capabilities
        start = Start(self.settings, job, spec, folder, account, env, fresh, capabilities)
        launch = kind.launch(start)
        if launch.mounts and not capabilities.mounts:
            raise Unsupported(f"the {self.engine} backend cannot mount data into workloads")
        resources = spec.resources
        return LaunchSpec(
            job_id=job.id,
            name=job.name or f"{job.kind}-{job.id}",
            user=job.user_name,
            nodes=resources.nodes,
            gpus=resources.gpus,
            gpu_model=resources.gpu_model,
            pool=spec.pool,
            launcher=launch.launcher,
            argv=launch.argv,
            workdir=launch.workdir,
            env=launch.env,
            ports=launch.ports,
            mounts=launch.mounts,
            placement=_placement(job.placement),
            limits=Limits(cpus=resources.cpus, memory_bytes=resources.memory),
            log_path=log_path(self.settings, job.id),
            state_dir=job_dir(self.settings, job.id) / f"attempt-{job.attempts}",
            run_as=run_as,
            max_duration=spec.max_duration,
        )


def _load(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id, options=[selectinload(Job.project)])


def _kept(session: Session, job_ids: list[int]) -> dict[int, Any]:
    """The kept requests (and specs, for rows kept without one) of workloads seen for the
    first time: the cycle decodes no JSON for the others."""
    found: dict[int, Any] = {}
    for start in range(0, len(job_ids), 5000):  # within every database's parameter limits
        chunk = job_ids[start : start + 5000]
        rows = session.execute(
            select(Job.id, Job.request, Job.spec, Job.spec_version).where(Job.id.in_(chunk))
        ).all()
        found.update((row.id, row) for row in rows)
    return found


def _retries(job: Job) -> int:
    """How many times it may be retried, as kept at submit."""
    retries = (job.request or {}).get("retries", 0)
    return retries if isinstance(retries, int) and not isinstance(retries, bool) else 0


def _end_stopped(job: Job, event: str) -> None:
    """Stopped on purpose: cancelled, or for a reason of its kind's own (an idle dev
    environment, a surplus replica), each with its own event in the history; or because
    its row could not be read any more, which fails it."""
    reason = job.stop_reason or "cancelled"
    if reason == UNREADABLE:
        job.exit_reason = UNREADABLE
        move(job, State.failed, "event.unreadable", reason=job.exit_detail)
        return
    kind = KINDS.get(job.kind)
    own = kind.stops.get(reason) if kind is not None else None
    job.exit_reason = reason
    move(job, State.cancelled, own or event)


def _quotas(session: Session) -> dict[str, sched.Quota]:
    projects = session.scalars(
        select(Project).where(Project.archived_at.is_(None)).options(selectinload(Project.quota))
    ).all()
    return {p.name: quota_of(p) for p in projects}


def _placement_dict(placement: sched.Placement | None) -> dict[str, Any] | None:
    if placement is None:
        return None
    return {
        "node": placement.node,
        "gpus": [
            {"uuid": d.device, "memory_bytes": d.memory_bytes, "compute_percent": d.compute_percent}
            for d in placement.devices
        ],
    }


def _placement(data: dict[str, Any] | None) -> sched.Placement:
    if not data:
        return sched.Placement(node="")
    return sched.Placement(
        node=data["node"],
        devices=tuple(
            sched.DeviceShare(g["uuid"], g.get("memory_bytes", 0), g.get("compute_percent", 0))
            for g in data.get("gpus", [])
        ),
    )


def _placed(event: str, placement: sched.Placement | None) -> tuple[str, dict[str, str]]:
    """The history's words for where it goes: `event` with its node and GPUs, or the
    `_cpu` variant without GPUs, or `_engine` where the engine chooses the node."""
    if placement is None or not placement.node:
        return f"{event}_engine", {}
    if not placement.devices:
        return f"{event}_cpu", {"node": placement.node}
    return event, {"node": placement.node, "gpus": ", ".join(d.device for d in placement.devices)}


def _exit_params(job: Job) -> dict[str, Any]:
    """How it ended, for the history: rendered there with the `exit.*` message."""
    return {
        "exit_reason": job.exit_reason,
        "exit_code": job.exit_code,
        "exit_signal": job.exit_signal,
        "exit_detail": job.exit_detail,
    }

"""Jobs: submit, list, show, cancel, resubmit, and their logs.

Services only write rows: the controller (suanli.controllers) makes the world match them.
Who may do what: members and owners of a project submit to it; every member (viewers too)
sees its jobs and their logs; a job's author, the project's owners and administrators
cancel it. Everyone else gets 404 for the project's jobs.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from suanli.config import Settings
from suanli.core.errors import Forbidden, InvalidInput, NotFound
from suanli.core.roles import ProjectRole
from suanli.core.states import ACTIVE, TERMINAL, State
from suanli.db.models import Job, JobEvent, Membership, Project, utcnow
from suanli.scheduler import check_feasible
from suanli.scheduler import model as sched
from suanli.schemas.jobs import JobListQuery, JobSpec
from suanli.services import audit
from suanli.services.actor import Actor
from suanli.services.common import commit
from suanli.services.projects import access, writable

if TYPE_CHECKING:
    from suanli.schemas.devenvs import DevEnvSpec

PRIORITIES = {
    "low": sched.Priority.low,
    "normal": sched.Priority.normal,
    "high": sched.Priority.high,
}


def job_dir(settings: Settings, job_id: int) -> Path:
    """A workload's own directory: its scripts, its log, its backend's files."""
    return settings.data_dir / "jobs" / str(job_id)


def log_path(settings: Settings, job_id: int) -> Path:
    return job_dir(settings, job_id) / "output.log"


def request_of(spec: "JobSpec | DevEnvSpec") -> sched.Request:
    resources = spec.resources
    return sched.Request(
        gpus=resources.gpus,
        gpu_model=resources.gpu_model,
        gpu_memory_bytes=resources.gpu_memory or 0,
        gpu_compute_percent=resources.gpu_compute_percent or 0,
        cpus=resources.cpus,
        memory_bytes=resources.memory,
        nodes=resources.nodes,
    )


def check_runnable(spec: "JobSpec | DevEnvSpec", nodes: Sequence[sched.Node]) -> None:
    """Refuse a job that names no known pool, or that no node (of its pool) could ever run,
    rather than leave it pending forever."""
    if spec.pool is not None:
        pools = sorted({pool for node in nodes for pool in node.pools})
        if spec.pool not in pools:
            raise InvalidInput(
                "error.unknown_pool", field="pool", pool=spec.pool, pools=", ".join(pools) or "-"
            )
        nodes = [node for node in nodes if spec.pool in node.pools]
    problem = check_feasible(request_of(spec), nodes)
    if problem is not None:
        code, params = problem
        raise InvalidInput(f"infeasible.{code}", field="resources", **params)


def submit(
    session: Session,
    actor: Actor,
    spec: "JobSpec | DevEnvSpec",
    nodes: Sequence[sched.Node],
    unix_users: Mapping[str, str],
    *,
    kind: str = "job",
    stored: dict[str, Any] | None = None,
) -> Job:
    """Accept a workload that some node could ever run; one that no node could run is refused
    here rather than left pending forever. Requests above quota are accepted and pend.
    `stored`: the spec as it is to be kept, where the caller completed it."""
    project, _ = access(session, actor, spec.project, ProjectRole.member)
    writable(project)
    if unix_users and actor.name not in unix_users:
        raise Forbidden("error.no_unix_user", name=actor.name)
    check_runnable(spec, nodes)
    job = Job(
        kind=kind,
        project=project,  # set, not lazily loaded after commit (that would begin a new write)
        user_id=actor.account.id,
        user_name=actor.name,
        name=spec.name,
        spec=stored or spec.model_dump(mode="json"),
        priority=spec.priority,
        gpus=float(spec.resources.gpus * spec.resources.nodes),
        state=State.pending,
    )
    note(job, "event.submitted")
    session.add(job)
    session.flush()
    audit.record(
        session,
        actor,
        f"{kind}.submit",
        target_type=kind,
        target=str(job.id),
        project=project,
        detail={"gpus": spec.resources.gpus},
    )
    commit(session, "error.conflict")
    return job


def list_jobs(
    session: Session, actor: Actor, query: JobListQuery, kind: str = "job"
) -> Sequence[Job]:
    """Newest first; only jobs of projects the caller belongs to (administrators: all)."""
    statement = (
        select(Job).options(selectinload(Job.project)).order_by(Job.id.desc()).limit(query.limit)
    )
    if not actor.is_admin:
        mine = select(Membership.project_id).where(Membership.user_id == actor.account.id)
        statement = statement.where(Job.project_id.in_(mine))
    if query.project:
        statement = statement.join(Project).where(Project.name == query.project)
    if query.user:
        statement = statement.where(Job.user_name == query.user)
    statement = statement.where(Job.kind == kind)
    if query.before_id:
        statement = statement.where(Job.id < query.before_id)
    if query.state == "active":
        statement = statement.where(Job.state.in_([State.pending, *ACTIVE]))
    elif query.state == "finished":
        statement = statement.where(Job.state.in_(TERMINAL))
    elif query.state:
        statement = statement.where(Job.state == query.state)
    return session.scalars(statement).all()


def get_job(
    session: Session,
    actor: Actor,
    job_id: int,
    need: ProjectRole = ProjectRole.viewer,
    kind: str = "job",
    history: bool = True,
) -> Job:
    """The job if the actor may see it; with its history loaded unless told otherwise (the
    proxy asks on every request and needs none)."""
    options = [selectinload(Job.project), *([selectinload(Job.events)] if history else [])]
    job = session.get(Job, job_id, options=options)
    missing = NotFound(f"error.{kind}_not_found", id=job_id)
    if job is None or job.kind != kind:
        raise missing
    try:
        access(session, actor, job.project.name, need)
    except NotFound:
        raise missing from None
    return job


def cancel(session: Session, actor: Actor, job_id: int, kind: str = "job") -> Job:
    """Pending jobs end at once; running ones are stopped by the controller (SIGTERM, grace,
    SIGKILL) and end as cancelled."""
    job = get_job(session, actor, job_id, kind=kind)
    may_manage(session, actor, job)
    if State(job.state).terminal or job.stop_reason == "cancelled":
        return job
    if job.state == State.pending:
        move(job, State.cancelled, "event.cancelled_by", user=actor.name)
        job.exit_reason = "cancelled"
    else:
        job.stop_reason = "cancelled"
        note(job, "event.cancel_requested", user=actor.name)
    audit.record(
        session, actor, f"{kind}.cancel", target_type=kind, target=str(job.id), project=job.project
    )
    commit(session, "error.conflict")
    return job


def resubmit(
    session: Session,
    actor: Actor,
    job_id: int,
    nodes: Sequence[sched.Node],
    unix_users: Mapping[str, str],
) -> Job:
    """Submit the same spec again, as the caller."""
    job = get_job(session, actor, job_id)
    spec = JobSpec.model_validate({**job.spec, "project": job.project.name})
    return submit(session, actor, spec, nodes, unix_users)


@dataclass(frozen=True)
class LogChunk:
    text: str
    next_offset: int
    finished: bool


def read_log(
    session: Session,
    actor: Actor,
    job_id: int,
    path: Path,
    *,
    offset: int,
    limit: int,
    tail: int | None,
    kind: str = "job",
) -> LogChunk:
    """A piece of the job's output from `offset` (or its last `tail` lines), and whether the
    job has ended (so a follower knows when to stop)."""
    job = get_job(session, actor, job_id, kind=kind)
    finished = State(job.state).terminal
    if not path.exists():
        return LogChunk("", offset, finished)
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        if tail is not None:
            offset = _tail_offset(handle, size, tail)
        handle.seek(min(offset, size))
        data = handle.read(limit)
    return LogChunk(data.decode("utf-8", errors="replace"), min(offset, size) + len(data), finished)


def move(job: Job, state: State, event: str, /, **params: Any) -> None:
    """Change state and record it in the history. Callers commit."""
    job.state = state
    note(job, event, **params)
    if state in TERMINAL:
        job.finished_at = utcnow()


def note(job: Job, event: str, /, **params: Any) -> None:
    """Add to the job's history: a catalogue key (`event.*`) and its parameters."""
    job.events.append(JobEvent(state=job.state, detail=event, params=params))


def may_manage(session: Session, actor: Actor, job: Job) -> None:
    if actor.is_admin or job.user_id == actor.account.id:
        return
    _, role = access(session, actor, job.project.name)
    if role != ProjectRole.owner:
        raise Forbidden("error.job_not_yours")


def _tail_offset(handle: BinaryIO, size: int, lines: int) -> int:
    """Where the last `lines` lines begin, reading backwards in blocks."""
    position, found, block = size, 0, 64 * 1024
    while position > 0:
        step = min(block, position)
        position -= step
        handle.seek(position)
        chunk = handle.read(step)
        for index in range(len(chunk) - 1, -1, -1):
            if chunk[index] == 10 and position + index < size - 1:
                found += 1
                if found == lines:
                    return position + index + 1
    return 0

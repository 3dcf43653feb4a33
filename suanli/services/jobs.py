"""Jobs: submit, list, show, cancel, resubmit, and their logs.

Services only write rows: the controller (suanli.controllers) makes the world match them.
Who may do what: members and owners of a project submit to it; every member (viewers too)
sees its jobs and their logs; a job's author, the project's owners and administrators
cancel it. Everyone else gets 404 for the project's jobs.
"""

import contextlib
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from suanli.config import Settings
from suanli.core.errors import Forbidden, InvalidInput, NotFound
from suanli.core.roles import ProjectRole
from suanli.core.states import ACTIVE, TERMINAL, State
from suanli.db.models import Job, JobEvent, Membership, Project, utcnow
from suanli.kinds import demand
from suanli.kinds.base import Kind
from suanli.kinds.demand import request_of
from suanli.scheduler import check_feasible
from suanli.scheduler import model as sched
from suanli.scheduler.feasibility import check_quota_ceiling
from suanli.schemas.jobs import JobListQuery, JobSpec
from suanli.services import audit, data
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
    """The platform's files of a workload (its backend's state, the history of its
    attempts), inside the data directory: no workload reaches them."""
    return settings.data_dir / "jobs" / str(job_id)


def work_folder(settings: Settings, job_id: int) -> Path:
    """A workload's own folder, owned by its Unix account: its script, its log, a dev
    environment's endpoints; its working directory unless it names one."""
    return settings.effective_work_dir / str(job_id)


def remove_folders(settings: Settings, job_id: int) -> None:
    """A forgotten workload's files: the platform's and its own folder (never following the
    links its user may have put there)."""
    for folder in (job_dir(settings, job_id), work_folder(settings, job_id)):
        shutil.rmtree(folder, onerror=_opened_and_again)


def _opened_and_again(function: Any, path: str, _: Any) -> None:
    """An entry of a sealed folder (a dataset's links, 0555): a server that is not root
    opens the folder it made and removes the entry again; anything else is left."""
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o700)
        function(path)


def log_path(settings: Settings, job_id: int) -> Path:
    """Where the workload's output goes. Logs of workloads from before the work folders
    stay where they were written."""
    path = work_folder(settings, job_id) / "output.log"
    earlier = job_dir(settings, job_id) / "output.log"
    return earlier if not path.exists() and earlier.exists() else path


def open_log(path: Path) -> BinaryIO | None:
    """Open a log for reading as its reader must: the file lies in a folder its workload's
    user owns, who may have put a link to the platform's secrets or a pipe there instead.
    None when there is no regular file to read (yet)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


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


def quota_of(project: Project) -> sched.Quota:
    """The project's quota (its row loaded) as the scheduler reads it."""
    quota = project.quota
    return sched.Quota(
        project=project.name,
        guaranteed_gpus=quota.guaranteed_gpus,
        max_gpus=quota.max_gpus,
        max_gpus_per_user=quota.max_gpus_per_user,
        cpus=quota.cpus,
        memory_bytes=quota.memory_bytes,
    )


def check_quota(
    spec: "JobSpec | DevEnvSpec", project: Project, nodes: Sequence[sched.Node]
) -> None:
    """Refuse a workload larger than its project's quota lets it hold at once: even with
    nothing else running it would wait for ever for the project's GPUs (CPUs, memory)."""
    problem = check_quota_ceiling(request_of(spec), quota_of(project), nodes)
    if problem is not None:
        code, params = problem
        field = _QUOTA_FIELDS.get(code) or _gpu_field(spec)
        raise InvalidInput(f"infeasible.{code}", field=field, project=project.name, **params)


_QUOTA_FIELDS = {"quota_cpus": "resources.cpus", "quota_memory": "resources.memory"}


def _gpu_field(spec: "JobSpec | DevEnvSpec") -> str:
    """The field that asks for GPUs: the count, or the fraction's memory or compute."""
    resources = spec.resources
    if resources.gpus or not resources.is_fraction:
        return "resources.gpus"
    return "resources.gpu_memory" if resources.gpu_memory else "resources.gpu_compute_percent"


def submit(
    session: Session,
    actor: Actor,
    spec: "JobSpec | DevEnvSpec",
    nodes: Sequence[sched.Node],
    unix_users: Mapping[str, str],
    *,
    kind: Kind,
    stored: dict[str, Any] | None = None,
) -> Job:
    """Accept a workload that some node could ever run within its project's quota; one that
    no node could run, or that is larger than the quota lets the project hold at once, is
    refused here rather than left pending forever. One that fits once other work has ended
    is accepted and pends.
    `stored`: the spec as it is to be kept, where the caller completed it. What the
    scheduler needs is derived from the kept spec here, once (suanli.kinds.demand)."""
    project, _ = access(session, actor, spec.project, ProjectRole.member)
    writable(project)
    if unix_users and actor.name not in unix_users:
        raise Forbidden("error.no_unix_user", name=actor.name)
    check_runnable(spec, nodes)
    check_quota(spec, project, nodes)
    kept = stored or spec.model_dump(mode="json")
    wanted = demand.of(kind.load(kept, kind.version))
    inputs = data.resolve(session, actor, project, "dataset", spec.datasets, "datasets")
    inputs += data.resolve(session, actor, project, "model", spec.models, "models")
    job = Job(
        kind=kind.name,
        project=project,  # set, not lazily loaded after commit (that would begin a new write)
        user_id=actor.account.id,
        user_name=actor.name,
        name=spec.name,
        spec=kept,
        spec_version=kind.version,
        request=wanted,
        priority=spec.priority,
        gpus=demand.waiting_gpus(wanted),
        state=State.pending,
        inputs=inputs,
    )
    note(job, "event.submitted")
    session.add(job)
    session.flush()
    audit.record(
        session,
        actor,
        f"{kind.name}.submit",
        target_type=kind.name,
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
    *,
    kind: Kind,
) -> Job:
    """Submit the same spec again, as the caller: under today's rules, which a spec kept
    from before a rule existed may break."""
    job = get_job(session, actor, job_id, kind=kind.name)
    try:
        spec = kind.spec_model.model_validate({**job.spec, "project": job.project.name})
    except ValidationError as error:
        where = ".".join(str(part) for part in error.errors()[0]["loc"])
        raise InvalidInput("error.spec_outdated", field=where, where=where) from None
    return submit(session, actor, spec, nodes, unix_users, kind=kind)


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
    handle = open_log(path)
    if handle is None:
        return LogChunk("", offset, finished)
    with handle:
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

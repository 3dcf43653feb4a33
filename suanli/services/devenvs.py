"""Dev environments: create, list, show, stop, restart, remove; and who may enter one.

A dev environment is a row of the workloads' table (`kind` "devenv"): the scheduler, quotas,
backends and the workload controller treat it as a job whose command is the agent
(suanli.devenvs.agent). Unlike a job it restarts in place (same id, name and URLs), so
bookmarks and `~/.ssh/config` entries keep working.

Who may enter (open its tools in a browser, SSH into it): its owner; the project's owners
too where the project allows it. Administrators manage environments (stop, remove) but do
not enter other people's shells.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from suanli.config import Settings
from suanli.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from suanli.core.roles import ProjectRole
from suanli.core.states import State
from suanli.db.models import Job, Project, User
from suanli.devenvs import endpoints
from suanli.devenvs.endpoints import Endpoints
from suanli.kinds import demand, devenv
from suanli.kinds.devenv import code_server
from suanli.scheduler import model as sched
from suanli.schemas.devenvs import DevEnvListQuery, DevEnvSpec
from suanli.schemas.jobs import JobListQuery
from suanli.services import audit, jobs
from suanli.services.actor import Actor
from suanli.services.common import commit
from suanli.services.projects import access, writable

KIND = devenv.KIND.name


def folder(settings: Settings, env_id: int) -> Path:
    """Where the agent writes its endpoints: the environment's own folder."""
    return jobs.work_folder(settings, env_id)


def create(
    session: Session,
    actor: Actor,
    spec: DevEnvSpec,
    nodes: Sequence[sched.Node],
    settings: Settings,
    *,
    remote: bool,
) -> Job:
    """Refuse what could never work (unknown environment, VS Code where it cannot be served,
    limits above the server's or the project's), then submit it like a job."""
    project, _ = access(session, actor, spec.project, ProjectRole.member)
    _check_choices(spec, settings, remote)
    taken = select(Job.id).where(
        Job.kind == KIND, Job.user_id == actor.account.id, Job.name == spec.name
    )
    if session.scalar(taken) is not None:
        raise Conflict("error.devenv_exists", field="name", name=spec.name)
    stored = _limited(spec, project, settings)
    unix_users = settings.unix_users
    return jobs.submit(session, actor, spec, nodes, unix_users, kind=devenv.KIND, stored=stored)


def _check_choices(spec: DevEnvSpec, settings: Settings, remote: bool) -> None:
    known = settings.devenv_environments
    if spec.environment is not None and spec.environment not in known:
        raise InvalidInput(
            "error.devenv_unknown_environment",
            field="environment",
            name=spec.environment,
            known=", ".join(sorted(known)) or "-",
        )
    if "vscode" in spec.tools and (remote or not code_server(settings)):
        raise InvalidInput("error.devenv_no_vscode", field="tools")
    ceiling = settings.devenv_idle_timeout_seconds
    if ceiling and spec.idle_timeout and spec.idle_timeout > ceiling:
        raise InvalidInput(
            "error.devenv_idle_too_long", field="idle_timeout", max=_minutes(ceiling)
        )


def _limited(spec: DevEnvSpec, project: Project, settings: Settings) -> dict[str, object]:
    """The spec as kept: idle timeout and lifetime resolved against the server's and the
    project's limits as they are now."""
    lifetime = project.quota.devenv_max_lifetime_seconds
    if lifetime and spec.max_duration and spec.max_duration > lifetime:
        raise InvalidInput(
            "error.devenv_lifetime_too_long", field="max_duration", max=_minutes(lifetime)
        )
    data = spec.model_dump(mode="json")
    data["max_duration"] = spec.max_duration or lifetime or None
    data["idle_timeout"] = spec.idle_timeout or settings.devenv_idle_timeout_seconds or None
    return data


def _relimited(data: dict[str, Any], project: Project) -> dict[str, Any]:
    """A restart keeps what was chosen, within the project's lifetime as it is now."""
    lifetime = project.quota.devenv_max_lifetime_seconds
    if lifetime:
        data = {**data, "max_duration": min(data.get("max_duration") or lifetime, lifetime)}
    return data


def _minutes(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def list_envs(session: Session, actor: Actor, query: DevEnvListQuery) -> Sequence[Job]:
    listing = JobListQuery(
        project=query.project, user=query.user, state=query.state, limit=query.limit
    )
    return jobs.list_jobs(session, actor, listing, kind=KIND)


def get(session: Session, actor: Actor, env_id: int) -> Job:
    return jobs.get_job(session, actor, env_id, kind=KIND)


def stop(session: Session, actor: Actor, env_id: int) -> Job:
    return jobs.cancel(session, actor, env_id, kind=KIND)


def restart(session: Session, actor: Actor, env_id: int) -> Job:
    """Start a stopped environment again in place: same id, name, URLs and SSH name."""
    job = get(session, actor, env_id)
    jobs.may_manage(session, actor, job)
    writable(job.project)
    if not State(job.state).terminal:
        raise Conflict("error.devenv_not_stopped", name=job.name, state=job.state)
    job.spec = _relimited(dict(job.spec), job.project)
    job.request = demand.of(devenv.KIND.load(job.spec, job.spec_version))
    job.handle, job.placement, job.token = None, None, ""
    job.stop_reason, job.stop_sent_at = "", None
    job.exit_reason, job.exit_code, job.exit_signal, job.exit_detail = "", None, None, ""
    job.started_at, job.finished_at = None, None
    job.pending_code, job.pending_params, job.pending_position = "", {}, 0
    job.warnings, job.usage = [], {}
    jobs.move(job, State.pending, "event.restarted_by", user=actor.name)
    audit.record(
        session, actor, "devenv.restart", target_type=KIND, target=str(job.id), project=job.project
    )
    commit(session, "error.conflict")
    return job


def remove(session: Session, actor: Actor, env_id: int, settings: Settings) -> None:
    """Forget a stopped environment (its name is free again); its files stay in its
    working directory, its log goes."""
    job = get(session, actor, env_id)
    jobs.may_manage(session, actor, job)
    if not State(job.state).terminal:
        raise Conflict("error.devenv_not_stopped", name=job.name, state=job.state)
    audit.record(
        session, actor, "devenv.remove", target_type=KIND, target=str(job.id), project=job.project
    )
    session.delete(job)
    commit(session, "error.conflict")
    jobs.remove_folders(settings, env_id)


def may_enter(session: Session, actor: Actor, job: Job) -> None:
    """Its owner; the project's owners where the project allows it. Nobody else."""
    if job.user_id == actor.account.id:
        return
    if job.project.owners_open_devenvs:
        _, role = access(session, actor, job.project.name)
        if role == ProjectRole.owner:
            return
    raise Forbidden("error.devenv_not_yours")


@dataclass(frozen=True)
class Entry:
    """What the proxy and the gateway need to reach a running environment's tools."""

    env_id: int
    name: str
    token: str
    endpoints: Endpoints


def enter(session: Session, actor: Actor, env_id: int, tool: str, settings: Settings) -> Entry:
    job = jobs.get_job(session, actor, env_id, kind=KIND, history=False)
    may_enter(session, actor, job)
    return _entry(job, tool, settings)


def _entry(job: Job, tool: str, settings: Settings) -> Entry:
    if tool not in job.spec.get("tools", ()):
        raise NotFound("error.devenv_tool_off", name=job.name, tool=tool)
    if State(job.state).terminal:
        raise Conflict("error.devenv_not_running", name=job.name, state=job.state)
    if job.state != State.running:  # on its way: the browser may look again shortly
        raise Unavailable("error.devenv_starting", name=job.name)
    where = endpoints.read(folder(settings, job.id))
    if where is None or tool not in where.ports:
        raise Unavailable("error.devenv_starting", name=job.name)
    return Entry(env_id=job.id, name=job.name, token=job.token, endpoints=where)


def ssh_entry(session: Session, user: User, login: str, settings: Settings) -> Entry | None:
    """The environment an SSH login names: `<name>` (one's own) or `<name>.<user>` (another
    user's, where one may enter it). None where there is none one may enter, or it is not up.
    """
    name, _, owner = login.partition(".")
    statement = (
        select(Job)
        .options(selectinload(Job.project))
        .join(User, User.id == Job.user_id)
        .where(Job.kind == KIND, Job.name == name, User.name == (owner or user.name))
    )
    job = session.scalar(statement)
    if job is None:
        return None
    actor = Actor(user=user)
    try:
        access(session, actor, job.project.name)
        may_enter(session, actor, job)
        return _entry(job, "ssh", settings)
    except (Forbidden, NotFound, Conflict):
        return None

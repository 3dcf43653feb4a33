"""Dev environments: create, list, show, stop, restart, remove, logs."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from suanli.api.deps import Caller, CallerDep, SessionDep, SettingsDep, get_database
from suanli.api.outputs import devenv_detail_out, devenv_out
from suanli.api.problems import language_of
from suanli.db.models import Job
from suanli.schemas.devenvs import DevEnvDetailOut, DevEnvListQuery, DevEnvOut, DevEnvSpec
from suanli.schemas.jobs import LogQuery
from suanli.schemas.system import LogChunkOut
from suanli.schemas.types import MAX_INT32
from suanli.services import devenvs, jobs
from suanli.services.nodes import inventory

router = APIRouter(prefix="/devenvs", tags=["devenvs"])
EnvId = Annotated[int, Path(ge=1, le=MAX_INT32)]


def _detail(request: Request, job: Job, caller: Caller) -> DevEnvDetailOut:
    state = request.app.state
    return devenv_detail_out(
        job, language_of(request), state.settings, state.ssh_port, caller.actor.account.id
    )


@router.post("", response_model=DevEnvDetailOut, status_code=201)
def create(
    spec: DevEnvSpec,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> DevEnvDetailOut:
    """Create a dev environment: it waits for its resources like a job, then runs until
    stopped, idle for its `idle_timeout`, or at its project's maximum lifetime."""
    nodes = inventory(get_database(request))
    job = devenvs.create(
        session, caller.actor, spec, nodes, settings, on_engine=request.app.state.on_engine
    )
    request.app.state.wake()
    return _detail(request, job, caller)


@router.get("", response_model=list[DevEnvOut])
def list_envs(
    query: Annotated[DevEnvListQuery, Query()],
    request: Request,
    caller: CallerDep,
    session: SessionDep,
) -> list[DevEnvOut]:
    """Newest first, from the projects you belong to."""
    state, language = request.app.state, language_of(request)
    return [
        devenv_out(job, language, state.settings, state.ssh_port, caller.actor.account.id)
        for job in devenvs.list_envs(session, caller.actor, query)
    ]


@router.get("/{env_id}", response_model=DevEnvDetailOut)
def show(
    env_id: EnvId, request: Request, caller: CallerDep, session: SessionDep
) -> DevEnvDetailOut:
    return _detail(request, devenvs.get(session, caller.actor, env_id), caller)


@router.post("/{env_id}/stop", response_model=DevEnvDetailOut)
def stop(
    env_id: EnvId, request: Request, caller: CallerDep, session: SessionDep
) -> DevEnvDetailOut:
    """Stop it: its processes get SIGTERM, a grace period, then SIGKILL. Its files stay."""
    job = devenvs.stop(session, caller.actor, env_id)
    request.app.state.wake()
    return _detail(request, job, caller)


@router.post("/{env_id}/restart", response_model=DevEnvDetailOut)
def restart(
    env_id: EnvId, request: Request, caller: CallerDep, session: SessionDep
) -> DevEnvDetailOut:
    """Start a stopped environment again, in place (same id, URLs and SSH name)."""
    job = devenvs.restart(session, caller.actor, env_id)
    request.app.state.wake()
    return _detail(request, job, caller)


@router.delete("/{env_id}", status_code=204)
def remove(env_id: EnvId, caller: CallerDep, session: SessionDep, settings: SettingsDep) -> None:
    """Forget a stopped environment; its name is free again."""
    devenvs.remove(session, caller.actor, env_id, settings)


@router.get("/{env_id}/logs", response_model=LogChunkOut)
def logs(
    env_id: EnvId,
    query: Annotated[LogQuery, Query()],
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> LogChunkOut:
    """What the environment's tools printed (JupyterLab's log, the agent's lines)."""
    chunk = jobs.read_log(
        session,
        caller.actor,
        env_id,
        jobs.log_path(settings, env_id),
        offset=query.offset,
        limit=query.limit,
        tail=query.tail,
        kind=devenvs.KIND,
    )
    return LogChunkOut(text=chunk.text, next_offset=chunk.next_offset, finished=chunk.finished)

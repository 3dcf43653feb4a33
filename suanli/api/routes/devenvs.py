"""Dev environments: create, list, show, stop, restart, remove, logs."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from suanli.api.deps import Caller, CallerDep, SessionDep, SettingsDep, WorkloadsDep
from suanli.api.outputs import devenv_detail_out, devenv_out
from suanli.api.problems import language_of
from suanli.db.models import Job
from suanli.schemas.devenvs import DevEnvDetailOut, DevEnvListQuery, DevEnvOut, DevEnvSpec
from suanli.schemas.jobs import LogQuery
from suanli.schemas.system import LogChunkOut
from suanli.schemas.types import MAX_INT32
from suanli.services import devenvs

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
    workloads: WorkloadsDep,
) -> DevEnvDetailOut:
    """Create a dev environment: it waits for its resources like a job, then runs until
    stopped, idle for its `idle_timeout`, or at its project's maximum lifetime."""
    job = workloads.create_env(session, caller.actor, spec)
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
    env_id: EnvId, request: Request, caller: CallerDep, session: SessionDep, workloads: WorkloadsDep
) -> DevEnvDetailOut:
    """Stop it: its processes get SIGTERM, a grace period, then SIGKILL. Its files stay."""
    job = workloads.stop_env(session, caller.actor, env_id)
    return _detail(request, job, caller)


@router.post("/{env_id}/restart", response_model=DevEnvDetailOut)
def restart(
    env_id: EnvId, request: Request, caller: CallerDep, session: SessionDep, workloads: WorkloadsDep
) -> DevEnvDetailOut:
    """Start a stopped environment again, in place (same id, URLs and SSH name)."""
    job = workloads.restart_env(session, caller.actor, env_id)
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
    workloads: WorkloadsDep,
) -> LogChunkOut:
    """What the environment's tools printed (JupyterLab's log, the agent's lines)."""
    chunk = workloads.read_log(
        session,
        caller.actor,
        env_id,
        kind=devenvs.KIND,
        offset=query.offset,
        limit=query.limit,
        tail=query.tail,
    )
    return LogChunkOut(text=chunk.text, next_offset=chunk.next_offset, finished=chunk.finished)

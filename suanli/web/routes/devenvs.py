"""Dev environments in the console: the list, the create form, an environment's page (its
tools, SSH access, live log) and the web terminal, on the same services as the API.

Who may do what is the services' word, asked again here only to choose which buttons to
show: entering (opening JupyterLab, VS Code, the terminal) is for the environment's owner
and, where the project allows it, the project's owners (services.devenvs.may_enter);
stopping, restarting and removing for its owner, the project's owners and administrators
(services.jobs.may_manage). A stranger to the project gets the same 404 as for an
environment that does not exist.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, get_args

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import SessionDep, SettingsDep, get_database
from suanli.api.outputs import devenv_detail_out, devenv_out
from suanli.config import Settings
from suanli.core.errors import Forbidden, NotFound, SuanliError
from suanli.core.roles import ProjectRole
from suanli.core.states import State
from suanli.db.models import Job
from suanli.schemas.devenvs import (
    DEFAULT_TOOLS,
    DevEnvListQuery,
    DevEnvOut,
    DevEnvSpec,
    Tool,
)
from suanli.schemas.types import MAX_INT32
from suanli.services import devenvs, jobs, nodes, projects, sshkeys
from suanli.services.actor import Actor
from suanli.web import forms, render, session
from suanli.web.routes.jobs import LOG_CHUNK, log_download, log_stream, resume_offset
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
EnvId = Annotated[int, Path(ge=1, le=MAX_INT32)]
TOOLS: tuple[Tool, ...] = get_args(Tool)
STATES = ("active", "finished")
# A page opens on the end of a long-running environment's log, not its first line.
LOG_TAIL_LINES = 200
# States in which the page changes by itself soon (refreshed often) and the ones where it
# rarely does (a running environment is stopped when idle: refreshed now and then).
SETTLING = {State.pending, State.admitted, State.starting}
SETTLING_POLL = "2s"
RUNNING_POLL = "15s"


@dataclass(frozen=True)
class EnvView:
    """An environment as a page shows it, with what the viewer may do to it."""

    env: DevEnvOut
    enter: bool
    manage: bool

    @property
    def stopped(self) -> bool:
        return State(self.env.state).terminal


def _may_enter(db: Session, viewer: Viewer, job: Job) -> bool:
    try:
        devenvs.may_enter(db, viewer.actor, job)
    except Forbidden:
        return False
    return True


def _may_manage(db: Session, viewer: Viewer, job: Job) -> bool:
    try:
        jobs.may_manage(db, viewer.actor, job)
    except Forbidden:
        return False
    return True


def _view(request: Request, db: Session, viewer: Viewer, job: Job) -> EnvView:
    state = request.app.state
    env = devenv_out(job, request.state.language, state.settings, state.ssh_port, viewer.user.id)
    return EnvView(env=env, enter=_may_enter(db, viewer, job), manage=_may_manage(db, viewer, job))


def _vscode_offered(request: Request) -> bool:
    """code-server must be on the server's host, and environments must run there too."""
    return request.app.state.workloads.vscode_offered()


@router.get("/devenvs")
def list_envs(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    filters = {
        key: request.query_params[key]
        for key in ("project", "state", "user")
        if request.query_params.get(key)
    }
    errors: forms.Errors = {}
    try:
        found = devenvs.list_envs(db, viewer.actor, DevEnvListQuery.model_validate(filters))
    except ValidationError as error:
        errors, found = forms.errors_of(error, request.state.language), []
    return render.page(
        request,
        "devenvs.html",
        status=422 if errors else 200,
        nav="devenvs",
        envs=[_view(request, db, viewer, job) for job in found],
        filters=filters,
        errors=errors,
        states=STATES,
        projects=projects.list_projects(db, viewer.actor),
    )


def _form_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    values: dict[str, str],
    tools: list[str],
    errors: forms.Errors,
    status: int = 200,
) -> Response:
    settings: Settings = request.app.state.settings
    known = nodes.list_nodes(db)
    return render.page(
        request,
        "devenv_new.html",
        status=status,
        nav="devenvs",
        values=values,
        tools=tools,
        all_tools=TOOLS,
        errors=errors,
        vscode=_vscode_offered(request),
        environments=sorted(settings.devenv_environments),
        idle_default=settings.devenv_idle_timeout_seconds,
        gpu_models=sorted({gpu.model for node in known for gpu in node.gpus}),
        projects=[
            v
            for v in projects.list_projects(db, viewer.actor)
            if v.my_role is not None and v.my_role.at_least(ProjectRole.member)
        ],
    )


@router.get("/devenvs/new")
def new_env(request: Request, db: SessionDep, viewer: ViewerDep, project: str = "") -> Response:
    values = {
        "project": project,
        "gpu_kind": "whole",
        "resources.gpus": "1",
        "resources.cpus": "1",
        "resources.memory": "4Gi",
    }
    tools = [tool for tool in DEFAULT_TOOLS if tool != "vscode" or _vscode_offered(request)]
    return _form_page(request, db, viewer, values, list(tools), {})


@router.post("/devenvs/new")
async def create_env(request: Request, viewer: ViewerDep) -> Response:
    form = await request.form()
    tools = [value for value in form.getlist("tools") if isinstance(value, str)]
    return await to_thread.run_sync(_create, request, viewer, forms.fields(form), tools)


def _create(request: Request, viewer: Viewer, values: dict[str, str], tools: list[str]) -> Response:
    """The schema first (every bad field at once), then the service's own checks (a name
    already taken, limits of the server and the project, room on some node), in one
    transaction: a refused environment leaves nothing behind."""
    database = get_database(request)
    state = request.app.state
    errors: forms.Errors = {}
    status = 422
    try:
        spec = DevEnvSpec.model_validate(forms.devenv_spec(values, tools))
    except ValidationError as error:
        errors, status = forms.refused(request, error)
    else:
        try:
            with database.writing() as db:
                env_id = state.workloads.create_env(db, viewer.actor, spec).id
        except SuanliError as error:
            errors, status = forms.refused(request, error)
        else:
            return render.redirect(f"/devenvs/{env_id}", flash="web.flash.devenv_created")
    with database.reading() as db:
        return _form_page(request, db, viewer, values, tools, errors, status=status)


@router.get("/devenvs/{env_id}")
def show_env(env_id: EnvId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    job = devenvs.get(db, viewer.actor, env_id)
    state = request.app.state
    detail = devenv_detail_out(
        job, request.state.language, state.settings, state.ssh_port, viewer.user.id
    )
    view = EnvView(
        env=detail, enter=_may_enter(db, viewer, job), manage=_may_manage(db, viewer, job)
    )
    current = State(job.state)
    poll = ""
    if current in SETTLING or (current == State.running and job.stop_reason):
        poll = SETTLING_POLL
    elif current == State.running:
        poll = RUNNING_POLL
    return render.page(
        request,
        "devenv.html",
        nav="devenvs",
        item=view,
        env=detail,
        ssh=detail.ssh if view.enter else None,
        has_keys=bool(sshkeys.list_mine(db, viewer.actor)),
        stopping=bool(job.stop_reason) and not current.terminal,
        poll=poll,
        active=not current.terminal,
        resources=job.spec.get("resources") or {},
        workdir=job.spec.get("workdir") or "",
    )


def _back(values: dict[str, str], env_id: int) -> str:
    """The list's buttons come back to the list; the environment's page to itself."""
    return render.safe_next(values.get("next") or f"/devenvs/{env_id}")


@router.post("/devenvs/{env_id}/stop")
async def stop_env(env_id: EnvId, request: Request, viewer: ViewerDep) -> Response:
    action = request.app.state.workloads.stop_env
    return await _act(request, viewer, env_id, action, "web.flash.devenv_stopping")


@router.post("/devenvs/{env_id}/restart")
async def restart_env(env_id: EnvId, request: Request, viewer: ViewerDep) -> Response:
    action = request.app.state.workloads.restart_env
    return await _act(request, viewer, env_id, action, "web.flash.devenv_restarted")


async def _act(
    request: Request,
    viewer: Viewer,
    env_id: int,
    action: Callable[[Session, Actor, int], object],
    flash: str,
) -> Response:
    """Stop or restart, then back where the button was (the form says where: `next`)."""
    values = forms.fields(await request.form())

    def act() -> None:
        with get_database(request).writing() as db:
            action(db, viewer.actor, env_id)

    await to_thread.run_sync(act)
    return render.redirect(_back(values, env_id), flash=flash)


@router.post("/devenvs/{env_id}/remove")
def remove_env(env_id: EnvId, db: SessionDep, viewer: ViewerDep, settings: SettingsDep) -> Response:
    devenvs.remove(db, viewer.actor, env_id, settings)
    return render.redirect("/devenvs", flash="web.flash.devenv_removed")


@router.get("/devenvs/{env_id}/terminal")
def terminal(env_id: EnvId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    """A full page with xterm.js; the page itself holds no secret: the websocket it opens
    (/x/<id>/terminal/ws) is let through by the proxy on the session cookie."""
    job = devenvs.get(db, viewer.actor, env_id)
    devenvs.may_enter(db, viewer.actor, job)
    if "terminal" not in job.spec.get("tools", ()):
        raise NotFound("error.devenv_tool_off", name=job.name, tool="terminal")
    state = request.app.state
    env = devenv_out(job, request.state.language, state.settings, state.ssh_port, viewer.user.id)
    return render.page(
        request,
        "devenv_terminal.html",
        nav="devenvs",
        env=env,
        stopped=State(job.state).terminal,
    )


@router.get("/devenvs/{env_id}/log.txt")
def download_log(env_id: EnvId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    devenvs.get(db, viewer.actor, env_id)
    path = request.app.state.workloads.log_path(env_id)
    return log_download(path, f"devenv-{env_id}.log")


@router.get("/devenvs/{env_id}/log")
async def follow_log(env_id: EnvId, request: Request, viewer: ViewerDep) -> Response:
    """The job page's live log, for an environment: it opens on the last lines (an
    environment runs for days), then follows."""
    database, workloads = get_database(request), request.app.state.workloads

    def read(offset: int | None) -> jobs.LogChunk:
        with database.reading() as db:
            return workloads.read_log(
                db,
                viewer.actor,
                env_id,
                offset=offset or 0,
                limit=LOG_CHUNK,
                tail=LOG_TAIL_LINES if offset is None else None,
                kind=devenvs.KIND,
            )

    first = await to_thread.run_sync(read, resume_offset(request))
    return log_stream(request, first, read)

"""Deployments in the console: the list, the create form, a deployment's page (its replicas,
its template, scale, stop, start, remove) and a replica's page with its live log, on the same
services as the API.

Who may do what is the services' word, asked again here only to choose which buttons to
show: every member of the project sees; the author, the project's owners and administrators
change it. A stranger to the project gets the same 404 as for a deployment that does not
exist.
"""

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deployment_outputs import (
    deployment_detail_out,
    deployments_out,
    seconds_until,
)
from suanli.api.deps import SessionDep, get_database
from suanli.api.outputs import event_text, job_out
from suanli.core.errors import SuanliError
from suanli.core.roles import ProjectRole
from suanli.core.states import State
from suanli.db.models import Deployment
from suanli.i18n import translate
from suanli.kinds import replica
from suanli.schemas.deployments import (
    MAX_REPLICAS,
    DeploymentListQuery,
    DeploymentOut,
    DeploymentScale,
    DeploymentSpec,
)
from suanli.schemas.types import MAX_INT32
from suanli.services import deployments, jobs, nodes, projects
from suanli.services.actor import Actor
from suanli.web import forms, render, session
from suanli.web.routes.jobs import LOG_CHUNK, log_download, log_stream, resume_offset
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
DeploymentId = Annotated[int, Path(ge=1, le=MAX_INT32)]
ReplicaId = Annotated[int, Path(ge=1, le=MAX_INT32)]
STATES = ("active", "stopped")
# The colour of each `health` word (CSS tones, as workload states have).
HEALTH_TONES = {
    "ready": "run",
    "starting": "busy",
    "failing": "bad",
    "stopping": "wait",
    "stopped": "off",
}
# A replica's page opens on the end of a long-running replica's log, not its first line.
LOG_TAIL_LINES = 200


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as a page shows it: its health word and colour, when the next
    replacement starts, and whether the viewer may change it."""

    deployment: DeploymentOut
    manage: bool = False  # the list shows no buttons: not asked there

    @property
    def health(self) -> str:
        return self.deployment.health

    @property
    def tone(self) -> str:
        return HEALTH_TONES[self.health]

    @property
    def next_start_seconds(self) -> float | None:
        return seconds_until(self.deployment.next_start_at)


def _may_manage(db: Session, viewer: Viewer, deployment: Deployment) -> bool:
    """As the service decides: its author, the project's owners and administrators."""
    if viewer.actor.is_admin or deployment.user_id == viewer.user.id:
        return True
    _, role = projects.access(db, viewer.actor, deployment.project.name)
    return role is not None and role.at_least(ProjectRole.owner)


@router.get("/deployments")
def list_deployments(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    filters = {
        key: request.query_params[key]
        for key in ("project", "state")
        if request.query_params.get(key)
    }
    errors: forms.Errors = {}
    try:
        query = DeploymentListQuery.model_validate(filters)
        found = deployments.list_deployments(db, viewer.actor, query)
    except ValidationError as error:
        errors, found = forms.errors_of(error, request.state.language), []
    return render.page(
        request,
        "deployments.html",
        status=422 if errors else 200,
        nav="deployments",
        items=[DeploymentView(out) for out in deployments_out(db, found)],
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
    errors: forms.Errors,
    status: int = 200,
) -> Response:
    known = nodes.list_nodes(db)
    return render.page(
        request,
        "deployment_new.html",
        status=status,
        nav="deployments",
        values=values,
        errors=errors,
        max_replicas=MAX_REPLICAS,
        gpu_models=sorted({gpu.model for node in known for gpu in node.gpus}),
        projects=[
            v
            for v in projects.list_projects(db, viewer.actor)
            if v.my_role is not None and v.my_role.at_least(ProjectRole.member)
        ],
    )


@router.get("/deployments/new")
def new_deployment(
    request: Request, db: SessionDep, viewer: ViewerDep, project: str = ""
) -> Response:
    values = {
        "project": project,
        "replicas": "1",
        "gpu_kind": "whole",
        "resources.gpus": "1",
        "resources.cpus": "1",
        "resources.memory": "4Gi",
    }
    return _form_page(request, db, viewer, values, {})


def deployment_spec(values: dict[str, str]) -> dict[str, Any]:
    """The form as a DeploymentSpec document: the command as an argument vector (quoted as
    in a shell), resources as the job form asks for them."""
    try:
        command = shlex.split(values.get("command", ""))
    except ValueError:
        raise forms.FormError("command", "web.error.unclosed_quote") from None
    template: dict[str, Any] = {"command": command}
    if resources := forms.resources_of(values):
        template["resources"] = resources
    return {
        "project": values.get("project", ""),
        "name": values.get("name", "").strip(),
        "replicas": forms.number(values.get("replicas", "")),
        "template": template,
    }


def _on_form(errors: forms.Errors) -> forms.Errors:
    """The schema names the template's fields `template.…`; the form's fields are the
    template's own (`command`, `resources.cpus`), and a rule about the template as a whole
    (a command or a script) is about its command here."""
    shown: forms.Errors = {}
    for key, message in errors.items():
        field = key.removeprefix("template.") if key != "template" else "command"
        shown.setdefault(field, message)
    return shown


@router.post("/deployments/new")
async def create_deployment(request: Request, viewer: ViewerDep) -> Response:
    values = forms.fields(await request.form())
    return await to_thread.run_sync(_create, request, viewer, values)


def _create(request: Request, viewer: Viewer, values: dict[str, str]) -> Response:
    """The schema first (every bad field at once), then the service's own checks (a name
    already taken, room on some node, the project's quota), in one transaction."""
    database = get_database(request)
    errors: forms.Errors = {}
    status = 422
    try:
        spec = DeploymentSpec.model_validate(deployment_spec(values))
    except forms.FormError as error:
        errors = {error.field: translate(error.key, request.state.language, **error.params)}
    except ValidationError as error:
        errors, status = forms.refused(request, error)
    else:
        try:
            with database.writing() as db:
                created = request.app.state.workloads.create_deployment(db, viewer.actor, spec)
                deployment_id = created.id
        except SuanliError as error:
            errors, status = forms.refused(request, error)
        else:
            flash = "web.deployments.flash.created"
            return render.redirect(f"/deployments/{deployment_id}", flash=flash)
    with database.reading() as db:
        return _form_page(request, db, viewer, values, _on_form(errors), status=status)


@router.get("/deployments/{deployment_id}")
def show_deployment(
    deployment_id: DeploymentId, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    return _deployment_page(request, db, viewer, deployment_id, {})


def _deployment_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    deployment_id: int,
    errors: forms.Errors,
    status: int = 200,
) -> Response:
    deployment = deployments.get(db, viewer.actor, deployment_id)
    detail = deployment_detail_out(db, deployment, request.state.language)
    return render.page(
        request,
        "deployment.html",
        status=status,
        nav="deployments",
        item=DeploymentView(detail, _may_manage(db, viewer, deployment)),
        deployment=detail,
        template_yaml=forms.spec_yaml(deployment.template),
        max_replicas=MAX_REPLICAS,
        errors=errors,
    )


@router.post("/deployments/{deployment_id}/scale")
async def scale_deployment(
    deployment_id: DeploymentId, request: Request, viewer: ViewerDep
) -> Response:
    """The replicas wanted, read by the API's schema: a bad number is refused with its
    reason, on the deployment's page (422)."""
    values = forms.fields(await request.form())
    try:
        wanted = DeploymentScale.model_validate(
            {"replicas": forms.number(values.get("replicas", ""))}
        )
    except ValidationError as error:
        errors, status = forms.refused(request, error, prefix="scale")

        def refused() -> Response:
            with get_database(request).reading() as db:
                return _deployment_page(request, db, viewer, deployment_id, errors, status)

        return await to_thread.run_sync(refused)
    workloads = request.app.state.workloads

    def scale(db: Session, actor: Actor, item_id: int) -> object:
        return workloads.scale_deployment(db, actor, item_id, wanted.replicas)

    return await _act(request, viewer, deployment_id, scale, "web.deployments.flash.scaled")


@router.post("/deployments/{deployment_id}/stop")
async def stop_deployment(
    deployment_id: DeploymentId, request: Request, viewer: ViewerDep
) -> Response:
    action = request.app.state.workloads.stop_deployment
    return await _act(request, viewer, deployment_id, action, "web.deployments.flash.stopping")


@router.post("/deployments/{deployment_id}/start")
async def start_deployment(
    deployment_id: DeploymentId, request: Request, viewer: ViewerDep
) -> Response:
    action = request.app.state.workloads.start_deployment
    return await _act(request, viewer, deployment_id, action, "web.deployments.flash.started")


async def _act(
    request: Request,
    viewer: Viewer,
    deployment_id: int,
    action: Callable[[Session, Actor, int], object],
    flash: str,
) -> Response:
    """Scale, stop or start, then back to the deployment's page."""

    def act() -> None:
        with get_database(request).writing() as db:
            action(db, viewer.actor, deployment_id)

    await to_thread.run_sync(act)
    return render.redirect(f"/deployments/{deployment_id}", flash=flash)


@router.post("/deployments/{deployment_id}/remove")
def remove_deployment(
    deployment_id: DeploymentId, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    deployments.remove(db, viewer.actor, deployment_id, request.app.state.settings)
    return render.redirect("/deployments", flash="web.deployments.flash.removed")


@router.get("/deployments/{deployment_id}/replicas/{replica_id}")
def show_replica(
    deployment_id: DeploymentId,
    replica_id: ReplicaId,
    request: Request,
    db: SessionDep,
    viewer: ViewerDep,
) -> Response:
    """A replica: how it runs or ended, its history, its live log."""
    found = deployments.find_replica(db, viewer.actor, deployment_id, replica_id)
    language = request.state.language
    return render.page(
        request,
        "deployment_replica.html",
        nav="deployments",
        owner=f"/deployments/{deployment_id}",  # the replica's deployment or service
        replica=job_out(found, language),
        history=[(event, event_text(event, language)) for event in found.events],
        active=not State(found.state).terminal,
    )


@router.get("/deployments/{deployment_id}/replicas/{replica_id}/log.txt")
def download_log(
    deployment_id: DeploymentId,
    replica_id: ReplicaId,
    request: Request,
    db: SessionDep,
    viewer: ViewerDep,
) -> Response:
    deployments.find_replica(db, viewer.actor, deployment_id, replica_id)
    path = request.app.state.workloads.log_path(replica_id)
    return log_download(path, f"replica-{replica_id}.log")


@router.get("/deployments/{deployment_id}/replicas/{replica_id}/log")
async def follow_log(
    deployment_id: DeploymentId, replica_id: ReplicaId, request: Request, viewer: ViewerDep
) -> Response:
    """The replica's log as server-sent events, as a job's page follows a job's; access to
    the deployment is checked at every read."""
    database, workloads = get_database(request), request.app.state.workloads

    def read(offset: int | None) -> jobs.LogChunk:
        with database.reading() as db:
            deployments.find_replica(db, viewer.actor, deployment_id, replica_id)
            return workloads.read_log(
                db,
                viewer.actor,
                replica_id,
                kind=replica.KIND.name,
                offset=offset or 0,
                limit=LOG_CHUNK,
                tail=LOG_TAIL_LINES if offset is None else None,
            )

    first = await to_thread.run_sync(read, resume_offset(request))
    return log_stream(request, first, read)

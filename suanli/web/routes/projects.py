"""Projects: members and roles, quotas against current use, the project's jobs. Owners manage
members and whether they may open their members' dev environments; administrators create
projects (or everyone, by setting) and set quotas, dev environments' maximum lifetime too."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import SessionDep, SettingsDep
from suanli.api.outputs import job_out
from suanli.core.errors import SuanliError
from suanli.core.names import NAME_PATTERN
from suanli.core.roles import ProjectRole
from suanli.i18n import translate
from suanli.schemas.jobs import JobListQuery
from suanli.schemas.projects import (
    MemberAdd,
    MemberUpdate,
    ProjectCreate,
    ProjectUpdate,
    QuotaUpdate,
)
from suanli.services import cluster, jobs, projects
from suanli.web import forms, render, session
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
ProjectName = Annotated[str, Path(pattern=NAME_PATTERN)]
UserName = Annotated[str, Path(pattern=NAME_PATTERN)]
QUOTA_NUMBERS = ("guaranteed_gpus", "max_gpus", "max_gpus_per_user", "cpus")
QUOTA_SIZES = ("memory_bytes", "storage_bytes")
# Durations as typed ("8h", "1d12h"): the schema reads them.
QUOTA_DURATIONS = ("devenv_max_lifetime_seconds",)


def _list_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    settings: SettingsDep,
    values: dict[str, str] | None = None,
    errors: forms.Errors | None = None,
    status: int = 200,
) -> Response:
    views = projects.list_projects(db, viewer.actor)
    usage = cluster.project_usage(db, [v.project.id for v in views])
    return render.page(
        request,
        "projects.html",
        status=status,
        nav="projects",
        projects=[(v, usage[v.project.id]) for v in views],
        can_create=viewer.actor.is_admin or settings.users_can_create_projects,
        values=values or {},
        errors=errors or {},
    )


@router.get("/projects")
def list_projects(
    request: Request, db: SessionDep, viewer: ViewerDep, settings: SettingsDep
) -> Response:
    return _list_page(request, db, viewer, settings)


@router.post("/projects")
async def create_project(
    request: Request, db: SessionDep, viewer: ViewerDep, settings: SettingsDep
) -> Response:
    values = forms.fields(await request.form())
    try:
        body = ProjectCreate.model_validate(
            {k: v for k, v in values.items() if k in ("name", "display_name", "description")}
        )
        view = projects.create_project(
            db,
            viewer.actor,
            settings,
            name=body.name,
            display_name=body.display_name,
            description=body.description,
        )
    except (ValidationError, SuanliError) as error:
        db.rollback()
        errors, status = forms.refused(request, error)
        return _list_page(request, db, viewer, settings, values, errors, status)
    return render.redirect(f"/projects/{view.project.name}", flash="web.flash.project_created")


def _project_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    name: str,
    errors: forms.Errors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    view = projects.get_project(db, viewer.actor, name)
    language = request.state.language
    found = jobs.list_jobs(db, viewer.actor, JobListQuery(project=name, limit=50))
    role = view.my_role
    return render.page(
        request,
        "project.html",
        status=status,
        nav="projects",
        view=view,
        quota=view.project.quota,
        usage=cluster.project_usage(db, [view.project.id])[view.project.id],
        members=projects.list_members(db, viewer.actor, name),
        jobs=[job_out(job, language) for job in found],
        can_manage=viewer.actor.is_admin or (role is not None and role.at_least(ProjectRole.owner)),
        can_submit=role is not None and role.at_least(ProjectRole.member),
        roles=[r.value for r in ProjectRole],
        errors=errors or {},
        values=values or {},
    )


@router.get("/projects/{name}")
def show_project(
    name: ProjectName, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    return _project_page(request, db, viewer, name)


@router.post("/projects/{name}/members")
async def add_member(
    name: ProjectName, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    values = forms.fields(await request.form())
    try:
        body = MemberAdd.model_validate(
            {"user": values.get("user", ""), "role": values.get("role")}
        )
        projects.add_member(db, viewer.actor, name, body.user, body.role)
    except (ValidationError, SuanliError) as error:
        db.rollback()
        errors, status = forms.refused(request, error, "member")
        return _project_page(request, db, viewer, name, errors, values, status)
    return render.redirect(f"/projects/{name}", flash="web.flash.member_added")


@router.post("/projects/{name}/members/{user}")
async def change_member(
    name: ProjectName, user: UserName, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    """Change a member's role, or remove them (`role` = remove)."""
    values = forms.fields(await request.form())
    try:
        if values.get("role") == "remove":
            projects.remove_member(db, viewer.actor, name, user)
            flash = "web.flash.member_removed"
        else:
            body = MemberUpdate.model_validate({"role": values.get("role")})
            projects.set_member_role(db, viewer.actor, name, user, body.role)
            flash = "web.flash.member_changed"
    except (ValidationError, SuanliError) as error:
        db.rollback()
        found, status = forms.refused(request, error)
        errors = {f"members.{user}": " ".join(found.values())}
        return _project_page(request, db, viewer, name, errors, status=status)
    return render.redirect(f"/projects/{name}", flash=flash)


@router.post("/projects/{name}/quota")
async def set_quota(
    name: ProjectName, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    """Every field at once: an empty one lifts the limit (guaranteed GPUs: 0)."""
    values = forms.fields(await request.form())
    changes: dict[str, object] = {}
    for field in QUOTA_NUMBERS:
        text = values.get(field, "").strip()
        changes[field] = forms.number(text) if text else None
    for field in QUOTA_SIZES:
        text = values.get(field, "").strip()
        changes[field] = forms.size(text) if text else None
    # Every quota field is in the form, so that saving it sets each one as shown: a field
    # left out would be reset by model_dump() below (its default, None, lifts the limit).
    for field in QUOTA_DURATIONS:
        text = values.get(field, "").strip()
        changes[field] = text or None
    if changes["guaranteed_gpus"] is None:
        changes["guaranteed_gpus"] = 0
    if isinstance(changes["cpus"], int):
        changes["cpus"] = float(changes["cpus"])
    # Sizes that are not sizes, and what the schema refuses, are shown together.
    status = 422
    errors = {
        f"quota.{field}": translate("validation.size_parsing", request.state.language)
        for field in QUOTA_SIZES
        if isinstance(changes[field], str)
    }
    try:
        body = QuotaUpdate.model_validate(
            {k: None if f"quota.{k}" in errors else v for k, v in changes.items()}
        )
        if not errors:
            projects.set_quota(db, viewer.actor, name, body.model_dump())
    except (ValidationError, SuanliError) as error:
        db.rollback()
        found, status = forms.refused(request, error, "quota")
        errors.update(found)
    if errors:
        return _project_page(request, db, viewer, name, errors, values, status=status)
    return render.redirect(f"/projects/{name}", flash="web.flash.quota_saved")


@router.post("/projects/{name}/devenvs")
async def set_devenv_access(
    name: ProjectName, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    """Whether the project's owners may open their members' dev environments (a checkbox:
    absent means no). Owners and administrators decide; the service checks."""
    values = forms.fields(await request.form())
    try:
        body = ProjectUpdate.model_validate(
            {"owners_open_devenvs": values.get("owners_open_devenvs") == "on"}
        )
        projects.update_project(
            db, viewer.actor, name, owners_open_devenvs=body.owners_open_devenvs
        )
    except (ValidationError, SuanliError) as error:
        db.rollback()
        errors, status = forms.refused(request, error, "devenvs")
        return _project_page(request, db, viewer, name, errors, status=status)
    return render.redirect(f"/projects/{name}", flash="web.flash.project_devenvs_saved")

"""Projects, their members and quotas."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from suanli.api.deps import CallerDep, SessionDep, SettingsDep
from suanli.core.names import NAME_PATTERN
from suanli.db.models import Membership
from suanli.schemas.data import StorageOut
from suanli.schemas.projects import (
    EnergyOut,
    MemberAdd,
    MemberOut,
    MemberUpdate,
    ProjectCreate,
    ProjectListQuery,
    ProjectOut,
    ProjectUpdate,
    QuotaOut,
    QuotaUpdate,
)
from suanli.services import cluster, data, projects
from suanli.services.projects import ProjectView

router = APIRouter(prefix="/projects", tags=["projects"])
ProjectName = Annotated[str, Path(pattern=NAME_PATTERN)]
UserName = Annotated[str, Path(pattern=NAME_PATTERN)]


def _project_out(view: ProjectView) -> ProjectOut:
    project = view.project
    return ProjectOut(
        name=project.name,
        display_name=project.display_name,
        description=project.description,
        created_at=project.created_at,
        archived_at=project.archived_at,
        my_role=view.my_role,
        member_count=view.member_count,
        owners_open_devenvs=project.owners_open_devenvs,
        quota=QuotaOut.model_validate(project.quota),
    )


def _member_out(membership: Membership) -> MemberOut:
    return MemberOut(
        user=membership.user.name,
        display_name=membership.user.display_name,
        role=membership.role,
        created_at=membership.created_at,
    )


@router.get("", response_model=list[ProjectOut])
def list_projects(
    query: Annotated[ProjectListQuery, Query()], caller: CallerDep, session: SessionDep
) -> list[ProjectOut]:
    """Projects you are a member of (administrators see all)."""
    views = projects.list_projects(session, caller.actor, include_archived=query.include_archived)
    return [_project_out(v) for v in views]


@router.post("", response_model=ProjectOut, status_code=201)
def create_project(
    body: ProjectCreate, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> ProjectOut:
    view = projects.create_project(
        session,
        caller.actor,
        settings,
        name=body.name,
        display_name=body.display_name,
        description=body.description,
        owner=body.owner,
    )
    return _project_out(view)


@router.get("/{name}", response_model=ProjectOut)
def get_project(name: ProjectName, caller: CallerDep, session: SessionDep) -> ProjectOut:
    return _project_out(projects.get_project(session, caller.actor, name))


@router.patch("/{name}", response_model=ProjectOut)
def update_project(
    name: ProjectName, body: ProjectUpdate, caller: CallerDep, session: SessionDep
) -> ProjectOut:
    """Rename a project or change its description (owners)."""
    view = projects.update_project(
        session,
        caller.actor,
        name,
        new_name=body.name,
        display_name=body.display_name,
        description=body.description,
        owners_open_devenvs=body.owners_open_devenvs,
    )
    return _project_out(view)


@router.post("/{name}/archive", response_model=ProjectOut)
def archive_project(name: ProjectName, caller: CallerDep, session: SessionDep) -> ProjectOut:
    """Archive a project: it becomes read-only and leaves the default project list."""
    return _project_out(projects.set_archived(session, caller.actor, name, archived=True))


@router.post("/{name}/unarchive", response_model=ProjectOut)
def unarchive_project(name: ProjectName, caller: CallerDep, session: SessionDep) -> ProjectOut:
    return _project_out(projects.set_archived(session, caller.actor, name, archived=False))


@router.get("/{name}/members", response_model=list[MemberOut])
def list_members(name: ProjectName, caller: CallerDep, session: SessionDep) -> list[MemberOut]:
    return [_member_out(m) for m in projects.list_members(session, caller.actor, name)]


@router.post("/{name}/members", response_model=MemberOut, status_code=201)
def add_member(
    name: ProjectName, body: MemberAdd, caller: CallerDep, session: SessionDep
) -> MemberOut:
    return _member_out(projects.add_member(session, caller.actor, name, body.user, body.role))


@router.patch("/{name}/members/{user}", response_model=MemberOut)
def set_member_role(
    name: ProjectName, user: UserName, body: MemberUpdate, caller: CallerDep, session: SessionDep
) -> MemberOut:
    membership = projects.set_member_role(session, caller.actor, name, user, body.role)
    return _member_out(membership)


@router.delete("/{name}/members/{user}", status_code=204)
def remove_member(
    name: ProjectName, user: UserName, caller: CallerDep, session: SessionDep
) -> None:
    projects.remove_member(session, caller.actor, name, user)


@router.get("/{name}/energy", response_model=EnergyOut)
def project_energy(name: ProjectName, caller: CallerDep, session: SessionDep) -> EnergyOut:
    """How much energy the project's jobs drew on their GPUs, per user."""
    view = projects.get_project(session, caller.actor, name)
    by_user = cluster.energy_by_user(session, view.project.id)
    return EnergyOut(total_wh=round(sum(by_user.values()), 4), by_user=by_user)


@router.get("/{name}/quota", response_model=QuotaOut)
def get_quota(name: ProjectName, caller: CallerDep, session: SessionDep) -> QuotaOut:
    return QuotaOut.model_validate(projects.get_quota(session, caller.actor, name))


@router.get("/{name}/storage", response_model=StorageOut)
def get_storage(name: ProjectName, caller: CallerDep, session: SessionDep) -> StorageOut:
    """Bytes its datasets and models hold (each content once), what unfinished uploads and
    imports reserve, and the quota's limit."""
    project, _ = projects.access(session, caller.actor, name)
    found = data.storage(session, project)
    return StorageOut(
        project=name, used_bytes=found.used, reserved_bytes=found.reserved, limit_bytes=found.limit
    )


@router.patch("/{name}/quota", response_model=QuotaOut)
def set_quota(
    name: ProjectName, body: QuotaUpdate, caller: CallerDep, session: SessionDep
) -> QuotaOut:
    """Change a project's quota (administrators). Fields left out stay; null lifts a limit.
    Guaranteed GPUs cannot be null: 0 means nothing is guaranteed."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("guaranteed_gpus", 0) is None:
        changes["guaranteed_gpus"] = 0
    return QuotaOut.model_validate(projects.set_quota(session, caller.actor, name, changes))

"""Projects (the tenants), their members and their quotas.

Access rule: a project is visible to its members and to administrators. Everyone else gets
"not found" for it, exactly as if it did not exist, so names do not leak across tenants.
Members see; owners manage the project and its members; administrators also set quotas.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from suanli.config import Settings
from suanli.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from suanli.core.roles import ProjectRole
from suanli.db.models import Membership, Project, ProjectQuota, User, utcnow
from suanli.services import audit
from suanli.services.accounts import get_user
from suanli.services.actor import Actor
from suanli.services.common import commit, require_admin

QUOTA_FIELDS = (
    "guaranteed_gpus",
    "max_gpus",
    "max_gpus_per_user",
    "cpus",
    "memory_bytes",
    "storage_bytes",
    "devenv_max_lifetime_seconds",
)


@dataclass(frozen=True)
class ProjectView:
    """A project as its viewer sees it: with the viewer's own role (None for an admin who is
    not a member)."""

    project: Project
    my_role: ProjectRole | None
    member_count: int


def access(
    session: Session, actor: Actor, name: str, need: ProjectRole = ProjectRole.viewer
) -> tuple[Project, ProjectRole | None]:
    """The project if the actor may act on it with the `need` role; raises otherwise."""
    project = session.scalar(
        select(Project).where(Project.name == name).options(selectinload(Project.quota))
    )
    role = _role_of(session, actor, project) if project else None
    if project is None or (role is None and not actor.is_admin):
        raise NotFound("error.project_not_found", name=name)
    if not actor.is_admin and (role is None or not role.at_least(need)):
        raise Forbidden("error.role_required", role=need.value)
    return project, role


def list_projects(
    session: Session, actor: Actor, *, include_archived: bool = False
) -> list[ProjectView]:
    counts = (
        select(Membership.project_id, func.count().label("n"))
        .group_by(Membership.project_id)
        .subquery()
    )
    mine = (
        select(Membership.project_id, Membership.role)
        .where(Membership.user_id == actor.account.id)
        .subquery()
    )
    query = (
        select(Project, mine.c.role, func.coalesce(counts.c.n, 0))
        .outerjoin(mine, mine.c.project_id == Project.id)
        .outerjoin(counts, counts.c.project_id == Project.id)
        .options(selectinload(Project.quota))
        .order_by(Project.name)
    )
    if not actor.is_admin:
        query = query.where(mine.c.role.is_not(None))
    if not include_archived:
        query = query.where(Project.archived_at.is_(None))
    return [
        ProjectView(project, ProjectRole(role) if role else None, count)
        for project, role, count in session.execute(query)
    ]


def get_project(session: Session, actor: Actor, name: str) -> ProjectView:
    project, role = access(session, actor, name)
    return ProjectView(project, role, _member_count(session, project))


def create_project(
    session: Session,
    actor: Actor,
    settings: Settings,
    *,
    name: str,
    display_name: str = "",
    description: str = "",
    owner: str | None = None,
) -> ProjectView:
    """Create a project with an empty quota (nothing guaranteed, no ceilings) and one owner:
    the named user, or the creator."""
    if not actor.is_admin and not settings.users_can_create_projects:
        raise Forbidden("error.admin_only")
    if owner is not None and owner != actor.name and not actor.is_admin:
        raise Forbidden("error.admin_only")
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict("error.project_exists", name=name)
    owner_user = get_user(session, owner) if owner else actor.account
    project = Project(name=name, display_name=display_name, description=description)
    project.quota = ProjectQuota()
    project.memberships.append(Membership(user_id=owner_user.id, role=ProjectRole.owner))
    session.add(project)
    session.flush()  # the audit event records the new project's id
    audit.record(
        session,
        actor,
        "project.create",
        target_type="project",
        target=name,
        project=project,
        detail={"owner": owner_user.name},
    )
    commit(session, "error.project_exists", name=name)
    role = ProjectRole.owner if owner_user.id == actor.account.id else None
    return ProjectView(project, role, 1)


def update_project(
    session: Session,
    actor: Actor,
    name: str,
    *,
    new_name: str | None = None,
    display_name: str | None = None,
    description: str | None = None,
    owners_open_devenvs: bool | None = None,
) -> ProjectView:
    project, role = access(session, actor, name, ProjectRole.owner)
    writable(project)
    diff: dict[str, list[Any]] = {}
    if new_name is not None and new_name != project.name:
        if session.scalar(select(Project.id).where(Project.name == new_name)) is not None:
            raise Conflict("error.project_exists", name=new_name)
        diff["name"] = [project.name, new_name]
        project.name = new_name
    for attr, value in (
        ("display_name", display_name),
        ("description", description),
        ("owners_open_devenvs", owners_open_devenvs),
    ):
        if value is not None and value != getattr(project, attr):
            diff[attr] = [getattr(project, attr), value]
            setattr(project, attr, value)
    if diff:
        audit.record(
            session,
            actor,
            "project.update",
            target_type="project",
            target=project.name,
            project=project,
            detail=diff,
        )
    commit(session, "error.project_exists", name=new_name or name)
    return ProjectView(project, role, _member_count(session, project))


def set_archived(session: Session, actor: Actor, name: str, archived: bool) -> ProjectView:
    """Archive (read-only, hidden from default lists) or bring back a project."""
    project, role = access(session, actor, name, ProjectRole.owner)
    if (project.archived_at is not None) != archived:
        project.archived_at = utcnow() if archived else None
        action = "project.archive" if archived else "project.unarchive"
        audit.record(session, actor, action, target_type="project", target=name, project=project)
        commit(session, "error.conflict")
    return ProjectView(project, role, _member_count(session, project))


def list_members(session: Session, actor: Actor, name: str) -> Sequence[Membership]:
    project, _ = access(session, actor, name)
    return session.scalars(
        select(Membership)
        .join(User)
        .where(Membership.project_id == project.id)
        .options(selectinload(Membership.user))
        .order_by(User.name)
    ).all()


def add_member(
    session: Session, actor: Actor, name: str, username: str, role: ProjectRole
) -> Membership:
    project, _ = access(session, actor, name, ProjectRole.owner)
    writable(project)
    user = get_user(session, username)
    if session.get(Membership, (project.id, user.id)) is not None:
        raise Conflict("error.member_exists", user=username, project=name)
    membership = Membership(project_id=project.id, user_id=user.id, role=role)
    membership.user = user
    session.add(membership)
    audit.record(
        session,
        actor,
        "project.member_add",
        target_type="user",
        target=username,
        project=project,
        detail={"role": role.value},
    )
    commit(session, "error.member_exists", user=username, project=name)
    return membership


def set_member_role(
    session: Session, actor: Actor, name: str, username: str, role: ProjectRole
) -> Membership:
    project, _ = access(session, actor, name, ProjectRole.owner)
    writable(project)
    membership = _membership(session, project, username)
    if membership.role != role:
        if membership.role == ProjectRole.owner:
            _keep_an_owner(session, project)
        audit.record(
            session,
            actor,
            "project.member_role",
            target_type="user",
            target=username,
            project=project,
            detail={"role": [membership.role, role.value]},
        )
        membership.role = role
        commit(session, "error.conflict")
    return membership


def remove_member(session: Session, actor: Actor, name: str, username: str) -> None:
    project, _ = access(session, actor, name, ProjectRole.owner)
    writable(project)
    membership = _membership(session, project, username)
    if membership.role == ProjectRole.owner:
        _keep_an_owner(session, project)
    session.delete(membership)
    audit.record(
        session,
        actor,
        "project.member_remove",
        target_type="user",
        target=username,
        project=project,
    )
    commit(session, "error.conflict")


def get_quota(session: Session, actor: Actor, name: str) -> ProjectQuota:
    project, _ = access(session, actor, name)
    return project.quota


def set_quota(session: Session, actor: Actor, name: str, changes: dict[str, Any]) -> ProjectQuota:
    """Change the given quota fields; None lifts a limit. Only administrators set quotas."""
    require_admin(actor)
    project, _ = access(session, actor, name)
    writable(project)
    quota = project.quota
    merged = {f: changes.get(f, getattr(quota, f)) for f in QUOTA_FIELDS}
    check_quota(merged)
    diff = {f: [getattr(quota, f), v] for f, v in merged.items() if getattr(quota, f) != v}
    for attr, value in merged.items():
        setattr(quota, attr, value)
    if diff:
        audit.record(
            session,
            actor,
            "project.quota",
            target_type="project",
            target=name,
            project=project,
            detail=diff,
        )
        commit(session, "error.conflict")
    return quota


def check_quota(quota: dict[str, Any]) -> None:
    """Rules across fields (single fields are checked by the schema)."""
    guaranteed, ceiling = quota["guaranteed_gpus"], quota["max_gpus"]
    if ceiling is not None and guaranteed > ceiling:
        raise InvalidInput(
            "error.quota_max_below_guaranteed", field="max_gpus", guaranteed=guaranteed, max=ceiling
        )
    per_user = quota["max_gpus_per_user"]
    if per_user is not None and ceiling is not None and per_user > ceiling:
        raise InvalidInput(
            "error.quota_user_above_max", field="max_gpus_per_user", per_user=per_user, max=ceiling
        )


def _role_of(session: Session, actor: Actor, project: Project) -> ProjectRole | None:
    if actor.user is None:
        return None
    role = session.scalar(
        select(Membership.role).where(
            Membership.project_id == project.id, Membership.user_id == actor.account.id
        )
    )
    return ProjectRole(role) if role else None


def _member_count(session: Session, project: Project) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(Membership).where(Membership.project_id == project.id)
        )
        or 0
    )


def _membership(session: Session, project: Project, username: str) -> Membership:
    membership = session.scalar(
        select(Membership)
        .join(User)
        .where(Membership.project_id == project.id, User.name == username)
        .options(selectinload(Membership.user))
    )
    if membership is None:
        raise NotFound("error.member_not_found", user=username, project=project.name)
    return membership


def _keep_an_owner(session: Session, project: Project) -> None:
    """Refuse to remove the last owner. The owner rows are locked, so two owners demoting
    each other at once cannot both succeed (see accounts._keep_an_admin)."""
    owners = session.scalars(
        select(Membership.user_id)
        .where(Membership.project_id == project.id, Membership.role == ProjectRole.owner)
        .order_by(Membership.user_id)
        .with_for_update()
    ).all()
    if len(owners) <= 1:
        raise Conflict("error.last_owner", project=project.name)


def writable(project: Project) -> None:
    if project.archived_at is not None:
        raise Conflict("error.project_archived", project=project.name)

"""The audit trail: every change and every login attempt."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.core.errors import Forbidden
from suanli.db.models import AuditEvent, Project
from suanli.schemas.system import AuditQuery
from suanli.services.actor import Actor


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target_type: str = "",
    target: str = "",
    project: Project | None = None,
    result: str = "success",
    detail: dict[str, Any] | None = None,
    actor_name: str | None = None,
) -> None:
    """Add an event to the session; the caller's commit writes it with the change it records."""
    session.add(
        AuditEvent(
            actor=actor.name if actor_name is None else actor_name,
            action=action,
            target_type=target_type,
            target=target,
            project=project.name if project else "",
            project_id=project.id if project else None,
            result=result,
            address=actor.address,
            detail=detail or {},
        )
    )


def list_events(session: Session, actor: Actor, where: AuditQuery) -> list[AuditEvent]:
    """Newest first. `action` matches a prefix ("user." finds every user change)."""
    if not actor.is_admin:
        raise Forbidden("error.admin_only")
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(where.limit)
    if where.actor:
        query = query.where(AuditEvent.actor == where.actor)
    if where.action:
        query = query.where(AuditEvent.action.startswith(where.action, autoescape=True))
    if where.target_type:
        query = query.where(AuditEvent.target_type == where.target_type)
    if where.target:
        query = query.where(AuditEvent.target == where.target)
    if where.project:
        # By id when the project exists, so its history survives renames; by name for the
        # history of a project that no longer goes by any name.
        project_id = session.scalar(select(Project.id).where(Project.name == where.project))
        query = query.where(
            AuditEvent.project_id == project_id
            if project_id is not None
            else AuditEvent.project == where.project
        )
    if where.result:
        query = query.where(AuditEvent.result == where.result)
    if where.since:
        query = query.where(AuditEvent.at >= where.since)
    if where.until:
        query = query.where(AuditEvent.at < where.until)
    if where.before_id:
        query = query.where(AuditEvent.id < where.before_id)
    return list(session.scalars(query))

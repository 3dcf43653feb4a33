"""The audit log (administrators)."""

from typing import Annotated

from fastapi import APIRouter, Query

from suanli.api.deps import CallerDep, SessionDep
from suanli.schemas.system import AuditEventOut
from suanli.schemas.types import MAX_INT32, UtcDatetime, text
from suanli.services import audit
from suanli.services.audit import AuditFilter

router = APIRouter(prefix="/audit", tags=["audit"])
Filter = text(max_length=128)


@router.get("", response_model=list[AuditEventOut])
def list_audit_events(
    caller: CallerDep,
    session: SessionDep,
    actor: Annotated[Filter | None, Query(description="user name of whoever acted")] = None,
    action: Annotated[
        Filter | None, Query(description="prefix, e.g. 'user.' or 'auth.login'")
    ] = None,
    target_type: Annotated[Filter | None, Query()] = None,
    target: Annotated[Filter | None, Query()] = None,
    project: Annotated[Filter | None, Query()] = None,
    result: Annotated[Filter | None, Query(description="success, failure or locked")] = None,
    since: Annotated[UtcDatetime | None, Query(description="ISO 8601; UTC if no zone")] = None,
    until: Annotated[UtcDatetime | None, Query(description="ISO 8601; UTC if no zone")] = None,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_INT32, description="page: events older than this id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventOut]:
    """Newest first. Page through with `before_id` set to the last id you received."""
    where = AuditFilter(
        actor=actor,
        action=action,
        target_type=target_type,
        target=target,
        project=project,
        result=result,
        since=since,
        until=until,
        before_id=before_id,
        limit=limit,
    )
    return [
        AuditEventOut.model_validate(e) for e in audit.list_events(session, caller.actor, where)
    ]

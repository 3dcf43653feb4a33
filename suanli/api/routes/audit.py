"""The audit log (administrators)."""

from typing import Annotated

from fastapi import APIRouter, Query

from suanli.api.deps import CallerDep, SessionDep
from suanli.schemas.system import AuditEventOut, AuditQuery
from suanli.services import audit

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=list[AuditEventOut])
def list_audit_events(
    query: Annotated[AuditQuery, Query()], caller: CallerDep, session: SessionDep
) -> list[AuditEventOut]:
    """Newest first. Page through with `before_id` set to the last id you received."""
    events = audit.list_events(session, caller.actor, query)
    return [AuditEventOut.model_validate(e) for e in events]

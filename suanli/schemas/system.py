"""Audit events, version, health and errors."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from suanli.schemas.types import MAX_INT32, RequestModel, ResponseModel, UtcDatetime, text

Filter = text(max_length=128)


class AuditQuery(RequestModel):
    """Filters of the audit log, as query parameters. Newest first; page with `before_id`."""

    actor: Filter | None = Field(None, description="user name of whoever acted")
    action: Filter | None = Field(None, description="prefix, e.g. 'user.' or 'auth.login'")
    target_type: Filter | None = None
    target: Filter | None = None
    project: Filter | None = None
    result: Filter | None = Field(None, description="success, failure or locked")
    since: UtcDatetime | None = Field(None, description="ISO 8601; UTC if no zone")
    until: UtcDatetime | None = Field(None, description="ISO 8601; UTC if no zone")
    before_id: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = Field(
        None, description="page: events older than this id"
    )
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class AuditEventOut(ResponseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target: str
    project: str
    result: str
    address: str
    detail: dict[str, Any]


class VersionOut(BaseModel):
    version: str
    api: str
    database: str


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class FieldProblem(BaseModel):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, with per-field errors for invalid input."""

    type: str
    title: str
    status: int
    detail: str
    instance: str = ""
    errors: list[FieldProblem] = []


class LogChunkOut(BaseModel):
    text: str
    next_offset: int
    finished: bool

"""Audit events, version, health and errors."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from suanli.schemas.types import ResponseModel


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

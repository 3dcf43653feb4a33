"""Health (public) and version (signed in)."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from suanli import __version__
from suanli.api.deps import CallerDep, get_database
from suanli.db import migrate
from suanli.db.engine import Database
from suanli.schemas.system import Health, VersionOut

public = APIRouter(tags=["health"])
router = APIRouter(tags=["system"])


@public.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers. Says nothing about the database (see /readyz)."""
    return Health(status="ok")


@public.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(database: Annotated[Database, Depends(get_database)]) -> JSONResponse:
    """Ready to serve: the database answers and its schema is at the code's migration head."""
    checks: dict[str, str] = {}
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
        checks["migrations"] = "ok" if migrate.is_current(database.engine) else "pending"
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values()) and len(checks) == 2
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/version", response_model=VersionOut)
def version(_: CallerDep, database: Annotated[Database, Depends(get_database)]) -> VersionOut:
    return VersionOut(version=__version__, api="v1", database=database.dialect)

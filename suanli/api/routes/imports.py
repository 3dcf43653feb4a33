"""Imports of datasets and models, by id: follow, cancel, retry."""

from typing import Annotated

from fastapi import APIRouter, Path, Request

from suanli.api.data_outputs import import_out
from suanli.api.deps import CallerDep, SessionDep, WorkloadsDep
from suanli.api.problems import language_of
from suanli.controllers.imports import ImportController
from suanli.schemas.data import ImportOut
from suanli.schemas.types import MAX_INT32
from suanli.services import imports

router = APIRouter(prefix="/imports", tags=["imports"])
ImportId = Annotated[int, Path(ge=1, le=MAX_INT32)]


@router.get("/{import_id}", response_model=ImportOut)
def show(
    import_id: ImportId, request: Request, caller: CallerDep, session: SessionDep
) -> ImportOut:
    """Its state and progress (bytes done of the total, where the source said it)."""
    return import_out(imports.get(session, caller.actor, import_id), language_of(request))


@router.post("/{import_id}/cancel", response_model=ImportOut)
def cancel(
    import_id: ImportId, request: Request, caller: CallerDep, session: SessionDep
) -> ImportOut:
    """Stop it: a queued import at once, a running one at its next chunk. No version."""
    return import_out(imports.cancel(session, caller.actor, import_id), language_of(request))


@router.post("/{import_id}/retry", response_model=ImportOut)
def retry(
    import_id: ImportId,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> ImportOut:
    """Run a failed or cancelled import again; what it fetched before is resumed."""
    row = imports.retry(session, caller.actor, import_id)
    workloads.wake(ImportController.name)
    return import_out(row, language_of(request))

"""API keys for the model gateway: create (shown once), list, revoke."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session

from suanli.api.deps import CallerDep, SessionDep
from suanli.api.service_outputs import key_out
from suanli.db.models import ServiceKey
from suanli.schemas.services import ServiceKeyCreated, ServiceKeyOut, ServiceKeySpec
from suanli.schemas.types import MAX_INT32, Name, RequestModel
from suanli.services import service_keys

router = APIRouter(prefix="/service-keys", tags=["services"])
KeyId = Annotated[int, Path(ge=1, le=MAX_INT32)]


class KeyListQuery(RequestModel):
    project: Name


def _used(session: Session, key: ServiceKey) -> int:
    if key.revoked_at is not None:
        return 0
    since = service_keys.period_start(key.budget_period, datetime.now(UTC))
    return service_keys.used(session, key.id, since)


@router.post("", response_model=ServiceKeyCreated, status_code=201)
def create(spec: ServiceKeySpec, caller: CallerDep, session: SessionDep) -> ServiceKeyCreated:
    """A key for the project's services (`models`: some of them; none: all), with an
    expiry, limits per minute and a token budget per day or month. The key is in this
    answer only: it is stored hashed."""
    key, secret = service_keys.create(session, caller.actor, spec)
    return ServiceKeyCreated(**key_out(key, 0).model_dump(), key=secret)


@router.get("", response_model=list[ServiceKeyOut])
def list_keys(
    query: Annotated[KeyListQuery, Query()], caller: CallerDep, session: SessionDep
) -> list[ServiceKeyOut]:
    """Your keys of the project (owners: everyone's), with the tokens spent this period."""
    found = service_keys.list_keys(session, caller.actor, query.project)
    return [key_out(key, _used(session, key)) for key in found]


@router.delete("/{key_id}", response_model=ServiceKeyOut)
def revoke(
    key_id: KeyId, request: Request, caller: CallerDep, session: SessionDep
) -> ServiceKeyOut:
    """The gateway refuses it from now on."""
    key = service_keys.revoke(session, caller.actor, key_id)
    gateway = request.app.state.gateway
    gateway.identities.forget(key.key_hash)
    gateway.meter.forget(key.id)
    return key_out(key, 0)

"""Request dependencies: the database session, the caller, the caller's language."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from suanli.application import Workloads
from suanli.config import Settings
from suanli.core.errors import Unauthenticated
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.services import tokens
from suanli.services.actor import Actor

_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def get_database(request: Request) -> Database:
    return request.app.state.database


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> BlobStore:
    return request.app.state.store


def get_workloads(request: Request) -> Workloads:
    return request.app.state.workloads


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request: a write transaction for methods that change things.

    The transaction begins at the handler's first query, inside the handler's worker thread,
    and services commit before they return. The session is closed here, on the event loop:
    a transaction left open by an error is rolled back without waiting for a free worker
    thread, which under load may all be waiting for the very lock it holds.
    """
    session = get_database(request).session(write=request.method not in _READ_METHODS)
    try:
        yield session
    finally:
        session.close()


def client_address(request: Request) -> str:
    """The peer's address. Proxy headers are believed only from the proxies the settings name
    (uvicorn's forwarded_allow_ips); the column holds 64 characters."""
    return request.client.host[:64] if request.client else ""


@dataclass(frozen=True)
class Caller:
    actor: Actor
    token_id: int


# Declared so that the OpenAPI document (and the Authorize button of /docs) knows the scheme;
# a missing or malformed header is answered by get_caller, as problem+json.
bearer = HTTPBearer(auto_error=False, description="A token from login or `suanli tokens create`")


def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The user behind the request's bearer token; 401 without a live one.

    Looked up in a short session of its own, so that the request's write transaction (and
    SQLite's write lock) starts only when the handler needs it. The user comes back detached:
    services that change it load it again in their own session.
    """
    if credentials is None or not credentials.credentials.strip():
        raise Unauthenticated()
    database = get_database(request)
    found = getattr(request.state, "authenticated", None)  # by api.limits, for a body
    if found is None:
        with database.reading() as session:
            found = tokens.authenticate(session, credentials.credentials.strip())
    user, token = found
    if tokens.needs_last_used(token):
        with database.writing() as writer:
            tokens.touch(writer, token.id)
    return Caller(actor=Actor(user=user, address=client_address(request)), token_id=token.id)


SessionDep = Annotated[Session, Depends(get_session)]
DatabaseDep = Annotated[Database, Depends(get_database)]
CallerDep = Annotated[Caller, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
WorkloadsDep = Annotated[Workloads, Depends(get_workloads)]
StoreDep = Annotated[BlobStore, Depends(get_store)]

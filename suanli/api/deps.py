"""Request dependencies: the database session, the caller, the caller's language."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from suanli.config import Settings
from suanli.core.errors import Unauthenticated
from suanli.db.engine import Database
from suanli.db.models import utcnow
from suanli.services import tokens
from suanli.services.actor import Actor

_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def get_database(request: Request) -> Database:
    return request.app.state.database


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: a write transaction for methods that change things."""
    database = get_database(request)
    with database.session(write=request.method not in _READ_METHODS) as session:
        yield session


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


@dataclass(frozen=True)
class Caller:
    actor: Actor
    token_id: int


# Declared so that the OpenAPI document (and the Authorize button of /docs) knows the scheme;
# a missing or malformed header is answered by get_caller, as problem+json.
bearer = HTTPBearer(auto_error=False, description="A token from login or `suanli tokens create`")


def get_caller(
    request: Request,
    session: Annotated[Session, Depends(get_session)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The user behind the request's bearer token; 401 without a live one."""
    if credentials is None or not credentials.credentials.strip():
        raise Unauthenticated()
    user, token = tokens.authenticate(session, credentials.credentials.strip())
    if tokens.needs_last_used(token):
        if request.method in _READ_METHODS:
            with get_database(request).writing() as writer:
                tokens.touch(writer, token.id)
        else:
            # This request already holds SQLite's write lock; its own commit records the use.
            token.last_used_at = utcnow()
    return Caller(actor=Actor(user=user, address=client_address(request)), token_id=token.id)


SessionDep = Annotated[Session, Depends(get_session)]
CallerDep = Annotated[Caller, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

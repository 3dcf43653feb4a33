"""API tokens: made by users for scripts, or issued by logging in; looked up on every request.

Kinds: `session` (from logging in), `api` (made for scripts: everything its user may do) and
`metrics` (made by an administrator for Prometheus: it reads `/metrics` and nothing else, so
that a scraper's configuration never holds a credential that could change anything).
"""

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.core.errors import NotFound, Unauthenticated
from suanli.db.models import ApiToken, User, utcnow
from suanli.security.tokens import display_prefix, hash_token, new_token
from suanli.services import audit
from suanli.services.actor import Actor
from suanli.services.common import commit, require_admin

METRICS = "metrics"  # the kind of a token that reads only /metrics

# Recording every use would turn each read into a write; a few minutes' precision is enough.
LAST_USED_PRECISION = timedelta(minutes=5)


def issue(
    session: Session, user: User, *, name: str, kind: str, expires_at: datetime | None
) -> tuple[ApiToken, str]:
    """Add a token to the session and return it with its secret, which is never stored."""
    secret = new_token()
    token = ApiToken(
        user_id=user.id,
        name=name,
        kind=kind,
        token_hash=hash_token(secret),
        prefix=display_prefix(secret),
        expires_at=expires_at,
    )
    session.add(token)
    return token, secret


def create(
    session: Session,
    actor: Actor,
    *,
    name: str,
    expires_at: datetime | None,
    kind: str = "api",
) -> tuple[ApiToken, str]:
    """An `api` token, or a `metrics` one (administrators: /metrics shows every tenant)."""
    if kind == METRICS:
        require_admin(actor)
    token, secret = issue(session, actor.account, name=name, kind=kind, expires_at=expires_at)
    audit.record(
        session,
        actor,
        "token.create",
        target_type="token",
        target=name,
        detail={"expires_at": expires_at.isoformat() if expires_at else None, "kind": kind},
    )
    commit(session, "error.conflict")
    return token, secret


def list_mine(session: Session, actor: Actor) -> Sequence[ApiToken]:
    """The caller's live tokens (revoked ones are gone for good; expired ones are shown)."""
    return session.scalars(
        select(ApiToken)
        .where(ApiToken.user_id == actor.account.id, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.id)
    ).all()


def revoke(session: Session, actor: Actor, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != actor.account.id or token.revoked_at is not None:
        raise NotFound("error.token_not_found", id=token_id)
    token.revoked_at = utcnow()
    audit.record(
        session,
        actor,
        "token.revoke",
        target_type="token",
        target=token.name,
        detail={"id": token.id},
    )
    commit(session, "error.conflict")


def authenticate(session: Session, secret: str) -> tuple[User, ApiToken]:
    """The user behind a bearer token, if the token is live, the user enabled, and the token
    not one that only reads /metrics."""
    user, token = authenticate_any(session, secret)
    if token.kind == METRICS:
        raise Unauthenticated("error.token_only_metrics")
    return user, token


def authenticate_any(session: Session, secret: str) -> tuple[User, ApiToken]:
    """The user behind a live token of any kind: for `/metrics` only (see authenticate)."""
    row = session.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(secret))
    ).first()
    if row is None:
        raise Unauthenticated("error.bad_token")
    token, user = row
    now = utcnow()
    if token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
        raise Unauthenticated("error.bad_token")
    if user.is_disabled:
        raise Unauthenticated("error.user_disabled")
    return user, token


def needs_last_used(token: ApiToken) -> bool:
    return token.last_used_at is None or utcnow() - token.last_used_at > LAST_USED_PRECISION


def touch(session: Session, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is not None:
        token.last_used_at = utcnow()
        session.commit()

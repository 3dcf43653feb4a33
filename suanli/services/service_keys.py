"""API keys for a project's model services (the gateway at /v1).

A member creates a key for their project, for all of its services or some, with an expiry,
rate limits (requests and tokens per minute) and a token budget per day or month. The key is
shown once; only its SHA-256 is kept. The author, the project's owners and administrators
revoke it, and the gateway refuses it from then on.
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from suanli.core.errors import Forbidden, NotFound
from suanli.core.roles import ProjectRole
from suanli.db.models import Membership, ServiceKey, ServiceUsage, User
from suanli.schemas.services import ServiceKeySpec
from suanli.services import audit
from suanli.services.actor import Actor
from suanli.services.common import commit
from suanli.services.projects import access, writable
from suanli.services.tokens import hash_token

KEY_PREFIX = "sk-suanli-"


@dataclass(frozen=True)
class KeyGrant:
    """What the gateway needs of a key, detached from any session."""

    id: int
    key_hash: str
    project_id: int
    project: str
    user_id: int | None
    user_name: str
    models: frozenset[str] | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    token_budget: int | None
    budget_period: str
    expires_at: datetime | None


def create(session: Session, actor: Actor, spec: ServiceKeySpec) -> tuple[ServiceKey, str]:
    key, secret = add(session, actor, spec)
    commit(session, "error.conflict")
    return key, secret


def add(session: Session, actor: Actor, spec: ServiceKeySpec) -> tuple[ServiceKey, str]:
    """A new key in the session, not yet committed (a load sweep commits it with its job)."""
    project, _ = access(session, actor, spec.project, ProjectRole.member)
    writable(project)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=spec.expires_in) if spec.expires_in else None
    key = ServiceKey(
        project=project,
        user_id=actor.account.id,
        user_name=actor.name,
        name=spec.name,
        key_hash=hash_token(secret),
        prefix=secret[: len(KEY_PREFIX) + 6],
        models=sorted(set(spec.models)) if spec.models else None,
        requests_per_minute=spec.requests_per_minute,
        tokens_per_minute=spec.tokens_per_minute,
        token_budget=spec.token_budget,
        budget_period=spec.budget_period,
        expires_at=expires,
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        actor,
        "service_key.create",
        target_type="service_key",
        target=spec.name,
        project=project,
        detail={"models": key.models, "prefix": key.prefix},
    )
    return key, secret


def list_keys(session: Session, actor: Actor, project_name: str) -> Sequence[ServiceKey]:
    """A member sees their own keys; owners and administrators see every key of the
    project."""
    project, role = access(session, actor, project_name)
    statement = (
        select(ServiceKey)
        .options(selectinload(ServiceKey.project))
        .where(ServiceKey.project_id == project.id)
        .order_by(ServiceKey.id.desc())
    )
    if not actor.is_admin and role != ProjectRole.owner:
        statement = statement.where(ServiceKey.user_id == actor.account.id)
    return session.scalars(statement).all()


def revoke(session: Session, actor: Actor, key_id: int) -> ServiceKey:
    key = session.get(ServiceKey, key_id, options=[selectinload(ServiceKey.project)])
    missing = NotFound("error.service_key_not_found", id=key_id)
    if key is None:
        raise missing
    try:
        _, role = access(session, actor, key.project.name)
    except NotFound:
        raise missing from None
    mine = key.user_id == actor.account.id
    if not (mine or actor.is_admin or role == ProjectRole.owner):
        raise missing if role == ProjectRole.viewer else Forbidden("error.service_key_not_yours")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        audit.record(
            session,
            actor,
            "service_key.revoke",
            target_type="service_key",
            target=key.name,
            project=key.project,
            detail={"prefix": key.prefix},
        )
        commit(session, "error.conflict")
    return key


def grant(session: Session, secret: str) -> KeyGrant | None:
    """The live key behind a secret, or None (unknown, revoked, expired, its author
    disabled or no longer a member of its project)."""
    key = session.scalar(
        select(ServiceKey)
        .options(selectinload(ServiceKey.project))
        .where(ServiceKey.key_hash == hash_token(secret))
    )
    if key is None or key.revoked_at is not None:
        return None
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        return None
    if key.user_id is not None:
        user = session.get(User, key.user_id)
        member = session.get(Membership, (key.project_id, key.user_id))
        if user is None or user.is_disabled or (member is None and not user.is_admin):
            return None
    return KeyGrant(
        id=key.id,
        key_hash=key.key_hash,
        project_id=key.project_id,
        project=key.project.name,
        user_id=key.user_id,
        user_name=key.user_name,
        models=frozenset(key.models) if key.models is not None else None,
        requests_per_minute=key.requests_per_minute,
        tokens_per_minute=key.tokens_per_minute,
        token_budget=key.token_budget,
        budget_period=key.budget_period,
        expires_at=key.expires_at,
    )


def period_start(period: str, now: datetime) -> datetime:
    """The start of the key's budget period (UTC): today, or this month."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def period_end(period: str, now: datetime) -> datetime:
    start = period_start(period, now)
    if period == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def used(session: Session, key_id: int, since: datetime) -> int:
    """Tokens the key spent since then (prompt and completion)."""
    total = session.scalar(
        select(
            func.coalesce(func.sum(ServiceUsage.prompt_tokens + ServiceUsage.completion_tokens), 0)
        ).where(ServiceUsage.key_id == key_id, ServiceUsage.at >= since)
    )
    return int(total or 0)

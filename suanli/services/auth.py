"""Logging in and out. A login issues a session token; every attempt is audited and throttled."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_
from sqlalchemy.orm import Session

from suanli.config import Settings
from suanli.core.errors import RateLimited, Unauthenticated
from suanli.core.throttle import (
    ThrottlePolicy,
    ThrottleState,
    after_failure,
    seconds_locked,
)
from suanli.db.models import ApiToken, LoginThrottle, User, utcnow
from suanli.security.passwords import verify_password
from suanli.services import audit, tokens
from suanli.services.accounts import find_user
from suanli.services.actor import Actor


@dataclass(frozen=True)
class LoginPolicy:
    per_user: ThrottlePolicy
    per_address: ThrottlePolicy
    session_lifetime: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> "LoginPolicy":
        window = timedelta(seconds=settings.login_failure_window_seconds)
        lockout = timedelta(seconds=settings.login_lockout_seconds)
        return cls(
            per_user=ThrottlePolicy(settings.login_max_failures_per_user, window, lockout),
            per_address=ThrottlePolicy(settings.login_max_failures_per_address, window, lockout),
            session_lifetime=timedelta(days=settings.session_token_days),
        )


def login(
    session: Session,
    policy: LoginPolicy,
    *,
    username: str,
    password: str,
    address: str,
    token_name: str,
) -> tuple[User, ApiToken, str]:
    """Check the password and issue a session token, unless the name or address is locked.

    A locked name is refused even with the right password, so that guessing cannot go on
    in the background; the refusal tells how long the lock lasts.
    """
    now = utcnow()
    anonymous = Actor(user=None, address=address)
    user_row = _throttle(session, "user", username)
    address_row = _throttle(session, "address", address)
    locked = max(seconds_locked(_state(user_row), now), seconds_locked(_state(address_row), now))
    if locked:
        audit.record(
            session,
            anonymous,
            "auth.login",
            target_type="user",
            target=username,
            result="locked",
            actor_name=username,
        )
        session.commit()
        raise RateLimited("error.locked", retry_after=locked)

    user = find_user(session, username)
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.is_disabled:
        _forget_stale(session, now, policy)
        _fail(session, user_row, "user", username, policy.per_user)
        _fail(session, address_row, "address", address, policy.per_address)
        reason = "disabled" if ok and user is not None else "bad_credentials"
        audit.record(
            session,
            anonymous,
            "auth.login",
            target_type="user",
            target=username,
            result="failure",
            actor_name=username,
            detail={"reason": reason},
        )
        session.commit()
        raise Unauthenticated("error.bad_credentials")

    if user_row is not None:
        session.delete(user_row)
    user.last_login_at = now
    token, secret = tokens.issue(
        session, user, name=token_name, kind="session", expires_at=now + policy.session_lifetime
    )
    audit.record(
        session,
        Actor(user=user, address=address),
        "auth.login",
        target_type="user",
        target=username,
    )
    session.commit()
    return user, token, secret


def logout(session: Session, actor: Actor, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = utcnow()
    audit.record(session, actor, "auth.logout", target_type="user", target=actor.name)
    session.commit()


def _throttle(session: Session, scope: str, key: str) -> LoginThrottle | None:
    return session.get(LoginThrottle, (scope, key[:128]))


def _state(row: LoginThrottle | None) -> ThrottleState | None:
    if row is None:
        return None
    return ThrottleState(row.failures, row.window_started_at, row.locked_until)


def _forget_stale(session: Session, now: datetime, policy: LoginPolicy) -> None:
    """Drop counts whose window and lock are over, so guessed names cannot grow the table."""
    window = max(policy.per_user.window, policy.per_address.window)
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.window_started_at < now - window,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        )
    )


def _fail(
    session: Session, row: LoginThrottle | None, scope: str, key: str, policy: ThrottlePolicy
) -> None:
    state = after_failure(_state(row), utcnow(), policy)
    if row is None:
        row = LoginThrottle(scope=scope, key=key[:128])
        session.add(row)
    row.failures = state.failures
    row.window_started_at = state.window_started_at
    row.locked_until = state.locked_until

"""Proving who you are: logging in and out, and changing your password.

Both password checks are throttled per user name and per address, and audited. Argon2 is
slow on purpose, so it runs outside any transaction: first a read (is the name or address
locked? which hash?), then the verification, then a short write transaction that locks the
throttle rows (row locks on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises anyway), checks
the lock again and records the outcome. Guesses that race past the first check therefore
count, and none of them is answered with success once the lock is set.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suanli.config import Settings
from suanli.core.errors import InvalidInput, RateLimited, Unauthenticated
from suanli.core.throttle import ThrottlePolicy, ThrottleState, after_failure, seconds_locked
from suanli.db.engine import Database
from suanli.db.models import ApiToken, LoginThrottle, User, utcnow
from suanli.security.passwords import hash_password, verify_password
from suanli.services import audit, tokens
from suanli.services.accounts import check_password_rules, find_user, revoke_tokens
from suanli.services.actor import Actor
from suanli.services.common import commit


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
    database: Database,
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
    anonymous = Actor(user=None, address=address)
    with database.reading() as session:
        user = find_user(session, username)
        known_hash = user.password_hash if user else None
        _refuse_if_locked(session, database, anonymous, "auth.login", username)
    ok = verify_password(known_hash, password)

    with database.writing() as session:
        throttles = _hold_throttles(session, username, address)
        _refuse_if_locked(session, database, anonymous, "auth.login", username, throttles)
        user = find_user(session, username)
        if not ok or user is None or user.is_disabled or user.password_hash != known_hash:
            reason = (
                "disabled" if ok and user is not None and user.is_disabled else "bad_credentials"
            )
            _count_failure(session, throttles, policy)
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
        session.delete(throttles["user"])
        now = utcnow()
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


def change_password(
    database: Database,
    policy: LoginPolicy,
    actor: Actor,
    *,
    current: str,
    new: str,
    keep_token_id: int | None,
) -> None:
    """Change one's own password. A wrong current password counts as a failed login, so a
    stolen token cannot be used to guess the password. Other login sessions end."""
    me = actor.account
    check_password_rules(me.name, new)
    with database.reading() as session:
        _refuse_if_locked(session, database, actor, "user.change_password", me.name)
    ok = verify_password(me.password_hash, current)
    new_hash = hash_password(new) if ok else ""

    with database.writing() as session:
        throttles = _hold_throttles(session, me.name, actor.address)
        _refuse_if_locked(session, database, actor, "user.change_password", me.name, throttles)
        user = session.get(User, me.id)
        if user is None or not ok or user.password_hash != me.password_hash:
            _count_failure(session, throttles, policy)
            audit.record(
                session,
                actor,
                "user.change_password",
                target_type="user",
                target=me.name,
                result="failure",
            )
            session.commit()
            raise InvalidInput("error.wrong_current_password", field="current_password")
        user.password_hash = new_hash
        user.password_changed_at = utcnow()
        revoke_tokens(session, user, kinds=("session",), keep_token_id=keep_token_id)
        audit.record(session, actor, "user.change_password", target_type="user", target=me.name)
        commit(session, "error.conflict")


def _refuse_if_locked(
    session: Session,
    database: Database,
    actor: Actor,
    action: str,
    username: str,
    throttles: dict[str, LoginThrottle] | None = None,
) -> None:
    """Raise 429 (and audit it) when the name or the actor's address is locked.

    Without `throttles` this is the early, read-only check and the audit event is written in a
    transaction of its own; with them, the caller's write transaction carries it.
    """
    if throttles is None:
        rows = session.scalars(
            select(LoginThrottle).where(
                or_(
                    (LoginThrottle.scope == "user") & (LoginThrottle.key == _key(username)),
                    (LoginThrottle.scope == "address") & (LoginThrottle.key == _key(actor.address)),
                )
            )
        ).all()
    else:
        rows = list(throttles.values())
    now = utcnow()
    locked = max((seconds_locked(_state(row), now) for row in rows), default=0)
    if not locked:
        return
    if throttles is None:
        with database.writing() as writer:
            _record_locked(writer, actor, action, username)
    else:
        _record_locked(session, actor, action, username)
    raise RateLimited("error.locked", retry_after=locked)


def _record_locked(session: Session, actor: Actor, action: str, username: str) -> None:
    audit.record(
        session,
        actor,
        action,
        target_type="user",
        target=username,
        result="locked",
        actor_name=actor.name or username,
    )
    session.commit()


def _hold_throttles(session: Session, username: str, address: str) -> dict[str, LoginThrottle]:
    """The name's and the address's throttle rows, created if missing and locked until commit,
    so that concurrent attempts count one after the other."""
    now = utcnow()
    keys = {"user": _key(username), "address": _key(address)}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(LoginThrottle)
        .values(
            [
                {"scope": scope, "key": key, "failures": 0, "window_started_at": now}
                for scope, key in keys.items()
            ]
        )
        .on_conflict_do_nothing()
    )
    return {
        scope: session.get_one(
            LoginThrottle, (scope, key), with_for_update=True, populate_existing=True
        )
        for scope, key in keys.items()
    }


def _count_failure(
    session: Session, throttles: dict[str, LoginThrottle], policy: LoginPolicy
) -> None:
    now = utcnow()
    _forget_stale(session, now, policy, keep=list(throttles.values()))
    for scope, rule in (("user", policy.per_user), ("address", policy.per_address)):
        row = throttles[scope]
        state = after_failure(_state(row), now, rule)
        row.failures = state.failures
        row.window_started_at = state.window_started_at
        row.locked_until = state.locked_until


def _forget_stale(
    session: Session, now: datetime, policy: LoginPolicy, keep: list[LoginThrottle]
) -> None:
    """Drop other counts whose window and lock are over, so guessed names cannot grow the
    table."""
    window = max(policy.per_user.window, policy.per_address.window)
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.window_started_at < now - window,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
            tuple_(LoginThrottle.scope, LoginThrottle.key).not_in([(r.scope, r.key) for r in keep]),
        )
    )


def _state(row: LoginThrottle) -> ThrottleState | None:
    if row.failures == 0 and row.locked_until is None:
        return None
    return ThrottleState(row.failures, row.window_started_at, row.locked_until)


def _key(value: str) -> str:
    return value[:128]

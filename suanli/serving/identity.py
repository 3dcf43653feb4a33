"""Who calls the gateway: a service key (for one project's services), or a user signed in
with a token or the console's session (for the services of every project they are a member
of; the model is then named project/service). Looked up in a thread and kept a second, so a
request costs no query; a revoked key is forgotten at once in the process that revoked it
and within that second in the others."""

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request

from suanli.core.errors import SuanliError
from suanli.core.roles import ProjectRole
from suanli.db.engine import Database
from suanli.db.models import Membership, Project
from suanli.services import service_keys, tokens
from suanli.services.service_keys import KEY_PREFIX, KeyGrant
from suanli.web import session as web_session

KEEP_SECONDS = 1.0
CALLERS = (ProjectRole.member, ProjectRole.owner)


@dataclass(frozen=True)
class Identity:
    user_id: int | None
    user_name: str
    key: KeyGrant | None  # None: a user, not a key
    projects: frozenset[str] | None  # a user's projects it may call; None: every (admin)

    def may_call(self, project: str) -> bool:
        if self.key is not None:
            return project == self.key.project
        return self.projects is None or project in self.projects


def _expired(identity: Identity) -> bool:
    key = identity.key
    return bool(key and key.expires_at and key.expires_at <= datetime.now(UTC))


class Identities:
    def __init__(self, database: Database):
        self.database = database
        self._kept: dict[str, tuple[float, Identity]] = {}

    async def of(self, scope: Mapping[str, object], headers: Mapping[str, str]) -> Identity | None:
        """The caller, or None (no credentials, or dead ones)."""
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() == "bearer" and secret:
            digest = hashlib.sha256(secret.encode()).hexdigest()
            kept = self._kept.get(digest)
            if kept is not None and kept[0] > time.monotonic():
                if not _expired(kept[1]):
                    return kept[1]
                self._kept.pop(digest, None)
                return None
            found = await asyncio.to_thread(self._by_secret, secret)
            if found is not None:
                if len(self._kept) > 10_000:
                    self._kept.clear()
                self._kept[digest] = (time.monotonic() + KEEP_SECONDS, found)
            return found
        if web_session.SESSION_COOKIE in headers.get("cookie", ""):
            return await asyncio.to_thread(self._by_session, scope, headers)
        return None

    def forget(self, key_hash: str) -> None:
        self._kept.pop(key_hash, None)

    def _by_secret(self, secret: str) -> Identity | None:
        with self.database.reading() as session:
            if secret.startswith(KEY_PREFIX):
                grant = service_keys.grant(session, secret)
                if grant is None:
                    return None
                return Identity(grant.user_id, grant.user_name, grant, None)
            try:
                user, _ = tokens.authenticate(session, secret)
            except SuanliError:
                return None
            return self._user(session, user.id, user.name, user.is_admin)

    def _by_session(
        self, scope: Mapping[str, object], headers: Mapping[str, str]
    ) -> Identity | None:
        """The console's session, for requests that carry its CSRF token (the cookie alone
        must not let another site spend the user's budget)."""
        request = Request(dict(scope))
        viewer = web_session.find_viewer(request)
        if viewer is None or headers.get(web_session.CSRF_HEADER, "") != viewer.csrf:
            return None
        user = viewer.actor.account
        with self.database.reading() as session:
            return self._user(session, user.id, user.name, user.is_admin)

    def for_user(self, user_id: int, name: str, admin: bool) -> Identity:
        """A signed-in user's identity (the SSH gateway's `services` login), read now."""
        with self.database.reading() as session:
            return self._user(session, user_id, name, admin)

    def _user(self, session: Session, user_id: int, name: str, admin: bool) -> Identity:
        if admin:
            return Identity(user_id, name, None, None)
        rows = session.scalars(
            select(Project.name)
            .join(Membership, Membership.project_id == Project.id)
            .where(Membership.user_id == user_id, Membership.role.in_([r.value for r in CALLERS]))
        ).all()
        return Identity(user_id, name, None, frozenset(rows))

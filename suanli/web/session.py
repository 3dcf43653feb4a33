"""Browser sessions: a login token in an HttpOnly cookie, and CSRF protection for every form.

The cookie holds the same kind of token `suanli login` gets (a login session: it ends at
logout, at a password change and when the user is disabled). The API never reads cookies, so
cross-site requests cannot use a browser's session against it; the console's own
state-changing requests must carry a CSRF token that only its pages know: derived from the
session secret (which scripts cannot read), or before login a random value from a cookie of
its own (double submit).
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request, Response

from suanli.api.deps import client_address, get_database
from suanli.core.errors import Forbidden, Unauthenticated
from suanli.db.models import User
from suanli.i18n import LANGUAGES, negotiate, normalize
from suanli.services import tokens
from suanli.services.actor import Actor

SESSION_COOKIE = "suanli_session"
CSRF_COOKIE = "suanli_csrf"
LANGUAGE_COOKIE = "suanli_lang"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a console request."""

    actor: Actor
    token_id: int
    csrf: str

    @property
    def user(self) -> User:
        return self.actor.account


def csrf_for(session_secret: str) -> str:
    return hashlib.sha256(b"suanli-csrf\0" + session_secret.encode()).hexdigest()


def find_viewer(request: Request) -> Viewer | None:
    """The user behind the session cookie, or None (no cookie, or a dead session)."""
    if hasattr(request.state, "viewer"):
        return request.state.viewer
    viewer = None
    secret = request.cookies.get(SESSION_COOKIE, "")
    if secret:
        database = get_database(request)
        try:
            with database.reading() as session:
                user, token = tokens.authenticate(session, secret)
        except Unauthenticated:
            user = None
        if user is not None:
            if tokens.needs_last_used(token):
                with database.writing() as writer:
                    tokens.touch(writer, token.id)
            actor = Actor(user=user, address=client_address(request))
            viewer = Viewer(actor=actor, token_id=token.id, csrf=csrf_for(secret))
    request.state.viewer = viewer
    request.state.language = language_for(request, viewer)
    return viewer


def language_for(request: Request, viewer: Viewer | None) -> str:
    """The user's saved choice, else the browser's cookie, else its Accept-Language."""
    if viewer is not None and viewer.user.language in LANGUAGES:
        return viewer.user.language
    cookie = request.cookies.get(LANGUAGE_COOKIE)
    if cookie:
        return normalize(cookie)
    return negotiate(request.headers.get("accept-language"))


def csrf_token(request: Request) -> str:
    """The token this page's forms must send back."""
    viewer = find_viewer(request)
    if viewer is not None:
        return viewer.csrf
    if not hasattr(request.state, "anonymous_csrf"):
        request.state.anonymous_csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_hex(16)
    return request.state.anonymous_csrf


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request that did not come from one of our pages: a foreign
    Origin, or a missing or wrong CSRF token (form field or header)."""
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("error.csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    viewer = find_viewer(request)
    expected = viewer.csrf if viewer else request.cookies.get(CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("error.csrf")


def require_viewer(request: Request) -> Viewer:
    viewer = find_viewer(request)
    if viewer is None:
        raise Unauthenticated()
    return viewer


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start(response: Response, request: Request, secret: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(CSRF_COOKIE, path="/")


def end(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def keep_anonymous_csrf(response: Response, request: Request) -> None:
    """Pages shown before login set the cookie half of their forms' CSRF token."""
    token = getattr(request.state, "anonymous_csrf", None)
    if token and request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/"
        )


def remember_language(response: Response, request: Request, language: str) -> None:
    response.set_cookie(
        LANGUAGE_COOKIE,
        language,
        max_age=365 * 86400,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )

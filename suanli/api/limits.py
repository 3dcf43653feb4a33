"""Request bodies: an API body only from a caller with a token, and only so much.

A body costs the server memory and time as it is read, and FastAPI reads it whole before any
dependency (the caller's token among them) runs. So this pure ASGI middleware, in front of
everything, decides before the application reads a byte:

- an API body needs a live bearer token (login excepted): without one, 401 at once, unread;
- a body declared larger than `max_request_body_bytes` is refused with 413, unread; one that
  streams in without a length (chunked) is counted and stopped with 413 at the limit.

The console's forms are capped alike, but their caller is checked by the routes, as before:
a form carries its CSRF token in the body, and that check comes first (a forged request is
refused as forged, whoever sends it).

Which rule applies is a route class: the first of ROUTE_CLASSES whose prefix matches the path
(a prefix ending in "/" covers a subtree; otherwise the path itself). A route that streams
its body on, as the dev environments' proxy does (uploads to JupyterLab) and as uploads of
datasets will, opts out of the cap with a class of its own (`capped=False`) and limits itself;
the proxy checks its caller before it reads anything. Websockets pass untouched.

The server (uvicorn) drops what a client still sends after the answer, without keeping it.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from suanli.api import problems
from suanli.api.deps import get_database
from suanli.core.errors import Unauthenticated
from suanli.services import tokens

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class RouteClass:
    """How bodies sent to `prefix` are read."""

    prefix: str  # "/api/" covers everything under it; "/api/v1/auth/login" only that path
    # A body is read only from a caller with a live bearer token.
    needs_token: bool = False
    # False: not held to max_request_body_bytes (the route streams its body on, bounded
    # by its own rules).
    capped: bool = True

    def matches(self, path: str) -> bool:
        return path.startswith(self.prefix) if self.prefix.endswith("/") else path == self.prefix


ROUTE_CLASSES: tuple[RouteClass, ...] = (
    RouteClass("/x/", capped=False),  # dev environments' proxy (it checks its caller first)
    RouteClass("/api/v1/auth/login"),
    # Uploads stream their body to disk, bounded by the length they declared at creation.
    RouteClass("/api/v1/uploads/", needs_token=True, capped=False),
    RouteClass("/api/", needs_token=True),
    # The console's tus endpoint: the same streaming; it checks its session and CSRF first.
    RouteClass("/data/uploads/", capped=False),
    RouteClass("/"),  # the console (and anything else)
)


def route_class(path: str) -> RouteClass:
    return next(rule for rule in ROUTE_CLASSES if rule.matches(path))


class BodyLimit:
    """ASGI middleware: a token before an API body is read, and a cap on every body's size."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        rule = route_class(scope["path"])
        limit: int = scope["app"].state.settings.max_request_body_bytes
        request = Request(scope)
        if rule.needs_token:
            refused = await run_in_threadpool(_unauthenticated, request)
            if refused is not None:
                await _answer(scope, receive, send, problems.error_response, request, refused)
                return
        if not rule.capped:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer(scope, receive, send, problems.payload_too_large, request, limit)
            return
        await self.app(scope, _Counted(receive, limit), send)


class _Counted:
    """`receive` that counts the body's bytes and raises PayloadTooLarge past the limit: the
    application stops reading and answers 413 (problems' handler); what is left is unread."""

    def __init__(self, receive: Receive, limit: int):
        self.receive, self.limit, self.received = receive, limit, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise problems.PayloadTooLarge(self.limit)
        return message


def _has_body(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return "transfer-encoding" in headers or _content_length(scope) not in (None, 0)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length", "")
    if not value.isdigit():
        return None
    return int(value) if len(value) <= 18 else 10**18  # 5,000 digits: huge, not a ValueError


def _unauthenticated(request: Request) -> Unauthenticated | None:
    """Why the request's bearer token is not a live one (as the API's get_caller would say),
    or None. Runs in a worker thread: a database read."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return Unauthenticated()
    try:
        with get_database(request).reading() as session:
            found = tokens.authenticate(session, secret.strip())
    except Unauthenticated as error:
        return error
    request.state.authenticated = found  # the API's get_caller takes it: one lookup a request
    return None


async def _answer(
    scope: Scope, receive: Receive, send: Send, build: Callable[..., Response], *args: Any
) -> None:
    """Answer without running the application; the console's error pages are rendered in a
    worker thread, as its routes render theirs."""
    response = await run_in_threadpool(build, *args)
    await response(scope, receive, send)

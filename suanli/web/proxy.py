"""The authenticated reverse proxy in front of dev environments' tools, HTTP and websockets:

    /x/<id>/jupyter/...   → JupyterLab (served under that very prefix)
    /x/<id>/vscode/...    → code-server (at its root: the prefix is taken off)
    /x/<id>/terminal/ws   → the agent's terminal websocket

The caller is the console's session cookie (or a bearer token, for scripts); only those who
may enter the environment get through (services.devenvs.may_enter). The server's own cookies
and credentials never travel on: the proxy takes them off and adds the environment's token,
which never reaches the browser. A foreign Origin is refused for websockets and for
requests that change things (the session cookie must not be usable from other sites).
"""

import asyncio
import contextlib
import logging
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import httpx
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from suanli.api.deps import client_address, get_database
from suanli.core.errors import Forbidden, SuanliError, Unauthenticated, Unavailable
from suanli.devenvs import endpoints
from suanli.services import devenvs, tokens
from suanli.services.actor import Actor
from suanli.services.devenvs import Entry
from suanli.web import session as web_session

log = logging.getLogger("suanli.web.proxy")
PREFIX = "/x"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy sets itself.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}
# The server's own credentials, and what only the proxy may say (where the request came to).
_OURS = {"authorization", web_session.CSRF_HEADER, "forwarded", "x-forwarded-host"}
_OURS_IN_ANSWERS = {"date", "server"}  # uvicorn says these once
_OUR_COOKIES = {web_session.SESSION_COOKIE, web_session.CSRF_COOKIE, web_session.LANGUAGE_COOKIE}
_SAFE = {"GET", "HEAD", "OPTIONS"}


def routes() -> list[BaseRoute]:
    return [
        WebSocketRoute(PREFIX + "/{env_id:int}/{tool}/{path:path}", websocket_endpoint),
        Route(PREFIX + "/{env_id:int}/{tool}/{path:path}", http_endpoint, methods=METHODS),
    ]


def new_client() -> httpx.AsyncClient:
    """One connection pool for every proxied request of the process (the app's lifespan
    opens and closes it)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, read=None),  # a long download, a slow kernel
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
    )


def _caller(connection: HTTPConnection) -> Actor:
    """The console's session, else a bearer token; a sign-in is required."""
    viewer = web_session.find_viewer(connection)  # type: ignore[arg-type]
    if viewer is not None:
        return viewer.actor
    scheme, _, secret = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        with get_database(connection).reading() as session:  # type: ignore[arg-type]
            user, _ = tokens.authenticate(session, secret.strip())
        return Actor(user=user, address=client_address(connection))  # type: ignore[arg-type]
    raise Unauthenticated()


def _same_origin(connection: HTTPConnection) -> None:
    origin = connection.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != connection.headers.get("host"):
        raise Forbidden("error.csrf")


def _enter(connection: HTTPConnection, tool: str) -> Entry:
    actor = _caller(connection)
    env_id = connection.path_params["env_id"]
    with get_database(connection).reading() as session:  # type: ignore[arg-type]
        return devenvs.enter(session, actor, env_id, tool, connection.app.state.settings)


def _target(entry: Entry, tool: str, connection: HTTPConnection, scheme: str) -> str:
    """JupyterLab knows its prefix; the other tools are served at their root."""
    port_of = "agent" if tool == "terminal" else tool
    base = entry.endpoints.url(port_of).replace("http://", f"{scheme}://", 1)
    path = connection.url.path if tool == "jupyter" else "/" + connection.path_params["path"]
    query = connection.url.query
    return base + path + (f"?{query}" if query else "")


def _headers(connection: HTTPConnection, entry: Entry, tool: str) -> list[tuple[str, str]]:
    """The request's headers without hop-by-hop ones and without the server's own
    credentials and cookies; with the environment's token (code-server: its cookie)."""
    kept = [
        (name, value)
        for name, value in connection.headers.items()
        if name not in _HOP
        and name not in _OURS
        and name != "cookie"
        and not name.startswith("sec-websocket-")
    ]
    cookies = _their_cookies(connection.headers.get("cookie", ""))
    if tool == "vscode":
        secret = endpoints.code_server_secret(entry.token)
        cookies = "; ".join(c for c in (cookies, f"{endpoints.CODE_SERVER_COOKIE}={secret}") if c)
    if cookies:
        kept.append(("cookie", cookies))
    kept.append(("authorization", f"token {entry.token}"))
    # The tools check a websocket's Origin against the host the browser talked to (the
    # Origin was checked against it here first); and compress only where the browser asked.
    kept.append(("x-forwarded-host", connection.headers.get("host", "")))
    if "accept-encoding" not in connection.headers:
        kept.append(("accept-encoding", "identity"))
    return kept


def _their_cookies(header: str) -> str:
    jar: SimpleCookie = SimpleCookie()
    with contextlib.suppress(Exception):
        jar.load(header)
    return "; ".join(
        f"{key}={morsel.coded_value}" for key, morsel in jar.items() if key not in _OUR_COOKIES
    )


async def http_endpoint(request: Request) -> Response:
    tool = request.path_params["tool"]
    if request.method not in _SAFE:
        _same_origin(request)
    entry = await run_in_threadpool(_enter, request, tool)
    if tool == "terminal":  # the terminal is a websocket only
        raise Forbidden("error.forbidden")
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    pool: httpx.AsyncClient = request.app.state.proxy_client
    outgoing = pool.build_request(
        request.method,
        _target(entry, tool, request, "http"),
        headers=_headers(request, entry, tool),
        content=request.stream() if has_body else None,
    )
    try:
        upstream = await pool.send(outgoing, stream=True)
    except httpx.TransportError:
        raise Unavailable("error.devenv_starting", name=entry.name) from None
    headers = [
        (name, value)
        for name, value in upstream.headers.multi_items()
        if name.lower() not in _HOP | _OURS_IN_ANSWERS and not _sets_our_cookie(name, value)
    ]
    response = StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        background=BackgroundTask(upstream.aclose),
    )
    response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return response


def _sets_our_cookie(name: str, value: str) -> bool:
    return name.lower() == "set-cookie" and value.split("=", 1)[0].strip() in _OUR_COOKIES


async def websocket_endpoint(websocket: WebSocket) -> None:
    tool = websocket.path_params["tool"]
    try:
        _same_origin(websocket)
        entry = await run_in_threadpool(_enter, websocket, tool)
    except SuanliError as error:
        await websocket.close(code=4000 + error.status, reason=error.key)
        return
    offered = [
        value.strip()
        for value in websocket.headers.get("sec-websocket-protocol", "").split(",")
        if value.strip()
    ]
    try:
        upstream = await connect(
            _target(entry, tool, websocket, "ws"),
            additional_headers=_headers(websocket, entry, tool),
            subprotocols=offered or None,  # type: ignore[arg-type]
            max_size=None,
            compression=None,
            open_timeout=60,  # a kernel's channels open once the kernel answers
            ping_interval=None,
        )
    except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as error:
        log.warning("dev environment %s: %s refused the websocket (%s)", entry.env_id, tool, error)
        await websocket.close(code=1011, reason="the environment's tool did not answer")
        return
    await websocket.accept(subprotocol=upstream.subprotocol)
    async with upstream:
        await _pipe(websocket, upstream)


async def _pipe(browser: WebSocket, upstream: object) -> None:
    """Frames both ways, text as text and binary as binary, until either side closes."""

    async def to_upstream() -> None:
        while True:
            message = await browser.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            await upstream.send(data if data is not None else message.get("bytes") or b"")  # type: ignore[attr-defined]

    async def to_browser() -> None:
        async for data in upstream:  # type: ignore[attr-defined]
            if isinstance(data, str):
                await browser.send_text(data)
            else:
                await browser.send_bytes(data)

    tasks = [asyncio.create_task(to_upstream()), asyncio.create_task(to_browser())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(ConnectionClosed, WebSocketDisconnect, RuntimeError):
            await upstream.close()  # type: ignore[attr-defined]
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await browser.close()

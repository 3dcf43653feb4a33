"""The gateway: OpenAI's API at /v1 for every model service, and /s/<project>/<service>/ for
services that speak other HTTP. A lean ASGI path of its own, in front of the application's
middleware: a request costs no database query (suanli.serving.table, .identity), its body is
read once, and answers go back as they come — streams chunk by chunk, with backpressure from
the client and the upstream cancelled when the client goes away.

Every request is metered (suanli.serving.meter) with the engine's `usage`; for a stream the
gateway asks for it (`stream_options.include_usage`) and takes that chunk out again when the
client did not ask; where the engine sends none, the tokens are counted with the model's
tokenizer. Errors are in OpenAI's shape, in the caller's language.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.datastructures import Headers

from suanli.config import Settings
from suanli.db.engine import Database
from suanli.db.models import Deployment
from suanli.i18n import negotiate, translate
from suanli.serving import sockets, tokens
from suanli.serving.autoscale import Traffic
from suanli.serving.identity import Identities, Identity
from suanli.serving.meter import Meter, Record
from suanli.serving.table import Route, Table, Upstream

log = logging.getLogger("suanli.serving.gateway")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

OPENAI_PREFIX = "/v1/"
PROXY_PREFIX = "/s/"
ENDPOINTS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
ATTEMPTS = 3  # replicas tried for one request when one refuses the connection
# An upstream that went away before its answer began: the request goes to another replica
# (a replica being stopped, or killed, with the routing table not yet told).
UPSTREAM_GONE = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)
MAX_COUNTED_BYTES = 8 * 2**20  # of a stream kept to count its tokens where no usage came
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
    "authorization",
    "cookie",
    "content-length",
}
# The console's CSRF token and proxies' forwarding headers are the platform's, not the
# service's.
_OURS = {"x-csrf-token", "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class Refused(Exception):
    """An answer in OpenAI's error shape: status, code, the message's key and parameters."""

    def __init__(
        self,
        status: int,
        code: str,
        key: str,
        *,
        param: str | None = None,
        retry_after: int | None = None,
        **params: object,
    ):
        super().__init__(key)
        self.status, self.code, self.key, self.param = status, code, key, param
        self.retry_after, self.params = retry_after, params


class Gone(Exception):
    """The client went away before its request was read."""


@dataclass
class Call:
    """One request on its way: who, where, and what it cost."""

    identity: Identity
    route: Route
    endpoint: str
    started: float
    language: str
    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counted: bool = False
    first_token: float | None = None
    # What the answer carried, kept by the relay and settled into tokens after it (outside
    # the relay, which a client's going away cancels): the engine's usage, else the text.
    usage: dict[str, Any] | None = None
    body: bytes | None = None  # a whole answer
    events: list[bytes] = field(default_factory=list)  # a stream's, up to MAX_COUNTED_BYTES
    events_size: int = 0
    complete: bool = False  # the whole answer reached the client


class Gateway:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        table: Table,
        traffic: Traffic,
        meter: Meter,
        wake: Callable[[str], None],
    ):
        self.settings = settings
        self.database = database
        self.table = table
        self.traffic = traffic
        self.meter = meter
        self.wake = wake
        self.identities = Identities(database)
        self.client = _new_client()
        # One pool per replica that listens on a Unix socket (httpx binds a socket per pool).
        self.socket_clients: dict[str, httpx.AsyncClient] = {}

    async def start(self) -> None:
        await self.table.start()
        await self.meter.start()

    async def close(self) -> None:
        await self.table.close()
        await self.meter.close()
        await self.client.aclose()
        for client in self.socket_clients.values():
            await client.aclose()

    async def _client_for(self, upstream: Upstream) -> httpx.AsyncClient:
        """The pool that reaches the replica: the shared one over TCP, its own over its
        socket, which must still be a socket (not a link put in its place)."""
        if not upstream.socket:
            return self.client
        client = self.socket_clients.get(upstream.socket)
        if client is None:
            if not sockets.is_socket(upstream.socket):
                raise httpx.ConnectError(f"{upstream.socket} is not a socket")
            await self._forget_gone_sockets()
            client = self.socket_clients[upstream.socket] = _new_client(upstream.socket)
        return client

    async def _forget_gone_sockets(self) -> None:
        live = {u.socket for r in self.table.routes.values() for u in r.upstreams if u.socket}
        for path in [p for p in self.socket_clients if p not in live]:
            await self.socket_clients.pop(path).aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        language = negotiate(headers.get("accept-language"))
        started = False

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if scope["path"].startswith(PROXY_PREFIX):
                await self._proxy(scope, receive, sending, headers)
            else:
                await self._openai(scope, receive, sending, headers, language)
        except Refused as refused:
            if not started:
                await _refuse(send, refused, language)
        except Gone:
            return
        except Exception:  # a bug: logged, and answered in OpenAI's shape where still possible
            log.exception("the gateway failed on %s %s", scope["method"], scope["path"])
            if not started:
                await _refuse(
                    send, Refused(500, "internal_error", "error.gateway_internal"), language
                )

    # --- /v1 -------------------------------------------------------------------------

    async def _openai(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, language: str
    ) -> None:
        path, method = scope["path"].rstrip("/"), scope["method"]
        identity = await self.identities.of(scope, headers)
        if identity is None:
            raise Refused(401, "invalid_api_key", "error.gateway_unauthenticated")
        if path == "/v1/models":
            if method != "GET":
                raise Refused(405, "method_not_allowed", "error.gateway_method", method=method)
            await _json(send, 200, self._models(identity))
            return
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            raise Refused(404, "unknown_url", "error.gateway_unknown_url", path=path)
        if method != "POST":
            raise Refused(405, "method_not_allowed", "error.gateway_method", method=method)
        body = await self._body(receive, headers)
        request = _parse(body)
        route = self._route(identity, request.get("model"))
        if route.protocol != "openai":
            raise Refused(
                400, "not_openai", "error.gateway_not_openai", param="model", model=route.model
            )
        if identity.key is not None:
            refusal = await self.meter.admit(identity.key)
            if refusal is not None:
                raise Refused(
                    429,
                    refusal.code,
                    f"error.gateway_{refusal.code}",
                    retry_after=refusal.retry_after,
                    **refusal.params,
                )
        call = Call(identity, route, endpoint, time.perf_counter(), language)
        stream = bool(request.get("stream")) and endpoint != "embeddings"
        strip_usage = False
        if stream:
            options = request.get("stream_options")
            options = options if isinstance(options, dict) else {}
            strip_usage = not options.get("include_usage")
            request["stream_options"] = {**options, "include_usage": True}
        request["model"] = route.name
        payload = json.dumps(request, ensure_ascii=False).encode()
        self.traffic.begin(route.deployment_id)
        try:
            await self._call(call, payload, request, stream, strip_usage, receive, send)
        except Refused as refused:
            call.status = refused.status
            raise
        finally:
            self.traffic.end(route.deployment_id)
            self._meter(call)

    def _models(self, identity: Identity) -> dict[str, Any]:
        data = []
        for route in sorted(self.table.routes.values(), key=lambda r: r.model):
            if route.protocol != "openai" or not identity.may_call(route.project):
                continue
            key = identity.key
            if key is not None and key.models is not None and route.name not in key.models:
                continue
            name = route.name if key is not None else route.model
            data.append({"id": name, "object": "model", "created": 0, "owned_by": route.project})
        return {"object": "list", "data": data}

    def _route(self, identity: Identity, model: object) -> Route:
        """The service a model name means: `service` (a key: its project's) or
        `project/service`. Another project's name is refused without saying whether it
        exists."""
        if not isinstance(model, str) or not model.strip():
            raise Refused(400, "missing_model", "error.gateway_model_missing", param="model")
        project, _, name = model.strip().rpartition("/")
        key = identity.key
        if not project:
            if key is None:
                raise Refused(
                    400, "model_not_qualified", "error.gateway_model_project", param="model"
                )
            project = key.project
        if not identity.may_call(project):
            if key is not None:
                raise Refused(
                    403,
                    "wrong_project",
                    "error.gateway_key_project",
                    param="model",
                    project=key.project,
                )
            raise Refused(404, "model_not_found", "error.gateway_model_unknown", model=model)
        if key is not None and key.models is not None and name not in key.models:
            raise Refused(403, "model_not_allowed", "error.gateway_key_model", model=name)
        route = self.table.routes.get((project, name))
        if route is None:
            raise Refused(404, "model_not_found", "error.gateway_model_unknown", model=model)
        return route

    async def _body(self, receive: Receive, headers: Headers) -> bytes:
        """The whole body, refused as soon as it is larger than the limit."""
        limit = self.settings.gateway_max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(413, "body_too_large", "error.gateway_body_too_large", limit=limit)
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refused(413, "body_too_large", "error.gateway_body_too_large", limit=limit)
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _call(
        self,
        call: Call,
        payload: bytes,
        request: dict[str, Any],
        stream: bool,
        strip_usage: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        """Upstream to a ready replica (woken from zero if need be), as the client reads;
        the upstream is closed when the client goes away."""
        tried: set[int] = set()
        for _ in range(ATTEMPTS):
            upstream = await self._ready(call.route, frozenset(tried))
            self.table.begin(upstream)
            try:
                try:
                    client = await self._client_for(upstream)
                except httpx.ConnectError:
                    tried.add(upstream.job_id)
                    continue
                outgoing = client.build_request(
                    "POST",
                    upstream.url + "/v1/" + call.endpoint,
                    content=payload,
                    headers={
                        "content-type": "application/json",
                        "authorization": f"Bearer {upstream.token}",
                        "accept-encoding": "identity",  # relayed and read as it comes
                    },
                )
                try:
                    response = await client.send(outgoing, stream=True)
                    body = None if stream else await response.aread()
                except UPSTREAM_GONE:
                    tried.add(upstream.job_id)  # stopping, or gone: another one
                    continue
                try:
                    await _until_gone(
                        receive, self._answer(call, response, body, strip_usage, send)
                    )
                finally:
                    await response.aclose()
                if not call.complete and call.status == 200:
                    call.status = 499  # the client went away: what it got is still metered
                await self._settle(call, request)
                return
            finally:
                self.table.end(upstream)
        raise Refused(503, "no_replica", "error.gateway_no_replica", model=call.route.model)

    async def _ready(self, route: Route, tried: frozenset[int]) -> Upstream:
        """A ready replica; a service scaled to zero is woken and waited for (bounded)."""
        upstream = self.table.pick(route, tried)
        if upstream is not None:
            return upstream
        if route.state != "active":
            raise Refused(503, "service_stopped", "error.gateway_stopped", model=route.model)
        deadline = time.monotonic() + self.settings.gateway_cold_start_seconds
        current: Route | None = route
        woken = False
        while current is not None and time.monotonic() < deadline:
            if current.replicas == 0 and not woken:  # also one scaled to zero meanwhile
                await asyncio.to_thread(self._wake, route.deployment_id)
                self.table.changed()
                woken = True
            await self.table.wait_change(min(1.0, deadline - time.monotonic()))
            current = self.table.routes.get((route.project, route.name))
            upstream = self.table.pick(current, tried) if current is not None else None
            if upstream is not None:
                return upstream
        raise Refused(
            503,
            "cold_start_timeout",
            "error.gateway_cold_start",
            retry_after=30,
            model=route.model,
            seconds=int(self.settings.gateway_cold_start_seconds),
        )

    def _wake(self, deployment_id: int) -> None:
        with self.database.writing() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is not None and deployment.replicas == 0:
                low = int((deployment.scaling or {}).get("min", 0))
                deployment.replicas = max(1, low)
                session.commit()
        self.wake("deployments")

    async def _answer(
        self,
        call: Call,
        response: httpx.Response,
        body: bytes | None,
        strip_usage: bool,
        send: Send,
    ) -> None:
        """A whole answer (`body`, read before anything was sent: an engine that dies before
        it is whole is retried on another replica), or a stream relayed as it comes (an
        engine's error to a stream request may come whole too)."""
        call.status = response.status_code
        is_stream = body is None and response.headers.get("content-type", "").startswith(
            "text/event-stream"
        )
        if body is None and not is_stream:
            body = await response.aread()
        headers = _answer_headers(response.headers, is_stream)
        if body is not None:
            if response.status_code >= 400:
                body = _openai_error(response.status_code, body, call.language)
                headers = [(k, v) for k, v in headers if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        if body is not None:
            call.first_token = time.perf_counter()
            call.body = body
            call.complete = True
            await send({"type": "http.response.body", "body": body})
            return
        await self._relay_stream(call, response, strip_usage, send)

    async def _relay_stream(
        self, call: Call, response: httpx.Response, strip_usage: bool, send: Send
    ) -> None:
        """Event by event, as the engine sends them. The usage chunk the gateway asked for
        is read and, where the client did not ask for it, left out."""
        pending = b""
        try:
            async for chunk in response.aiter_raw():
                pending += chunk
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    continue
                events, pending = pending[: cut + 2], pending[cut + 2 :]
                if call.first_token is None:
                    call.first_token = time.perf_counter()
                if b'"usage"' in events:
                    events, found = _take_usage(events, strip_usage)
                    call.usage = found or call.usage
                if call.events_size < MAX_COUNTED_BYTES:
                    call.events.append(events)
                    call.events_size += len(events)
                if b"data: [DONE]" in events:
                    call.complete = True  # the client may hang up once it has read this
                if events:
                    await send({"type": "http.response.body", "body": events, "more_body": True})
        except httpx.HTTPError as error:  # the engine went away mid-stream
            log.warning("%s: the upstream stream broke: %s", call.route.model, error)
            call.status = 502
            failure = {
                "error": {
                    "message": translate("error.gateway_upstream_broke", call.language),
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_broke",
                }
            }
            closing = b"data: " + json.dumps(failure).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": closing, "more_body": True})
        call.complete = True
        await send({"type": "http.response.body", "body": pending})

    async def _settle(self, call: Call, request: dict[str, Any]) -> None:
        """The request's tokens: the engine's usage where it sent one, else counted with the
        model's tokenizer from what reached the client (a stream cut short included)."""
        if call.body is not None:
            if call.status != 200:
                return
            try:
                answer = json.loads(call.body)
            except (ValueError, RecursionError):
                answer = None
            usage = answer.get("usage") if isinstance(answer, dict) else None
            if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
                call.usage = usage
            else:
                await self._count(call, request, _answer_text(answer))
                return
        if call.usage and call.usage.get("completion_tokens") is not None:
            call.prompt_tokens = int(call.usage.get("prompt_tokens") or 0)
            call.completion_tokens = int(call.usage.get("completion_tokens") or 0)
            return
        if call.body is None:
            await self._count(call, request, _streamed_text(b"".join(call.events)))

    async def _count(self, call: Call, request: dict[str, Any], completion: str) -> None:
        """No usage from the engine: count with the model's tokenizer (in a thread)."""
        tokenizer = call.route.tokenizer
        prompt = _prompt_text(request)
        call.prompt_tokens = await asyncio.to_thread(tokens.count, prompt, tokenizer)
        call.completion_tokens = await asyncio.to_thread(tokens.count, completion, tokenizer)
        call.counted = True

    def _meter(self, call: Call) -> None:
        now = time.perf_counter()
        status = call.status or 499  # the client went away before an answer
        model = call.route.model
        metrics = self.meter.metrics
        ttft = (call.first_token - call.started) if call.first_token else None
        metrics.duration.observe(now - call.started, model=model)
        if ttft is not None and status == 200:
            metrics.ttft.observe(ttft, model=model)
            if call.completion_tokens > 1:
                tpot = (now - call.first_token) / (call.completion_tokens - 1)  # type: ignore[operator]
                metrics.tpot.observe(tpot, model=model)
        if status >= 400:
            metrics.errors.add(1, model=model, code=str(status))
        key = call.identity.key
        self.meter.record(
            Record(
                project_id=call.route.project_id,
                deployment_id=call.route.deployment_id,
                model=model,
                user_id=call.identity.user_id,
                user_name=call.identity.user_name,
                key_id=key.id if key else None,
                endpoint=call.endpoint,
                status=status,
                prompt_tokens=call.prompt_tokens,
                completion_tokens=call.completion_tokens,
                counted=call.counted,
                ttft_ms=ttft * 1000 if ttft is not None else None,
                duration_ms=(now - call.started) * 1000,
            )
        )

    # --- /s/<project>/<service>/... ----------------------------------------------------

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        """A service that speaks its own HTTP: the rest of the path goes to a ready replica,
        with the caller's credentials taken off and the replica's token put on."""
        parts = scope["path"][len(PROXY_PREFIX) :].split("/", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise Refused(404, "unknown_url", "error.gateway_unknown_url", path=scope["path"])
        identity = await self.identities.of(scope, headers)
        if identity is None:
            raise Refused(401, "invalid_api_key", "error.gateway_unauthenticated")
        route = self._route(identity, f"{parts[0]}/{parts[1]}")
        body = await self._body(receive, headers)
        target = _proxied_target(scope)
        language = negotiate(headers.get("accept-language"))
        call = Call(identity, route, "proxy", time.perf_counter(), language)
        forwarded = [(k, v) for k, v in headers.items() if k not in _HOP and k not in _OURS]
        self.traffic.begin(route.deployment_id)
        try:
            tried: set[int] = set()
            for _ in range(ATTEMPTS):
                upstream = await self._ready(route, frozenset(tried))
                try:
                    client = await self._client_for(upstream)
                except httpx.ConnectError:
                    tried.add(upstream.job_id)
                    continue
                outgoing = client.build_request(
                    scope["method"],
                    httpx.URL(upstream.url).copy_with(raw_path=target),
                    content=body,
                    headers=[*forwarded, ("authorization", f"Bearer {upstream.token}")],
                )
                self.table.begin(upstream)
                try:
                    try:
                        response = await client.send(outgoing, stream=True)
                    except UPSTREAM_GONE:
                        tried.add(upstream.job_id)
                        continue
                    try:
                        await _until_gone(receive, _relay(call, response, send))
                    finally:
                        await response.aclose()
                    return
                finally:
                    self.table.end(upstream)
            raise Refused(503, "no_replica", "error.gateway_no_replica", model=route.model)
        finally:
            self.traffic.end(route.deployment_id)
            self._meter(call)


def _new_client(socket: str | None = None) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=512)
    transport = httpx.AsyncHTTPTransport(uds=socket, limits=limits) if socket else None
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, read=None), limits=limits, transport=transport
    )


async def _relay(call: Call, response: httpx.Response, send: Send) -> None:
    call.status = response.status_code
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": _answer_headers(response.headers, stream=False, raw=True),
        }
    )
    async for chunk in response.aiter_raw():
        if call.first_token is None:
            call.first_token = time.perf_counter()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _until_gone(receive: Receive, work: Awaitable[None]) -> None:
    """Run `work`; stop it when the client disconnects (its upstream is then closed)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _answer_headers(
    upstream: httpx.Headers, stream: bool, raw: bool = False
) -> list[tuple[bytes, bytes]]:
    """The engine's headers without hop-by-hop ones. `raw`: the bytes go through as they
    came (the proxy), so their content-encoding goes with them; /v1 asks for none."""
    dropped = {"date", "server"} | (set() if raw else {"content-encoding"})
    out = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in upstream.multi_items()
        if k.lower() not in _HOP and k.lower() not in dropped
    ]
    if not stream and "content-length" in upstream:
        out.append((b"content-length", upstream["content-length"].encode()))
    if stream:
        out.append((b"x-accel-buffering", b"no"))
        out.append((b"cache-control", b"no-cache"))
    return out


def _openai_error(status: int, body: bytes, language: str) -> bytes:
    """An engine's error as it came where it is in OpenAI's shape already; else in that
    shape, with the engine's own words as its message."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return body
    said = answer.get("detail") if isinstance(answer, dict) else None
    said = said if isinstance(said, str) else body.decode("utf-8", "replace").strip()
    code = "unsupported_endpoint" if status in (404, 405) else "upstream_error"
    message = translate("error.gateway_engine_refused", language, status=status, said=said[:500])
    error = {
        "message": message,
        "type": _ERROR_TYPES.get(status, "server_error"),
        "param": None,
        "code": code,
    }
    return json.dumps({"error": error}, ensure_ascii=False).encode()


def _proxied_target(scope: Scope) -> bytes:
    """The rest of the path after /s/<project>/<service>, as the client encoded it (an
    escaped `?` or `/` stays escaped), with its query."""
    raw = scope.get("raw_path") or scope["path"].encode()
    rest = raw.split(b"?", 1)[0].split(b"/", 4)  # ["", "s", project, service, rest]
    path = b"/" + (rest[4] if len(rest) > 4 else b"")
    query = scope.get("query_string", b"")
    return path + (b"?" + query if query else b"")


def _parse(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "invalid_json", "error.gateway_bad_json") from None
    if not isinstance(request, dict):
        raise Refused(400, "invalid_json", "error.gateway_not_object")
    return request


def _take_usage(events: bytes, strip: bool) -> tuple[bytes, dict[str, Any] | None]:
    """The usage of the events that carry it; those with no choices left (the usage
    chunk) are removed when `strip`."""
    kept: list[bytes] = []
    usage = None
    for event in events.split(b"\n\n"):
        if not event:
            continue
        if b'"usage"' in event:
            data = _event_data(event)
            found = data.get("usage") if isinstance(data, dict) else None
            if isinstance(found, dict):
                usage = found
                if strip and not data.get("choices"):
                    continue
        kept.append(event + b"\n\n")
    return b"".join(kept), usage


def _event_data(event: bytes) -> Any:
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None


def _streamed_text(events: bytes) -> str:
    """The text a stream carried (chat deltas or completion text)."""
    return "".join(
        _answer_text(_event_data(event)) for event in events.split(b"\n\n") if event.strip()
    )


def _answer_text(answer: Any) -> str:
    """The text of an answer's choices (a whole answer's messages, a stream chunk's deltas,
    or completions' text)."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    parts: list[str] = []
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict):
            continue
        said = choice.get("message") or choice.get("delta")
        piece = said.get("content") if isinstance(said, dict) else choice.get("text")
        if isinstance(piece, str):
            parts.append(piece)
    return "".join(parts)


def _prompt_text(request: dict[str, Any]) -> str:
    """What the client sent to the model: messages' text, a prompt, an embedding's input."""
    parts: list[str] = []
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict) and "text" in p]
    for name in ("prompt", "input"):
        value = request.get(name)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts += [v for v in value if isinstance(v, str)]
    return "\n".join(parts)


async def _json(
    send: Send, status: int, body: Any, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _refuse(send: Send, refused: Refused, language: str) -> None:
    body = {
        "error": {
            "message": translate(refused.key, language, **refused.params),
            "type": _ERROR_TYPES.get(refused.status, "server_error"),
            "param": refused.param,
            "code": refused.code,
        }
    }
    extra = []
    if refused.retry_after is not None:
        extra.append((b"retry-after", str(refused.retry_after).encode()))
    await _json(send, refused.status, body, extra)


class Dispatch:
    """ASGI middleware, outermost: /v1/ and /s/ go to the gateway, the rest to the app."""

    def __init__(self, app: Any, gateway: Callable[[], Gateway | None]):
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith(OPENAI_PREFIX) or path.startswith(PROXY_PREFIX):
                gateway = self.gateway()
                if gateway is not None:
                    await gateway(scope, receive, send)
                    return
        await self.app(scope, receive, send)

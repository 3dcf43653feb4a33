"""Every error leaves the server as RFC 9457 problem+json, in the caller's language.

No input may produce a traceback for a user: unexpected exceptions are logged with a
reference that the response names, and the response says nothing more.
"""

import logging
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from suanli.core.errors import RateLimited, SuanliError, Unauthenticated, Unavailable
from suanli.core.names import NAME_PATTERN
from suanli.data import paths
from suanli.i18n import negotiate, translate
from suanli.schemas.system import Problem
from suanli.schemas.types import EMAIL_PATTERN, NO_NUL_PATTERN

log = logging.getLogger("suanli.api")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:suanli:problem:"
_STATUS_TYPES = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    422: "validation-error",
    429: "too-many-requests",
    503: "unavailable",
}


class PayloadTooLarge(StarletteHTTPException):
    """A request body over its route's limit, found while it streams in (suanli.api.limits).
    An HTTPException, so that FastAPI's reading of a body lets it through as it is."""

    def __init__(self, limit: int):
        super().__init__(413)
        self.limit = limit


# The console answers its own pages' errors as pages: (request, status, detail) -> a response,
# or None where the request is not the console's.
ErrorPage = Callable[[Request, int, str], Response | None]


def problem(
    request: Request,
    status: int,
    type_: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    page: ErrorPage | None = getattr(request.app.state, "error_page", None)
    response = page(request, status, detail) if page else None
    if response is not None:
        response.headers.update(headers or {})
        return response
    language = language_of(request)
    body: dict[str, Any] = {
        "type": TYPE_BASE + type_,
        "title": translate(f"title.{type_}", language),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def language_of(request: Request) -> str:
    """The console sets the signed-in user's choice; API callers say theirs in Accept-Language."""
    chosen = getattr(request.state, "language", None)
    return chosen or negotiate(request.headers.get("accept-language"))


def field_errors(errors: Any, language: str) -> list[dict[str, str]]:
    """Pydantic's errors as {field, in, type, message}, the message in the caller's language."""
    result = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        where, path = (loc[0], loc[1:]) if loc and loc[0] in _LOCATIONS else ("body", loc)
        kind = error.get("type", "")
        ctx = {k: str(v) for k, v in (error.get("ctx") or {}).items()}
        key = f"validation.{kind}"
        if kind == "string_pattern_mismatch":
            key = _PATTERN_MESSAGES.get(ctx.get("pattern", ""), key)
        message = translate(key, language, **ctx)
        if message == key:
            message = translate("validation.invalid", language, detail=error.get("msg", ""))
        result.append(
            {"field": ".".join(path) or where, "in": where, "type": kind, "message": message}
        )
    return result


_LOCATIONS = {"body", "query", "path", "header", "cookie"}
_PATTERN_MESSAGES = {
    NAME_PATTERN: "validation.name_rule",
    paths.PATTERN: "validation.data_path.rule",
    NO_NUL_PATTERN: "validation.text_nul",
    EMAIL_PATTERN: "validation.email",
}


async def _on_suanli_error(request: Request, error: SuanliError) -> Response:
    return error_response(request, error)


def error_response(request: Request, error: SuanliError) -> Response:
    """A domain error as its problem (or the console's page): for the exception handler and
    for middleware that answers before the application runs."""
    language = language_of(request)
    detail = translate(error.key, language, **error.params)
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited | Unavailable):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    errors = None
    if error.field:
        errors = [{"field": error.field, "in": "body", "type": error.type, "message": detail}]
    return problem(request, error.status, error.type, detail, errors=errors, headers=headers)


async def _on_payload_too_large(request: Request, error: PayloadTooLarge) -> Response:
    return payload_too_large(request, error.limit)


def payload_too_large(request: Request, limit: int) -> Response:
    """413: the body is over `limit` bytes (declared so, or found so while reading it)."""
    detail = translate("error.payload_too_large", language_of(request), limit=limit)
    return problem(request, 413, "payload-too-large", detail)


async def _on_validation_error(request: Request, error: RequestValidationError) -> Response:
    language = language_of(request)
    errors = field_errors(error.errors(), language)
    detail = translate("error.validation", language, count=len(errors))
    return problem(request, 422, "validation-error", detail, errors=errors)


async def _on_http_error(request: Request, error: StarletteHTTPException) -> Response:
    language = language_of(request)
    status = error.status_code
    type_ = _STATUS_TYPES.get(status, "bad-request")
    if status == 404:
        detail = translate("error.not_found", language)
    elif status == 405:
        detail = translate("error.method_not_allowed", language, method=request.method)
        return problem(request, status, type_, detail, headers={"Allow": _allowed(request)})
    else:
        detail = translate(f"error.{type_.replace('-', '_')}", language)
    return problem(request, status, type_, detail, headers=dict(error.headers or {}))


# PostgreSQL's answers to transactions that collided: deadlock, serialization failure.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}


async def _on_database_error(request: Request, error: DBAPIError) -> Response:
    """A collision with a concurrent request is a conflict the caller may retry, not a 500."""
    if getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        detail = translate("error.conflict", language_of(request))
        return problem(request, 409, "conflict", detail)
    return await _on_unexpected(request, error)


async def _on_unexpected(request: Request, error: Exception) -> Response:
    ref = uuid.uuid4().hex[:12]
    log.error("unhandled error %s on %s %s", ref, request.method, request.url.path, exc_info=error)
    detail = translate("error.internal", language_of(request), ref=ref)
    return problem(request, 500, "internal-error", detail)


def _allowed(request: Request) -> str:
    """Every method of every route at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE and route.methods:
            methods |= route.methods
    return ", ".join(sorted(methods))


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": description}
    for status, description in (
        (400, "The body could not be read"),
        (401, "Not signed in, or the token is invalid, expired or revoked"),
        (403, "Signed in, but not allowed"),
        (404, "Not found, or not visible to the caller"),
        (409, "Conflicts with the current state"),
        (413, "The body is larger than the server accepts (max_request_body_bytes)"),
        (422, "Invalid input, with one entry per field"),
    )
}


def document(app: FastAPI) -> None:
    """Describe error responses in the OpenAPI document as what they are: problem+json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for operations in schema["paths"].values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[0] in "45" and "application/json" in content:
                            content[PROBLEM_JSON] = content.pop("application/json")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI, page: ErrorPage | None = None) -> None:
    app.state.error_page = page
    app.add_exception_handler(SuanliError, _on_suanli_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(PayloadTooLarge, _on_payload_too_large)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _on_database_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)

"""Every error leaves the server as RFC 9457 problem+json, in the caller's language.

No input may produce a traceback for a user: unexpected exceptions are logged with a
reference that the response names, and the response says nothing more.
"""

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from suanli.core.errors import RateLimited, SuanliError, Unauthenticated
from suanli.core.names import NAME_PATTERN
from suanli.i18n import negotiate, translate

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
    422: "validation-error",
    429: "too-many-requests",
}


def problem(
    request: Request,
    status: int,
    type_: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
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
    return negotiate(request.headers.get("accept-language"))


def field_errors(errors: Any, language: str) -> list[dict[str, str]]:
    """Pydantic's errors as {field, in, type, message}, the message in the caller's language."""
    result = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        where, path = (loc[0], loc[1:]) if loc and loc[0] in _LOCATIONS else ("body", loc)
        kind = error.get("type", "")
        ctx = {k: str(v) for k, v in (error.get("ctx") or {}).items()}
        key = f"validation.{kind}"
        if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
            key = "validation.name_rule"
        message = translate(key, language, **ctx)
        if message == key:
            message = translate("validation.invalid", language, detail=error.get("msg", ""))
        result.append(
            {"field": ".".join(path) or where, "in": where, "type": kind, "message": message}
        )
    return result


_LOCATIONS = {"body", "query", "path", "header", "cookie"}


async def _on_suanli_error(request: Request, error: SuanliError) -> JSONResponse:
    language = language_of(request)
    detail = translate(error.key, language, **error.params)
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    errors = None
    if error.field:
        errors = [{"field": error.field, "in": "body", "type": error.type, "message": detail}]
    return problem(request, error.status, error.type, detail, errors=errors, headers=headers)


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    language = language_of(request)
    errors = field_errors(error.errors(), language)
    detail = translate("error.validation", language, count=len(errors))
    return problem(request, 422, "validation-error", detail, errors=errors)


async def _on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    language = language_of(request)
    status = error.status_code
    type_ = _STATUS_TYPES.get(status, "bad-request")
    if status == 404:
        detail = translate("error.not_found", language)
    elif status == 405:
        detail = translate("error.method_not_allowed", language, method=request.method)
    else:
        detail = translate(f"error.{type_.replace('-', '_')}", language)
    return problem(request, status, type_, detail, headers=dict(error.headers or {}))


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    ref = uuid.uuid4().hex[:12]
    log.error("unhandled error %s on %s %s", ref, request.method, request.url.path, exc_info=error)
    detail = translate("error.internal", language_of(request), ref=ref)
    return problem(request, 500, "internal-error", detail)


def install(app: FastAPI) -> None:
    app.add_exception_handler(SuanliError, _on_suanli_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)

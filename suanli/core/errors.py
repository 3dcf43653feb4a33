"""Domain errors raised by services and turned into problem+json by the API.

Each error carries a message key and parameters rather than a sentence, so that the API can
render it in the caller's language (see `suanli.i18n`).
"""

from typing import Any


class SuanliError(Exception):
    status: int = 400
    type: str = "bad-request"
    key: str = "error.bad_request"

    def __init__(self, key: str | None = None, /, *, field: str | None = None, **params: Any):
        self.key = key or self.key
        self.field = field
        self.params = params
        super().__init__(self.key, params)


class InvalidInput(SuanliError):
    """Well-formed input that breaks a rule the schema cannot express (e.g. max < guaranteed)."""

    status = 422
    type = "validation-error"
    key = "error.invalid"


class Unauthenticated(SuanliError):
    status = 401
    type = "unauthenticated"
    key = "error.unauthenticated"


class Forbidden(SuanliError):
    status = 403
    type = "forbidden"
    key = "error.forbidden"


class NotFound(SuanliError):
    status = 404
    type = "not-found"
    key = "error.not_found"


class Conflict(SuanliError):
    status = 409
    type = "conflict"
    key = "error.conflict"


class TooLarge(SuanliError):
    """More bytes than may be written (a project's storage quota): refused before any is."""

    status = 413
    type = "too-large"
    key = "error.storage_quota"


class RateLimited(SuanliError):
    status = 429
    type = "too-many-requests"
    key = "error.locked"

    def __init__(self, key: str | None = None, /, *, retry_after: int, **params: Any):
        self.retry_after = retry_after
        super().__init__(key, seconds=retry_after, **params)


class Unavailable(SuanliError):
    """Not ready yet (a dev environment's tool still starting): try again shortly."""

    status = 503
    type = "unavailable"
    key = "error.unavailable"
    retry_after = 2

"""Field types with the rules every request field follows.

The OpenAPI document states these rules exactly (patterns, bounds, strict types), so a client
that follows the document is never refused for a reason the document does not show. Only
rules across fields (a quota's maximum below its guarantee) are checked beyond it.
"""

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from suanli.core.names import NAME_PATTERN

# Integer columns are 32-bit on PostgreSQL; ids and counts stay inside that.
MAX_INT32 = 2**31 - 1
# Byte counts stay exact in JSON readers that use doubles (JavaScript): up to 8 PiB.
MAX_BYTES = 2**53 - 1
# PostgreSQL cannot store a NUL character in text.
NO_NUL_PATTERN = r"^[^\x00]*$"
# Explicit ranges, not \s: regex dialects (Rust, Python, hypothesis) disagree about \s.
EMAIL_PATTERN = r"^$|^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"


def _encodable(value: str) -> str:
    """No lone UTF-16 surrogate: JSON can carry one, but no database stores it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("text_encoding", "must be valid Unicode text") from None
    return value


_ISO_START = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_text(value: Any) -> Any:
    """Only ISO 8601 text is a time here; pydantic would also read numbers as Unix times."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_START.match(value):
        raise PydanticCustomError("datetime_parsing", "must be an ISO 8601 date and time")
    return value


def _whole(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer; strings and 3.5 stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _utc(value: datetime) -> datetime:
    """Read a time without a zone as UTC, and reject times that fall off the calendar in UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "is outside the supported range") from None


def text(*, min_length: int | None = None, max_length: int, pattern: str = NO_NUL_PATTERN) -> Any:
    """A string every database stores, with the given bounds."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern),
        AfterValidator(_encodable),
    ]


Name = text(max_length=32, pattern=NAME_PATTERN)
ShortText = text(max_length=128)
Email = text(max_length=254, pattern=EMAIL_PATTERN)
Password = text(min_length=8, max_length=256)
UtcDatetime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_utc)]
Flag = StrictBool


def count(*, minimum: int = 0, maximum: int) -> Any:
    """A whole number; strict, so "5" or true are refused rather than guessed at."""
    return Annotated[int, Field(ge=minimum, le=maximum, strict=True), BeforeValidator(_whole)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)

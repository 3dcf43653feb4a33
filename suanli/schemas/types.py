"""Field types with the rules every request field follows."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from suanli.core.names import NAME_PATTERN

# Integer columns are 32-bit on PostgreSQL; ids and counts stay inside that.
MAX_INT32 = 2**31 - 1
MAX_BYTES = 2**62


def _storable(value: str) -> str:
    """Text that every database stores: no NUL character, no lone UTF-16 surrogate."""
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("text_encoding", "must be valid Unicode text") from None
    return value


def _utc(value: datetime) -> datetime:
    """Read a time without a zone as UTC, and reject times that fall off the calendar in UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "is outside the supported range") from None


Text = Annotated[str, AfterValidator(_storable)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ShortText = Annotated[Text, StringConstraints(max_length=128)]
Email = Annotated[Text, StringConstraints(max_length=254, pattern=r"^$|^[^@\s]+@[^@\s]+$")]
Password = Annotated[Text, StringConstraints(min_length=8, max_length=256)]
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Id = Annotated[int, Field(ge=1, le=MAX_INT32)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)

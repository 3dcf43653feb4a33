"""Users, logins and tokens."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from suanli.schemas.types import (
    Email,
    Flag,
    Name,
    Password,
    RequestModel,
    ResponseModel,
    ShortText,
    count,
    text,
)

Language = Literal["en", "zh-CN"]
TokenName = text(min_length=1, max_length=64)
Secret = text(min_length=1, max_length=1024)


class LoginRequest(RequestModel):
    username: text(min_length=1, max_length=128)
    password: Secret
    token_name: TokenName = "login"


class UserOut(ResponseModel):
    name: str
    display_name: str
    email: str
    is_admin: bool
    is_disabled: bool
    language: str | None
    created_at: datetime
    last_login_at: datetime | None


class LoginResponse(ResponseModel):
    token: str
    expires_at: datetime | None
    user: UserOut


class UserCreate(RequestModel):
    name: Name
    password: Password
    is_admin: Flag = False
    display_name: ShortText = ""
    email: Email = ""


class UserUpdate(RequestModel):
    """Administrators' changes to a user; omitted fields stay as they are."""

    display_name: ShortText | None = None
    email: Email | None = None
    is_admin: Flag | None = None
    is_disabled: Flag | None = None


class PasswordReset(RequestModel):
    password: Password


class PasswordChange(RequestModel):
    current_password: Secret
    new_password: Password


class MeUpdate(RequestModel):
    display_name: ShortText | None = None
    email: Email | None = None
    language: Language | None = None


class TokenCreate(RequestModel):
    name: TokenName
    # None: the token lives until revoked.
    expires_in_days: count(minimum=1, maximum=3650) | None = None
    kind: Literal["api", "metrics"] = Field(
        "api",
        description="`api`: everything you may do; `metrics`: reads only /metrics, for "
        "Prometheus (administrators)",
    )


class TokenOut(ResponseModel):
    id: int
    name: str
    kind: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    """Returned once, at creation: the only time the token itself is shown."""

    token: str

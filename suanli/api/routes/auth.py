"""Logging in (public) and out."""

from fastapi import APIRouter, Request

from suanli.api.deps import CallerDep, DatabaseDep, SessionDep, SettingsDep, client_address
from suanli.schemas.accounts import LoginRequest, LoginResponse, UserOut
from suanli.schemas.system import Problem
from suanli.services import auth
from suanli.services.auth import LoginPolicy

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=LoginResponse,
    responses={401: {"model": Problem}, 429: {"model": Problem}},
)
def login(
    body: LoginRequest, request: Request, database: DatabaseDep, settings: SettingsDep
) -> LoginResponse:
    """Exchange a user name and password for a session token (sent as `Bearer <token>`)."""
    user, token, secret = auth.login(
        database,
        LoginPolicy.from_settings(settings),
        username=body.username,
        password=body.password,
        address=client_address(request),
        token_name=body.token_name,
    )
    return LoginResponse(
        token=secret, expires_at=token.expires_at, user=UserOut.model_validate(user)
    )


@router.post("/logout", status_code=204)
def logout(caller: CallerDep, session: SessionDep) -> None:
    """Revoke the token this request was made with."""
    auth.logout(session, caller.actor, caller.token_id)

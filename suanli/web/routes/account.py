"""My account: profile, password, API tokens (a new token is shown once, on creation)."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import DatabaseDep, SessionDep, SettingsDep
from suanli.core.errors import SuanliError
from suanli.db.models import utcnow
from suanli.schemas.accounts import MeUpdate, PasswordChange, TokenCreate
from suanli.schemas.types import MAX_INT32
from suanli.services import accounts, auth, tokens
from suanli.services.auth import LoginPolicy
from suanli.web import forms, render, session
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]


def _page(
    request: Request,
    db: Session,
    viewer: Viewer,
    *,
    errors: forms.Errors | None = None,
    values: dict[str, str] | None = None,
    created: tuple[str, str] | None = None,
    status: int = 200,
) -> Response:
    return render.page(
        request,
        "account.html",
        status=status,
        nav="account",
        user=viewer.user,
        tokens=tokens.list_mine(db, viewer.actor),
        current_token=viewer.token_id,
        errors=errors or {},
        values=values or {},
        created=created,
    )


def _failed(
    request: Request, db: Session, viewer: Viewer, error: ValidationError | SuanliError, prefix: str
) -> Response:
    db.rollback()
    errors, status = forms.refused(request, error, prefix)
    return _page(request, db, viewer, errors=errors, status=status)


@router.get("/account")
def account(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    return _page(request, db, viewer)


@router.post("/account/profile")
async def update_profile(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    values = forms.fields(await request.form())
    try:
        body = MeUpdate.model_validate(
            {"display_name": values.get("display_name", ""), "email": values.get("email", "")}
        )
        accounts.update_me(db, viewer.actor, display_name=body.display_name, email=body.email)
    except (ValidationError, SuanliError) as error:
        return _failed(request, db, viewer, error, "profile")
    return render.redirect("/account", flash="web.flash.profile_saved")


@router.post("/account/password")
async def change_password(
    request: Request, database: DatabaseDep, settings: SettingsDep, viewer: ViewerDep
) -> Response:
    """Other login sessions end; this browser stays signed in."""
    values = forms.fields(await request.form())
    try:
        body = PasswordChange.model_validate(
            {
                "current_password": values.get("current_password", ""),
                "new_password": values.get("new_password", ""),
            }
        )
        auth.change_password(
            database,
            LoginPolicy.from_settings(settings),
            viewer.actor,
            current=body.current_password,
            new=body.new_password,
            keep_token_id=viewer.token_id,
        )
    except (ValidationError, SuanliError) as error:
        with database.reading() as db:
            return _failed(request, db, viewer, error, "password")
    return render.redirect("/account", flash="web.flash.password_changed")


@router.post("/account/tokens")
async def create_token(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    values = forms.fields(await request.form())
    days = values.get("expires_in_days", "").strip()
    try:
        body = TokenCreate.model_validate(
            {
                "name": values.get("name", ""),
                "expires_in_days": forms.number(days) if days else None,
            }
        )
        expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
        token, secret = tokens.create(db, viewer.actor, name=body.name, expires_at=expires)
    except (ValidationError, SuanliError) as error:
        return _failed(request, db, viewer, error, "token")
    return _page(request, db, viewer, created=(token.name, secret))


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_INT32)], db: SessionDep, viewer: ViewerDep
) -> Response:
    tokens.revoke(db, viewer.actor, token_id)
    return render.redirect("/account", flash="web.flash.token_revoked")

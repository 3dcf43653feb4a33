"""My account: profile, password, API tokens (a new token is shown once, on creation), and the
SSH public keys the dev environments' SSH gateway knows the user by."""

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
from suanli.schemas.devenvs import SshKeyAdd
from suanli.schemas.types import MAX_INT32
from suanli.services import accounts, auth, sshkeys, tokens
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
        ssh_keys=sshkeys.list_mine(db, viewer.actor),
        current_token=viewer.token_id,
        errors=errors or {},
        values=values or {},
        created=created,
    )


def _failed(
    request: Request,
    db: Session,
    viewer: Viewer,
    error: ValidationError | SuanliError,
    prefix: str,
    values: dict[str, str] | None = None,
) -> Response:
    """The page again with the form's errors; `values` are what to show typed again (never
    passwords)."""
    db.rollback()
    errors, status = forms.refused(request, error, prefix)
    return _page(request, db, viewer, errors=errors, values=values, status=status)


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


@router.post("/account/ssh-keys")
async def add_ssh_key(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    """What was pasted stays in the form when refused, so it can be mended, not pasted again
    (a public key is no secret; a private key pasted by mistake is refused and not echoed)."""
    values = forms.fields(await request.form())
    typed = {
        "ssh_key.public_key": values.get("public_key", ""),
        "ssh_key.name": values.get("name", ""),
    }
    try:
        body = SshKeyAdd.model_validate(
            {"public_key": values.get("public_key", ""), "name": values.get("name", "").strip()}
        )
        sshkeys.add(db, viewer.actor, body.public_key, body.name)
    except (ValidationError, SuanliError) as error:
        if "PRIVATE KEY" in typed["ssh_key.public_key"]:
            typed["ssh_key.public_key"] = ""
        return _failed(request, db, viewer, error, "ssh_key", typed)
    return render.redirect("/account#ssh-keys", flash="web.flash.ssh_key_added")


@router.post("/account/ssh-keys/{key_id}/remove")
def remove_ssh_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_INT32)], db: SessionDep, viewer: ViewerDep
) -> Response:
    sshkeys.remove(db, viewer.actor, key_id)
    return render.redirect("/account#ssh-keys", flash="web.flash.ssh_key_removed")

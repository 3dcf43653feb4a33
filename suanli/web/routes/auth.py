"""Logging in and out of the console, and choosing its language."""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from suanli.api.deps import DatabaseDep, SessionDep, SettingsDep, client_address
from suanli.core.errors import InvalidInput, SuanliError
from suanli.i18n import LANGUAGES
from suanli.schemas.accounts import LoginRequest
from suanli.services import accounts
from suanli.services import auth as auth_service
from suanli.services.auth import LoginPolicy
from suanli.web import render, session
from suanli.web.forms import refused

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
Text = Annotated[str, Form()]


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    if session.find_viewer(request) is not None:
        return render.redirect(render.safe_next(next))
    return render.page(request, "login.html", next=render.safe_next(next), errors={}, username="")


@router.post("/login")
def login(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    username: Text = "",
    password: Text = "",
    next: Text = "/",
) -> Response:
    try:
        body = LoginRequest(username=username, password=password, token_name="console")
        _, _, secret = auth_service.login(
            database,
            LoginPolicy.from_settings(settings),
            username=body.username,
            password=body.password,
            address=client_address(request),
            token_name=body.token_name,
        )
    except (ValidationError, SuanliError) as error:
        errors, status = refused(request, error)
        return render.page(
            request,
            "login.html",
            status=status,
            next=render.safe_next(next),
            errors=errors,
            username=username,
        )
    response = render.redirect(render.safe_next(next))
    session.start(response, request, secret, settings.session_token_days * 86400)
    return response


@router.post("/logout")
def logout(request: Request, db: SessionDep) -> Response:
    viewer = session.find_viewer(request)
    if viewer is not None:
        auth_service.logout(db, viewer.actor, viewer.token_id)
    response = render.redirect("/login")
    session.end(response)
    return response


@router.post("/language")
def choose_language(request: Request, db: SessionDep, language: Text, next: Text = "/") -> Response:
    """Remembered for the signed-in user (every browser), and in this browser's cookie (so the
    login page speaks it too)."""
    if language not in LANGUAGES:
        raise InvalidInput("web.error.language", field="language", languages=", ".join(LANGUAGES))
    viewer = session.find_viewer(request)
    if viewer is not None:
        accounts.update_me(db, viewer.actor, language=language)
    response = render.redirect(render.safe_next(next))
    session.remember_language(response, request, language)
    return response

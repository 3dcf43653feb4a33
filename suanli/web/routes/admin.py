"""Administration: users (create, disable, reset password, make admin) and the audit log."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import SessionDep
from suanli.core.errors import SuanliError
from suanli.core.names import NAME_PATTERN
from suanli.schemas.accounts import PasswordReset, UserCreate
from suanli.schemas.system import AuditEventOut, AuditQuery
from suanli.services import accounts, audit
from suanli.services.accounts import UserChanges
from suanli.services.common import require_admin
from suanli.web import forms, render, session
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
UserName = Annotated[str, Path(pattern=NAME_PATTERN)]
AUDIT_FILTERS = ("actor", "action", "project", "target", "result", "since", "until", "before_id")


def require_admin_viewer(viewer: Viewer = Depends(session.require_viewer)) -> Viewer:
    require_admin(viewer.actor)
    return viewer


AdminDep = Annotated[Viewer, Depends(require_admin_viewer)]


def _users_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    values: dict[str, str] | None = None,
    errors: forms.Errors | None = None,
    status: int = 200,
) -> Response:
    return render.page(
        request,
        "users.html",
        status=status,
        nav="users",
        users=accounts.list_users(db, viewer.actor),
        values=values or {},
        errors=errors or {},
    )


@router.get("/admin/users")
def list_users(request: Request, db: SessionDep, viewer: AdminDep) -> Response:
    return _users_page(request, db, viewer)


@router.post("/admin/users")
async def create_user(request: Request, db: SessionDep, viewer: AdminDep) -> Response:
    values = forms.fields(await request.form())
    try:
        body = UserCreate.model_validate(
            {
                "name": values.get("name", ""),
                "password": values.get("password", ""),
                "display_name": values.get("display_name", ""),
                "email": values.get("email", ""),
                "is_admin": values.get("is_admin") == "on",
            }
        )
        accounts.create_user(
            db,
            viewer.actor,
            name=body.name,
            password=body.password,
            is_admin=body.is_admin,
            display_name=body.display_name,
            email=body.email,
        )
    except (ValidationError, SuanliError) as error:
        db.rollback()
        errors, status = forms.refused(request, error)
        values.pop("password", None)
        return _users_page(request, db, viewer, values, errors, status)
    return render.redirect("/admin/users", flash="web.flash.user_created")


@router.post("/admin/users/{name}")
def change_user(
    name: UserName,
    db: SessionDep,
    viewer: AdminDep,
    action: Annotated[Literal["disable", "enable", "make_admin", "revoke_admin"], Form()],
) -> Response:
    changes = {
        "disable": UserChanges(is_disabled=True),
        "enable": UserChanges(is_disabled=False),
        "make_admin": UserChanges(is_admin=True),
        "revoke_admin": UserChanges(is_admin=False),
    }[action]
    accounts.update_user(db, viewer.actor, name, changes)
    return render.redirect("/admin/users", flash=f"web.flash.user_{action}")


@router.post("/admin/users/{name}/password")
async def reset_password(
    name: UserName, request: Request, db: SessionDep, viewer: AdminDep
) -> Response:
    values = forms.fields(await request.form())
    try:
        body = PasswordReset.model_validate({"password": values.get("password", "")})
        accounts.reset_password(db, viewer.actor, name, body.password)
    except (ValidationError, SuanliError) as error:
        db.rollback()
        found, status = forms.refused(request, error)
        message = " ".join(found.values())
        return _users_page(request, db, viewer, errors={f"password.{name}": message}, status=status)
    return render.redirect("/admin/users", flash="web.flash.password_reset")


@router.get("/admin/audit")
def audit_log(request: Request, db: SessionDep, viewer: AdminDep) -> Response:
    filters = {k: v for k in AUDIT_FILTERS if (v := request.query_params.get(k, "").strip())}
    errors: forms.Errors = {}
    try:
        events = audit.list_events(db, viewer.actor, AuditQuery.model_validate(filters))
    except ValidationError as error:
        errors, events = forms.errors_of(error, request.state.language), []
    return render.page(
        request,
        "audit.html",
        status=422 if errors else 200,
        nav="audit",
        events=[AuditEventOut.model_validate(e) for e in events],
        filters=filters,
        errors=errors,
    )

"""User administration (administrators only)."""

from typing import Annotated

from fastapi import APIRouter, Path

from suanli.api.deps import CallerDep, SessionDep
from suanli.core.names import NAME_PATTERN
from suanli.schemas.accounts import PasswordReset, UserCreate, UserOut, UserUpdate
from suanli.services import accounts
from suanli.services.accounts import UserChanges

router = APIRouter(prefix="/users", tags=["users"])
UserName = Annotated[str, Path(pattern=NAME_PATTERN)]


@router.get("", response_model=list[UserOut])
def list_users(caller: CallerDep, session: SessionDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in accounts.list_users(session, caller.actor)]


@router.post("", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, caller: CallerDep, session: SessionDep) -> UserOut:
    user = accounts.create_user(
        session,
        caller.actor,
        name=body.name,
        password=body.password,
        is_admin=body.is_admin,
        display_name=body.display_name,
        email=body.email,
    )
    return UserOut.model_validate(user)


@router.get("/{name}", response_model=UserOut)
def get_user(name: UserName, caller: CallerDep, session: SessionDep) -> UserOut:
    return UserOut.model_validate(accounts.show_user(session, caller.actor, name))


@router.patch("/{name}", response_model=UserOut)
def update_user(
    name: UserName, body: UserUpdate, caller: CallerDep, session: SessionDep
) -> UserOut:
    """Change a user's profile, administrator role or disabled state. Disabling a user
    revokes all their tokens at once."""
    changes = UserChanges(**body.model_dump(exclude_unset=True, exclude_none=True))
    return UserOut.model_validate(accounts.update_user(session, caller.actor, name, changes))


@router.delete("/{name}", status_code=204)
def delete_user(name: UserName, caller: CallerDep, session: SessionDep) -> None:
    accounts.delete_user(session, caller.actor, name)


@router.post("/{name}/password", status_code=204)
def reset_password(
    name: UserName, body: PasswordReset, caller: CallerDep, session: SessionDep
) -> None:
    """Set a new password for a user; their login sessions end (API tokens stay)."""
    accounts.reset_password(session, caller.actor, name, body.password)

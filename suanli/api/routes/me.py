"""The signed-in user: profile, password, API tokens, SSH keys."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path

from suanli.api.deps import CallerDep, DatabaseDep, SessionDep, SettingsDep
from suanli.db.models import utcnow
from suanli.schemas.accounts import (
    MeUpdate,
    PasswordChange,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserOut,
)
from suanli.schemas.devenvs import SshKeyAdd, SshKeyOut
from suanli.schemas.system import Problem
from suanli.schemas.types import MAX_INT32
from suanli.services import accounts, auth, sshkeys, tokens
from suanli.services.auth import LoginPolicy

router = APIRouter(prefix="/me", tags=["me"])


@router.get("", response_model=UserOut)
def whoami(caller: CallerDep) -> UserOut:
    return UserOut.model_validate(caller.actor.account)


@router.patch("", response_model=UserOut)
def update_me(body: MeUpdate, caller: CallerDep, session: SessionDep) -> UserOut:
    user = accounts.update_me(
        session,
        caller.actor,
        display_name=body.display_name,
        email=body.email,
        language=body.language,
    )
    return UserOut.model_validate(user)


@router.post("/password", status_code=204, responses={429: {"model": Problem}})
def change_password(
    body: PasswordChange, caller: CallerDep, database: DatabaseDep, settings: SettingsDep
) -> None:
    """Change your password. Your other login sessions end; this one and API tokens stay.
    Wrong current passwords count towards the login lock, like failed logins."""
    auth.change_password(
        database,
        LoginPolicy.from_settings(settings),
        caller.actor,
        current=body.current_password,
        new=body.new_password,
        keep_token_id=caller.token_id,
    )


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(caller: CallerDep, session: SessionDep) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in tokens.list_mine(session, caller.actor)]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, caller: CallerDep, session: SessionDep) -> TokenCreated:
    """Create an API token for scripts. The token is in this response only; keep it safe."""
    expires_at = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, secret = tokens.create(
        session, caller.actor, name=body.name, expires_at=expires_at, kind=body.kind
    )
    return TokenCreated(**TokenOut.model_validate(token).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_INT32)], caller: CallerDep, session: SessionDep
) -> None:
    tokens.revoke(session, caller.actor, token_id)


@router.get("/ssh-keys", response_model=list[SshKeyOut])
def list_ssh_keys(caller: CallerDep, session: SessionDep) -> list[SshKeyOut]:
    """Your SSH public keys: the gateway lets their holders into your dev environments."""
    return [SshKeyOut.model_validate(k) for k in sshkeys.list_mine(session, caller.actor)]


@router.post("/ssh-keys", response_model=SshKeyOut, status_code=201)
def add_ssh_key(body: SshKeyAdd, caller: CallerDep, session: SessionDep) -> SshKeyOut:
    """Add a public key (one line of `~/.ssh/id_ed25519.pub`). Private keys, unknown formats
    and RSA keys under 2048 bits are refused (422); a key already added by anyone, 409."""
    return SshKeyOut.model_validate(sshkeys.add(session, caller.actor, body.public_key, body.name))


@router.delete("/ssh-keys/{key_id}", status_code=204)
def remove_ssh_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_INT32)], caller: CallerDep, session: SessionDep
) -> None:
    sshkeys.remove(session, caller.actor, key_id)

"""Users: the administrators' side (create, disable, delete, reset) and each user's own."""

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from suanli.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from suanli.core.roles import ProjectRole
from suanli.db.models import ApiToken, Membership, Project, User, utcnow
from suanli.security.passwords import hash_password
from suanli.services import audit
from suanli.services.actor import Actor
from suanli.services.common import commit, require_admin


def find_user(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def get_user(session: Session, name: str) -> User:
    user = find_user(session, name)
    if user is None:
        raise NotFound("error.user_not_found", name=name)
    return user


def show_user(session: Session, actor: Actor, name: str) -> User:
    require_admin(actor)
    return get_user(session, name)


def list_users(session: Session, actor: Actor) -> Sequence[User]:
    require_admin(actor)
    return session.scalars(select(User).order_by(User.name)).all()


def create_user(
    session: Session,
    actor: Actor,
    *,
    name: str,
    password: str,
    is_admin: bool = False,
    display_name: str = "",
    email: str = "",
) -> User:
    require_admin(actor)
    check_password_rules(name, password)
    # Hash before the first query: on SQLite that query takes the write lock.
    password_hash = hash_password(password)
    if find_user(session, name) is not None:
        raise Conflict("error.user_exists", name=name)
    user = User(
        name=name,
        password_hash=password_hash,
        is_admin=is_admin,
        display_name=display_name,
        email=email,
    )
    session.add(user)
    audit.record(
        session,
        actor,
        "user.create",
        target_type="user",
        target=name,
        detail={"is_admin": is_admin},
    )
    commit(session, "error.user_exists", name=name)
    return user


@dataclass(frozen=True)
class UserChanges:
    """Fields an administrator may change; None leaves a field as it is."""

    display_name: str | None = None
    email: str | None = None
    is_admin: bool | None = None
    is_disabled: bool | None = None


def update_user(session: Session, actor: Actor, name: str, changes: UserChanges) -> User:
    require_admin(actor)
    user = get_user(session, name)
    removes_admin = changes.is_admin is False or changes.is_disabled is True
    if removes_admin and user.id == actor.account.id:
        raise Forbidden("error.cannot_demote_self")
    if removes_admin and user.is_admin and not user.is_disabled:
        _keep_an_admin(session, user)
    diff = _apply(user, changes)
    if changes.is_disabled:
        revoke_tokens(session, user, kinds=("session", "api", "metrics"))
    if diff:
        audit.record(session, actor, "user.update", target_type="user", target=name, detail=diff)
    commit(session, "error.conflict")
    return user


def delete_user(session: Session, actor: Actor, name: str) -> None:
    require_admin(actor)
    user = get_user(session, name)
    if user.id == actor.account.id:
        raise Forbidden("error.cannot_delete_self")
    if user.is_admin and not user.is_disabled:
        _keep_an_admin(session, user)
    _keep_project_owners(session, user)
    session.delete(user)
    audit.record(session, actor, "user.delete", target_type="user", target=name)
    commit(session, "error.conflict")


def reset_password(session: Session, actor: Actor, name: str, password: str) -> None:
    """An administrator sets a new password; the user's login sessions end."""
    require_admin(actor)
    check_password_rules(name, password)
    password_hash = hash_password(password)  # before the first query, as in create_user
    user = get_user(session, name)
    user.password_hash = password_hash
    user.password_changed_at = utcnow()
    revoke_tokens(session, user, kinds=("session",))
    audit.record(session, actor, "user.reset_password", target_type="user", target=name)
    commit(session, "error.conflict")


def update_me(
    session: Session,
    actor: Actor,
    *,
    display_name: str | None = None,
    email: str | None = None,
    language: str | None = None,
) -> User:
    user = session.get_one(User, actor.account.id)
    diff = _apply(user, UserChanges(display_name=display_name, email=email))
    if language is not None and language != user.language:
        diff["language"] = [user.language, language]
        user.language = language
    if diff:
        audit.record(
            session, actor, "user.update_self", target_type="user", target=user.name, detail=diff
        )
    commit(session, "error.conflict")
    return user


def bootstrap_admin(session: Session, name: str, password: str) -> bool:
    """Create the first administrator when there are no users at all. True if created."""
    if session.scalar(select(func.count()).select_from(User)):
        return False
    session.add(User(name=name, password_hash=hash_password(password), is_admin=True))
    audit.record(
        session,
        Actor(user=None),
        "user.bootstrap_admin",
        target_type="user",
        target=name,
        actor_name="system",
    )
    session.commit()
    return True


def check_password_rules(name: str, password: str) -> None:
    if password.lower() == name.lower():
        raise InvalidInput("error.password_is_name", field="password")


def _apply(user: User, changes: UserChanges) -> dict[str, list[object]]:
    diff: dict[str, list[object]] = {}
    for field in ("display_name", "email", "is_admin", "is_disabled"):
        value = getattr(changes, field)
        if value is not None and value != getattr(user, field):
            diff[field] = [getattr(user, field), value]
            setattr(user, field, value)
    return diff


def _keep_an_admin(session: Session, leaving: User) -> None:
    """Refuse to remove the last enabled administrator. The rows are locked, so two
    administrators demoting each other at once cannot both succeed (PostgreSQL reads
    committed rows; SQLite writers are serial already)."""
    # Lock every enabled admin, the leaving one too, always in the same order: two admins
    # demoting each other then queue instead of deadlocking.
    admins = session.scalars(
        select(User.id)
        .where(User.is_admin.is_(True), User.is_disabled.is_(False))
        .order_by(User.id)
        .with_for_update()
    ).all()
    if not [admin for admin in admins if admin != leaving.id]:
        raise Conflict("error.last_admin")


def _keep_project_owners(session: Session, leaving: User) -> None:
    """Refuse to delete the last owner of a project: nobody could manage it afterwards."""
    owned = select(Membership.project_id).where(
        Membership.user_id == leaving.id, Membership.role == ProjectRole.owner
    )
    other_owners = select(Membership.project_id).where(
        Membership.role == ProjectRole.owner, Membership.user_id != leaving.id
    )
    orphaned = session.scalars(
        select(Project.name).where(Project.id.in_(owned), Project.id.not_in(other_owners))
    ).all()
    if orphaned:
        raise Conflict("error.user_sole_owner", projects=", ".join(orphaned))


def revoke_tokens(
    session: Session, user: User, *, kinds: tuple[str, ...], keep_token_id: int | None = None
) -> None:
    query = update(ApiToken).where(
        ApiToken.user_id == user.id, ApiToken.kind.in_(kinds), ApiToken.revoked_at.is_(None)
    )
    if keep_token_id is not None:
        query = query.where(ApiToken.id != keep_token_id)
    session.execute(query.values(revoked_at=utcnow()))

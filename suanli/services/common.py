"""Small helpers shared by the services."""

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suanli.core.errors import Conflict, Forbidden
from suanli.services.actor import Actor


def require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden("error.admin_only")


def commit(session: Session, conflict_key: str, **params: object) -> None:
    """Commit; a unique constraint lost to a concurrent request becomes a 409, not a 500."""
    try:
        session.commit()
    except IntegrityError as error:
        session.rollback()
        raise Conflict(conflict_key, **params) from error

"""Who is acting and from where: what every audit event records."""

from dataclasses import dataclass

from suanli.core.errors import Unauthenticated
from suanli.db.models import User


@dataclass(frozen=True)
class Actor:
    user: User | None
    address: str = ""

    @property
    def name(self) -> str:
        return self.user.name if self.user else ""

    @property
    def account(self) -> User:
        """The signed-in user; only the login route runs without one."""
        if self.user is None:
            raise Unauthenticated()
        return self.user

    @property
    def is_admin(self) -> bool:
        return bool(self.user and self.user.is_admin)

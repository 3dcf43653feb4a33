"""Project roles and what each may do."""

from enum import StrEnum


class ProjectRole(StrEnum):
    viewer = "viewer"
    member = "member"
    owner = "owner"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: "ProjectRole") -> bool:
        return self.rank >= other.rank


_RANK = {ProjectRole.viewer: 0, ProjectRole.member: 1, ProjectRole.owner: 2}

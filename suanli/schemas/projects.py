"""Projects, members and quotas."""

from datetime import datetime
from typing import Annotated

from pydantic import Field

from suanli.core.roles import ProjectRole
from suanli.schemas.jobs import Duration
from suanli.schemas.types import (
    MAX_BYTES,
    Flag,
    Name,
    RequestModel,
    ResponseModel,
    ShortText,
    count,
    text,
)

Description = text(max_length=2000)
Gpus = count(maximum=1_000_000)
Cpus = Annotated[float, Field(ge=0, le=100_000_000, allow_inf_nan=False, strict=True)]
Bytes = count(maximum=MAX_BYTES)


class ProjectListQuery(RequestModel):
    include_archived: bool = False


class QuotaOut(ResponseModel):
    """None means no limit beyond the cluster's own capacity."""

    guaranteed_gpus: int
    max_gpus: int | None
    max_gpus_per_user: int | None
    cpus: float | None
    memory_bytes: int | None
    storage_bytes: int | None
    # How long a dev environment of the project may run (seconds).
    devenv_max_lifetime_seconds: int | None = None
    updated_at: datetime


class QuotaUpdate(RequestModel):
    """Only the fields present change; null lifts a limit."""

    guaranteed_gpus: Gpus | None = None
    max_gpus: Gpus | None = None
    max_gpus_per_user: Gpus | None = None
    cpus: Cpus | None = None
    memory_bytes: Bytes | None = None
    storage_bytes: Bytes | None = None
    devenv_max_lifetime_seconds: Duration | None = None


class ProjectCreate(RequestModel):
    name: Name
    display_name: ShortText = ""
    description: Description = ""
    # Administrators may name the first owner; otherwise the creator owns the project.
    owner: Name | None = None


class ProjectUpdate(RequestModel):
    name: Name | None = None
    display_name: ShortText | None = None
    description: Description | None = None
    # Whether the project's owners may open their members' dev environments (web and SSH).
    owners_open_devenvs: Flag | None = None


class ProjectOut(ResponseModel):
    name: str
    display_name: str
    description: str
    created_at: datetime
    archived_at: datetime | None
    my_role: ProjectRole | None
    member_count: int
    owners_open_devenvs: bool = False
    quota: QuotaOut


class MemberAdd(RequestModel):
    user: Name
    role: ProjectRole = ProjectRole.member


class MemberUpdate(RequestModel):
    role: ProjectRole


class MemberOut(ResponseModel):
    user: str
    display_name: str
    role: ProjectRole
    created_at: datetime


class EnergyOut(ResponseModel):
    """GPU energy of the project's jobs (power integrated over their GPUs; a fraction counts
    its share), in watt-hours: in total and per user."""

    total_wh: float
    by_user: dict[str, float]

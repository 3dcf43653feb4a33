"""Deployments: a replica's template, how many to keep running, and what users get back."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from suanli.schemas.jobs import (
    Command,
    Duration,
    Environment,
    JobOut,
    Launcher,
    Priority,
    Resources,
    Workdir,
)
from suanli.schemas.types import Flag, Name, RequestModel, ResponseModel, count, text

MAX_REPLICAS = 64
Health = Literal["ready", "starting", "failing", "stopping", "stopped"]


class ReplicaSpec(RequestModel):
    """One replica: a command (or script) that runs until stopped, with its resources. A
    replica that ends is replaced (after a backoff when replicas keep failing)."""

    command: Command | None = None
    script: text(min_length=1, max_length=100_000) | None = None
    workdir: Workdir | None = None
    env: Environment = Field(default_factory=dict)
    resources: Resources = Resources()
    launcher: Launcher = "none"
    pool: Name | None = None
    priority: Priority = "normal"
    # Serving work: by default not preempted for batch work.
    preemptible: Flag = False
    max_duration: Duration | None = None

    @model_validator(mode="after")
    def _command_or_script(self) -> "ReplicaSpec":
        if (self.command is None) == (self.script is None):
            raise PydanticCustomError("command_or_script", "give either a command or a script")
        return self


class DeploymentSpec(RequestModel):
    project: Name
    name: Name
    replicas: count(maximum=MAX_REPLICAS) = 1
    template: ReplicaSpec


class DeploymentScale(RequestModel):
    replicas: count(maximum=MAX_REPLICAS)


class DeploymentListQuery(RequestModel):
    project: Name | None = None
    state: Literal["active", "stopped"] | None = None


class DeploymentOut(ResponseModel):
    id: int
    name: str
    project: str
    user: str
    state: str
    replicas: int  # wanted
    running: int
    starting: int  # pending, admitted or starting
    failures: int  # replicas that ended by themselves in a row
    next_start_at: datetime | None  # the next replacement waits until then
    created_at: datetime
    # One word for how it is doing: every shell shows and colours this one.
    health: Health


class DeploymentDetailOut(DeploymentOut):
    template: dict[str, Any]
    workloads: list[JobOut]

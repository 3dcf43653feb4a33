"""Dev environments: the spec users create them from, and what they get back; SSH keys."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from suanli.schemas.data import DataRefs
from suanli.schemas.jobs import (
    Duration,
    Environment,
    EventOut,
    JobOut,
    Priority,
    Resources,
    Workdir,
)
from suanli.schemas.types import Flag, Name, RequestModel, ResponseModel, ShortText, text

Tool = Literal["jupyter", "terminal", "vscode", "ssh"]
DEFAULT_TOOLS: list[Tool] = ["jupyter", "terminal", "ssh"]


class DevEnvSpec(RequestModel):
    """A dev environment: resources like a job's (one node), the tools wanted, and where it
    starts. It runs until stopped, culled when idle, or its project's maximum lifetime."""

    project: Name
    # Also the SSH user name: `ssh <name>@<server> -p <port>`.
    name: Name
    resources: Resources = Resources()
    tools: Annotated[list[Tool], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: list(DEFAULT_TOOLS)
    )
    # A virtual or conda environment the administrator prepared (settings
    # `devenv_environments`); empty: the server's own Python.
    environment: Name | None = None
    workdir: Workdir | None = None
    env: Environment = Field(default_factory=dict)
    pool: Name | None = None
    priority: Priority = "normal"
    # Someone is working in it: by default it is not preempted for other work.
    preemptible: Flag = False
    # Stopped after this long without kernel, terminal or SSH activity; at most the
    # server's `devenv_idle_timeout_seconds`. Empty: the server's.
    idle_timeout: Duration | None = None
    # Stopped after this long in any case; at most the project's maximum lifetime.
    max_duration: Duration | None = None
    # Mounted read-only in its folder, as a job's (datasets/<name>, models/<name>).
    datasets: DataRefs = Field(default_factory=list)
    models: DataRefs = Field(default_factory=list)

    @field_validator("resources")
    @classmethod
    def _one_node(cls, resources: Resources) -> Resources:
        if resources.nodes != 1:
            raise PydanticCustomError("devenv_nodes", "a dev environment runs on one node")
        return resources

    @field_validator("tools")
    @classmethod
    def _distinct(cls, tools: list[Tool]) -> list[Tool]:
        if len(set(tools)) != len(tools):
            raise PydanticCustomError("devenv_tools", "name each tool once")
        return tools


class DevEnvListQuery(RequestModel):
    project: Name | None = None
    user: Name | None = None
    state: Literal["active", "finished"] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class SshAccessOut(ResponseModel):
    """How to reach it over SSH, and a ready `~/.ssh/config` entry."""

    host: str
    port: int
    user: str
    command: str
    config: str


class DevEnvOut(JobOut):
    tools: list[str]
    environment: str | None
    # Browser paths of the tools that are up (through the server's proxy), by tool.
    urls: dict[str, str]
    ssh: SshAccessOut | None
    idle_timeout_seconds: int | None
    max_duration_seconds: int | None


class DevEnvDetailOut(DevEnvOut):
    spec: dict[str, Any]
    history: list[EventOut]


class SshKeyAdd(RequestModel):
    # One line as in ~/.ssh/id_ed25519.pub: "<type> <base64> [comment]".
    public_key: text(min_length=1, max_length=16_384)
    name: ShortText = ""


class SshKeyOut(ResponseModel):
    id: int
    name: str
    algorithm: str
    fingerprint: str
    created_at: datetime
    last_used_at: datetime | None

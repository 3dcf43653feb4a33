"""Model services: what a user deploys (an engine and a model version, or a command that
listens on a port), how many replicas and how they scale, and what users get back; API keys,
usage and prompt templates."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from suanli.schemas.data import DataRef
from suanli.schemas.deployments import MAX_REPLICAS, Health
from suanli.schemas.jobs import Command, Duration, Environment, JobOut, Priority, Resources
from suanli.schemas.types import Flag, Name, RequestModel, ResponseModel, count, text

Protocol = Literal["openai", "http", "grpc", "tcp"]
REPLICAS_PATTERN = r"^([0-9]{1,2})(\.\.([0-9]{1,2}))?$"
HEALTH_PATTERN = r"^/[A-Za-z0-9._~/%-]{0,200}$"
Argument = text(max_length=4096)
# The names a key may call: services of its project.
ModelNames = Annotated[list[Name], Field(min_length=1, max_length=100)]


def _replicas(value: Any) -> Any:
    """`2` or `"1..4"`: one number for a fixed count, a range to autoscale in."""
    if isinstance(value, bool):
        raise PydanticCustomError("replicas", "give a number or a range such as 0..4")
    if isinstance(value, int):
        return f"{value}"
    return value


def replica_range(value: str) -> tuple[int, int]:
    match = re.fullmatch(REPLICAS_PATTERN, value)
    if match is None:
        raise ValueError(value)
    low = int(match.group(1))
    high = int(match.group(3)) if match.group(3) is not None else low
    return low, high


def _range(value: str) -> str:
    low, high = replica_range(value)
    if high > MAX_REPLICAS:
        raise PydanticCustomError(
            "replicas_too_many", "at most {maximum} replicas", {"maximum": MAX_REPLICAS}
        )
    if high < low or high == 0:
        raise PydanticCustomError(
            "replicas_range", "the maximum must be at least the minimum, and at least 1"
        )
    return value


Replicas = Annotated[
    str,
    BeforeValidator(_replicas),
    Field(pattern=REPLICAS_PATTERN, json_schema_extra={"examples": ["1", "0..4"]}),
    AfterValidator(_range),
]


class Scaling(RequestModel):
    """How replicas follow the traffic between the minimum and the maximum: `target` of the
    `metric` per replica (requests in flight, or requests per second), a scale-up after the
    need held `up_delay`, a scale-down after `down_delay`; with a minimum of 0, no replica
    after `idle_after` without a request."""

    metric: Literal["inflight", "rps"] = "inflight"
    target: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)] = 4.0
    up_delay: Annotated[int, Field(ge=0, le=3600, strict=True)] = 10
    down_delay: Annotated[int, Field(ge=0, le=86400, strict=True)] = 120
    idle_after: Duration = 600


class ServiceTemplate(RequestModel):
    """One replica of a service: an engine the administrator registered serving a model
    version, or a command of the user's own that listens on $PORT (any HTTP, gRPC or TCP
    server)."""

    engine: Name | None = None
    command: Command | None = None
    model: DataRef | None = None
    args: Annotated[list[Argument], Field(max_length=200)] = Field(default_factory=list)
    env: Environment = Field(default_factory=dict)
    resources: Resources = Resources()
    protocol: Protocol | None = None  # None: the engine's (a command's: http)
    health: text(max_length=201, pattern=HEALTH_PATTERN) | None = None
    pool: Name | None = None
    priority: Priority = "normal"
    # Serving work: by default not preempted for batch work.
    preemptible: Flag = False
    max_duration: Duration | None = None

    @model_validator(mode="after")
    def _engine_or_command(self) -> "ServiceTemplate":
        if (self.engine is None) == (self.command is None):
            raise PydanticCustomError("engine_or_command", "give either an engine or a command")
        return self


class ServiceSpec(ServiceTemplate):
    """A service as deployed: its name (the model name callers use), project, replicas."""

    project: Name
    name: Name
    replicas: Annotated[Replicas, Field(description="a number, or min..max to autoscale")] = "1"
    scaling: Scaling = Scaling()

    def template(self) -> ServiceTemplate:
        fields = set(ServiceTemplate.model_fields)
        return ServiceTemplate.model_validate(self.model_dump(include=fields))


class ServiceUpdate(RequestModel):
    """A rolling update: the fields given replace the template's; replicas are replaced one
    at a time, each new one ready before an old one stops."""

    model: DataRef | None = None
    args: Annotated[list[Argument], Field(max_length=200)] | None = None
    env: Environment | None = None
    resources: Resources | None = None
    replicas: Replicas | None = None
    scaling: Scaling | None = None


class ServiceListQuery(RequestModel):
    project: Name | None = None


class ReplicaOut(JobOut):
    ready: bool
    # Made from the service's current template (False: an old one a rolling update replaces).
    current: bool = True


class ServiceOut(ResponseModel):
    id: int
    name: str
    project: str
    user: str
    state: str
    model: str  # the version served (project/name@number), empty for a command
    engine: str
    protocol: str
    replicas: int  # wanted now
    min_replicas: int
    max_replicas: int
    ready: int
    running: int
    starting: int
    failures: int
    next_start_at: datetime | None
    created_at: datetime
    health: Health
    # Why it is not ready, in plain words (the last replica's exit, waiting for capacity).
    reason: str


class ServiceDetailOut(ServiceOut):
    template: dict[str, Any]
    scaling: dict[str, Any] | None
    replicas_list: list[ReplicaOut]
    # How to call it: the gateway's base URL and model name, or the proxy's path.
    endpoint: str


class EngineOut(ResponseModel):
    name: str
    version: str
    protocol: str
    needs_model: bool


class ServiceKeySpec(RequestModel):
    project: Name
    name: Name
    models: ModelNames | None = None  # None: every service of the project
    expires_in: Duration | None = None
    requests_per_minute: count(minimum=1, maximum=1_000_000) | None = None
    tokens_per_minute: count(minimum=1, maximum=2**31 - 1) | None = None
    token_budget: count(minimum=1, maximum=2**53 - 1) | None = None
    budget_period: Literal["day", "month"] = "month"


class ServiceKeyOut(ResponseModel):
    id: int
    project: str
    name: str
    user: str
    prefix: str
    models: list[str] | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    token_budget: int | None
    budget_period: str
    used_in_period: int
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ServiceKeyCreated(ServiceKeyOut):
    key: str  # shown once


class UsageQuery(RequestModel):
    project: Name
    service: Name | None = None
    since: datetime | None = None
    until: datetime | None = None
    group: Literal["hour", "day"] = "hour"


class UsageRow(ResponseModel):
    period: datetime
    model: str
    user: str
    key: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    counted: int  # requests whose tokens were counted with the tokenizer
    ttft_ms_avg: float | None


class PromptSpec(RequestModel):
    """A new version of a project's prompt template. Variables are {name} in the template."""

    system: text(max_length=20000) = ""
    template: text(min_length=1, max_length=20000)
    parameters: dict[str, float | int] = Field(default_factory=dict, max_length=10)


class PromptOut(ResponseModel):
    id: int
    project: str
    name: str
    version: int
    system: str
    template: str
    variables: list[str]
    parameters: dict[str, Any]
    user: str
    created_at: datetime


class SweepSpec(RequestModel):
    """A load sweep: vLLM's serving benchmark through the gateway at concurrency 1, 2, 4, …
    up to `max_concurrency`, `prompts` requests at each, random prompts of `input_len`
    tokens asking for `output_len`."""

    max_concurrency: count(minimum=1, maximum=256) = 8
    prompts: count(minimum=1, maximum=10_000) = 16
    input_len: count(minimum=1, maximum=32_768) = 128
    output_len: count(minimum=1, maximum=32_768) = 64


class PointOut(ResponseModel):
    concurrency: int
    requests_per_second: float
    output_tokens_per_second: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tpot_p50_ms: float
    tpot_p95_ms: float
    completed: int
    failed: int


class SweepOut(ResponseModel):
    id: int
    service: str
    state: str  # running | succeeded | failed
    params: dict[str, Any]
    points: list[PointOut]
    error: str
    job_id: int | None
    user: str
    created_at: datetime
    finished_at: datetime | None


class SizingQuery(RequestModel):
    rps: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
    ttft_p95_ms: Annotated[float, Field(gt=0, le=3_600_000, allow_inf_nan=False)]
    # A query parameter: a string to be read as a number (not strict).
    sweep: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class SizingOut(ResponseModel):
    sweep_id: int
    replicas: int | None  # None: no measured concurrency meets the latency
    concurrency: int | None  # per replica, at which the latency holds
    requests_per_second_per_replica: float | None
    gpus: float | None  # the replicas' GPUs, as the service asks per replica
    best_ttft_p95_ms: float  # the lowest TTFT p95 measured

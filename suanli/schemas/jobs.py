"""Jobs: the spec users submit (as JSON, a YAML file or CLI flags: one schema) and what they
get back."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from suanli.core.durations import parse_duration
from suanli.core.quantities import parse_bytes
from suanli.schemas.types import (
    MAX_BYTES,
    MAX_INT32,
    Flag,
    Name,
    RequestModel,
    ResponseModel,
    ShortText,
    count,
    text,
)

# Plain spaces, not \s: regex dialects disagree about \s (see types.EMAIL_PATTERN).
SIZE_PATTERN = r"^ *\d+(\.\d+)? *([kKmMgGtTpP][iI]?)?[bB]? *$"
DURATION_PATTERN = r"^ *(\d+|(\d+ *[smhdSMHD] *)+)$"
MAX_DURATION = 366 * 86400


def _size(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not re.match(SIZE_PATTERN, value):
        raise PydanticCustomError("size_parsing", "must be bytes or a size like 512Mi, 16Gi, 2T")
    return parse_bytes(value)


def _duration(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not re.match(DURATION_PATTERN, value):
        raise PydanticCustomError("duration_parsing", "must be seconds or like 30m, 2h, 1d12h")
    return parse_duration(value)


def _number_or_text(maximum: int, pattern: str, example: str, minimum: int = 0) -> Any:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": minimum, "maximum": maximum},
                {"type": "string", "pattern": pattern, "examples": [example]},
            ]
        }
    )


# Bytes as a number or as text like "16Gi"; seconds as a number or as text like "2h30m".
Size = Annotated[
    int,
    BeforeValidator(_size),
    Field(ge=0, le=MAX_BYTES, strict=True),
    _number_or_text(MAX_BYTES, SIZE_PATTERN, "16Gi"),
]
Duration = Annotated[
    int,
    BeforeValidator(_duration),
    Field(ge=1, le=MAX_DURATION, strict=True),
    _number_or_text(MAX_DURATION, DURATION_PATTERN, "2h30m", minimum=1),
]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Priority = Literal["high", "normal", "low"]
Command = Annotated[list[text(min_length=1, max_length=4096)], Field(min_length=1, max_length=1000)]
DEFAULT_MEMORY = 4 * 2**30


Launcher = Literal["none", "torchrun", "deepspeed", "mpirun"]


class Resources(RequestModel):
    """Whole GPUs (`gpus`, optionally of `gpu_model`), or one fraction of a shared GPU
    (`gpu_memory` and/or `gpu_compute_percent`), plus CPUs and memory. With `nodes` > 1
    (a cluster engine such as Slurm) GPUs, CPUs and memory are per node."""

    nodes: count(minimum=1, maximum=1024) = 1
    gpus: count(maximum=1024) = 0
    gpu_model: ShortText | None = None
    gpu_memory: Size | None = None
    gpu_compute_percent: Annotated[int, Field(ge=1, le=100, strict=True)] | None = None
    cpus: Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False, strict=True)] = 1.0
    memory: Size = DEFAULT_MEMORY

    @model_validator(mode="after")
    def _whole_or_fraction(self) -> "Resources":
        if self.gpus and (self.gpu_memory or self.gpu_compute_percent):
            raise PydanticCustomError(
                "gpu_whole_and_fraction", "ask for whole GPUs or for a fraction of one, not both"
            )
        if self.nodes > 1 and (self.gpu_memory or self.gpu_compute_percent):
            raise PydanticCustomError(
                "fraction_on_many_nodes", "a GPU fraction runs on one node: nodes must be 1"
            )
        return self

    @property
    def is_fraction(self) -> bool:
        return bool(self.gpu_memory or self.gpu_compute_percent)


class JobSpec(RequestModel):
    """A job: a command (argument vector) or a script, where and how to run it."""

    project: Name
    name: ShortText = ""
    command: (
        Annotated[list[text(min_length=1, max_length=4096)], Field(min_length=1, max_length=1000)]
        | None
    ) = None
    script: text(min_length=1, max_length=100_000) | None = None
    workdir: text(min_length=1, max_length=4096) | None = None
    env: Annotated[dict[EnvName, text(max_length=32_768)], Field(max_length=200)] = Field(
        default_factory=dict
    )
    resources: Resources = Resources()
    # How the command is started on each node: `torchrun` / `deepspeed` start one process per
    # GPU, `mpirun` one MPI rank per GPU, `none` runs the command once per node. Each gets the
    # rendezvous environment (MASTER_ADDR, MASTER_PORT, NODE_RANK, NNODES, ...).
    launcher: Launcher = "none"
    # The resource pool (a Slurm partition) to run in; empty: the cluster's default.
    pool: Name | None = None
    priority: Priority = "normal"
    max_duration: Duration | None = None
    retries: count(maximum=10) = 0
    preemptible: Flag = True

    @model_validator(mode="after")
    def _command_or_script(self) -> "JobSpec":
        if (self.command is None) == (self.script is None):
            raise PydanticCustomError("command_or_script", "give either a command or a script")
        return self


class JobListQuery(RequestModel):
    # Workload kinds share one table; this lists jobs (dev environments: /devenvs).
    kind: Literal["job"] = "job"
    project: Name | None = None
    user: Name | None = None
    state: (
        Literal[
            "pending",
            "admitted",
            "starting",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "active",
            "finished",
        ]
        | None
    ) = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    # Paging, newest first: jobs older than this id.
    before_id: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = None


class PendingOut(ResponseModel):
    code: str
    message: str
    position: int


class ExitOut(ResponseModel):
    reason: str
    exit_code: int | None
    signal: int | None
    detail: str
    message: str


class GpuShareOut(ResponseModel):
    uuid: str
    memory_bytes: int = 0
    compute_percent: int = 0


class PlacementOut(ResponseModel):
    node: str
    gpus: list[GpuShareOut]


class EventOut(ResponseModel):
    at: datetime
    state: str
    detail: str


class JobOut(ResponseModel):
    id: int
    name: str
    project: str
    user: str
    state: str
    priority: str
    gpus: float
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    pending: PendingOut | None
    exit: ExitOut | None
    placement: PlacementOut | None
    warnings: list[str]
    # Of the last attempt, once it ended: cpu_seconds, max_rss_bytes, memory_peak_bytes,
    # wall_seconds (what the backend could measure).
    usage: dict[str, float]
    # GPU energy so far (power integrated over the job's GPUs; a fraction: its share).
    energy_wh: float = 0.0


class JobDetailOut(JobOut):
    spec: dict[str, Any]
    history: list[EventOut]


class LogQuery(RequestModel):
    offset: Annotated[int, Field(ge=0, le=MAX_BYTES)] = 0
    tail: Annotated[int, Field(ge=1, le=100_000)] | None = None
    limit: Annotated[int, Field(ge=1, le=8 * 2**20)] = 2**20

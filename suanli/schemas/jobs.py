"""Jobs: the spec users submit (as JSON, a YAML file or CLI flags: one schema) and what they
get back."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from suanli.core.durations import parse_duration
from suanli.core.quantities import parse_bytes
from suanli.schemas.data import DataRefs
from suanli.schemas.types import (
    MAX_BYTES,
    MAX_INT32,
    NO_NUL_PATTERN,
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
Priority = Literal["high", "normal", "low"]
DEFAULT_MEMORY = 4 * 2**30

# Rules a workload meets at submit (docs/user-guide.md: checked at submit). A
# spec kept from before a rule existed must still load for the scheduler: validated with
# `context=STORED`, these rules are skipped.
STORED = {"stored": True}
# Less than this and the kernel kills the workload before its program has started.
MIN_MEMORY = 16 * 2**20
# Linux refuses to start a program whose arguments and environment together exceed ARG_MAX
# (2 MiB with the usual 8 MiB stack) or one string over 128 KiB ("Argument list too long"):
# these caps leave room for what the platform adds, and are far above real use.
MAX_COMMAND_BYTES = 256 * 1024
MAX_ENV_VARIABLES = 200
MAX_ENV_VALUE = 32 * 1024  # characters
MAX_ENV_BYTES = 64 * 1024  # all of NAME=value, in UTF-8
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# An absolute path in which no component is "..": a workload starts where it says, not
# somewhere it climbs to. Written without lookarounds, which some regex dialects lack.
_SEGMENT = r"(?:[^./\x00][^/\x00]*|\.(?:[^./\x00][^/\x00]*)?|\.\.[^/\x00]+)?"
WORKDIR_PATTERN = rf"^(?:/{_SEGMENT})+$"
# Variables the platform sets itself, or that would let a workload load code into the
# platform's own processes (the launchers, a dev environment's agent) or reach devices and
# MPS servers it was not given: (name or prefix ending in "_", the reason's error type).
RESERVED_VARIABLES = (
    ("SUANLI_", "env_platform"),
    ("CUDA_MPS_", "env_mps"),
    ("CUDA_VISIBLE_DEVICES", "env_devices"),
    ("NVIDIA_VISIBLE_DEVICES", "env_devices"),
    ("LD_PRELOAD", "env_loader"),
    ("LD_LIBRARY_PATH", "env_loader"),
    ("LD_AUDIT", "env_loader"),
)


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def variable_problem(name: str) -> str | None:
    """Why a workload may not set the environment variable `name` (an error type, whose
    message is `validation.<type>`), or None when it may."""
    if not re.fullmatch(ENV_NAME_PATTERN, name):
        return "env_name"
    for reserved, problem in RESERVED_VARIABLES:
        if name == reserved or (reserved.endswith("_") and name.startswith(reserved)):
            return problem
    return None


def _environment(env: dict[str, str], info: ValidationInfo) -> dict[str, str]:
    """Every refused name is reported at `env.<NAME>`; then the size of the whole."""
    if _stored(info):
        return env
    refused = [
        InitErrorDetails(
            type=PydanticCustomError(problem, "may not be set: {name}", {"name": name}),
            loc=(name,),
            input=name,
        )
        for name in env
        if (problem := variable_problem(name))
    ]
    if refused:
        raise ValidationError.from_exception_data("env", refused)
    size = sum(len(f"{name}={value}".encode()) + 1 for name, value in env.items())
    if size > MAX_ENV_BYTES:
        raise PydanticCustomError(
            "env_too_large",
            "the variables take {size_kib} KiB; at most {limit_kib} KiB",
            {"size_kib": -(-size // 1024), "limit_kib": MAX_ENV_BYTES // 1024},
        )
    return env


def _command(command: list[str], info: ValidationInfo) -> list[str]:
    size = sum(len(argument.encode()) + 1 for argument in command)
    if size > MAX_COMMAND_BYTES and not _stored(info):
        raise PydanticCustomError(
            "command_too_large",
            "the arguments take {size_kib} KiB; at most {limit_kib} KiB",
            {"size_kib": -(-size // 1024), "limit_kib": MAX_COMMAND_BYTES // 1024},
        )
    return command


def _workdir(path: str, info: ValidationInfo) -> str:
    if not re.fullmatch(WORKDIR_PATTERN, path) and not _stored(info):
        raise PydanticCustomError("workdir_path", "must be an absolute path without '..'")
    return path


def _memory(value: int, info: ValidationInfo) -> int:
    if value < MIN_MEMORY and not _stored(info):
        raise PydanticCustomError("memory_too_small", "must be at least {min}", {"min": "16Mi"})
    return value


# The environment of a workload (jobs and dev environments alike).
Environment = Annotated[
    dict[str, text(max_length=MAX_ENV_VALUE)],
    Field(max_length=MAX_ENV_VARIABLES),
    AfterValidator(_environment),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_ENV_VARIABLES,
            "propertyNames": {"pattern": ENV_NAME_PATTERN},
            "additionalProperties": {
                "type": "string",
                "maxLength": MAX_ENV_VALUE,
                "pattern": NO_NUL_PATTERN,
            },
        }
    ),
]
Command = Annotated[
    list[text(min_length=1, max_length=4096)],
    Field(min_length=1, max_length=1000),
    AfterValidator(_command),
]
Workdir = Annotated[
    text(min_length=1, max_length=4096),
    AfterValidator(_workdir),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": WORKDIR_PATTERN}
    ),
]
Memory = Annotated[
    int,
    BeforeValidator(_size),
    Field(ge=0, le=MAX_BYTES, strict=True),
    AfterValidator(_memory),
    _number_or_text(MAX_BYTES, SIZE_PATTERN, "16Gi", minimum=MIN_MEMORY),
]


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
    memory: Memory = DEFAULT_MEMORY

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
    command: Command | None = None
    script: text(min_length=1, max_length=100_000) | None = None
    workdir: Workdir | None = None
    env: Environment = Field(default_factory=dict)
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
    # Mounted read-only in its folder: datasets/<name> and models/<name>. Each is
    # `[project/]name[@version or tag]` (default: the job's project, `latest`), fixed at submit.
    datasets: DataRefs = Field(default_factory=list)
    models: DataRefs = Field(default_factory=list)

    @model_validator(mode="after")
    def _command_or_script(self) -> "JobSpec":
        if (self.command is None) == (self.script is None):
            raise PydanticCustomError("command_or_script", "give either a command or a script")
        return self


class JobListQuery(RequestModel):
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

"""Fine-tuning runs: what a user asks for (the same spec from the console's form, a YAML file
or the API) and what they get back. The names follow LLaMA-Factory's, which its users know;
suanli.finetune.config turns a spec into LLaMA-Factory's own YAML."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from suanli.schemas.data import DataRef, DataRefs
from suanli.schemas.jobs import (
    Duration,
    Environment,
    EventOut,
    ExitOut,
    PendingOut,
    Priority,
    Resources,
)
from suanli.schemas.types import (
    Flag,
    Name,
    RequestModel,
    ResponseModel,
    ShortText,
    count,
    text,
)

Stage = Literal["sft", "dpo", "pt"]
Method = Literal["lora", "freeze", "full"]
ComputeType = Literal["bf16", "fp16", "fp32"]
Scheduler = Literal[
    "linear", "cosine", "constant", "constant_with_warmup", "polynomial", "cosine_with_restarts"
]
# LLaMA-Factory's chat templates for text models (its data/template.py), the ones a form offers.
TEMPLATES = (
    "default", "empty", "alpaca", "baichuan2", "chatglm3", "chatml", "cohere", "deepseek",
    "deepseek3", "deepseekr1", "deepseekcoder", "falcon", "gemma", "gemma2", "gemma3", "glm4",
    "gpt_oss", "granite3", "intern2", "llama2", "llama2_zh", "llama3", "llama4", "mistral",
    "ministral", "olmo", "openchat", "phi", "phi4", "qwen", "qwen3", "qwen3_nothink", "smollm2",
    "vicuna", "yi", "zephyr",
)  # fmt: skip
Template = Literal[TEMPLATES]  # type: ignore[valid-type]
# A module name LoRA or freeze targets (q_proj, mlp), or `all`.
Module = text(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
Modules = Annotated[list[Module], Field(min_length=1, max_length=32)]
BUILTIN_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
Builtin = text(max_length=64, pattern=BUILTIN_PATTERN)
MAX_PROMPTS = 20


def _number(minimum: float, maximum: float, *, open_low: bool = False) -> Any:
    low = {"gt": minimum} if open_low else {"ge": minimum}
    return Annotated[float, Field(le=maximum, allow_inf_nan=False, **low)]


class Training(RequestModel):
    """The hyper-parameters, as LLaMA-Factory names them (in brackets where it differs)."""

    learning_rate: _number(0, 1, open_low=True) = 1e-4
    epochs: _number(0, 1000, open_low=True) = 3.0  # num_train_epochs
    batch_size: count(minimum=1, maximum=1024) = 2  # per_device_train_batch_size
    gradient_accumulation: count(minimum=1, maximum=1024) = 4
    cutoff_len: count(minimum=16, maximum=131072) = 1024
    lr_scheduler: Scheduler = "cosine"  # lr_scheduler_type
    warmup_ratio: _number(0, 0.5) = 0.1
    val_size: Annotated[float, Field(ge=0, lt=0.5, allow_inf_nan=False)] = 0.0
    logging_steps: count(minimum=1, maximum=100_000) = 5
    save_steps: count(minimum=1, maximum=1_000_000) = 100
    compute_type: ComputeType = "bf16"
    max_samples: count(minimum=1, maximum=100_000_000) | None = None
    seed: count(maximum=2**31 - 1) = 42
    pref_beta: _number(0, 10, open_low=True) = 0.1  # DPO's beta


class Lora(RequestModel):
    """LoRA's adapter; with `quantization_bit`, QLoRA (the base loaded in 4 or 8 bits, which
    bitsandbytes does on a GPU only)."""

    rank: count(minimum=1, maximum=1024) = 8
    alpha: count(minimum=1, maximum=4096) | None = None  # None: twice the rank
    dropout: _number(0, 0.9) = 0.05
    target: Modules = Field(default_factory=lambda: ["all"])
    quantization_bit: Literal[4, 8] | None = None


class Freeze(RequestModel):
    """Which layers train when the rest stays frozen: the last n (positive) or the first n
    (negative) of the model's layers, and which of their modules."""

    trainable_layers: Annotated[int, Field(ge=-1024, le=1024, strict=True)] = 2
    trainable_modules: Modules = Field(default_factory=lambda: ["all"])

    @model_validator(mode="after")
    def _some_layers(self) -> "Freeze":
        if self.trainable_layers == 0:
            raise PydanticCustomError("freeze_layers", "train at least one layer (not 0)")
        return self


class DeepSpeed(RequestModel):
    """ZeRO across the run's GPUs: stage 2 shards optimiser states and gradients, stage 3 the
    weights too; `offload` moves them to host memory."""

    stage: Literal[0, 2, 3] = 0
    offload: Flag = False


class Identity(RequestModel):
    """What the built-in `identity` dataset teaches the model to call itself."""

    name: text(min_length=1, max_length=64)
    author: text(min_length=1, max_length=64)


class FinetuneSpec(RequestModel):
    """A fine-tuning run: a base model version, datasets, the stage, the method and its
    hyper-parameters, and the GPUs per node and nodes to run on."""

    project: Name
    name: ShortText = ""
    model: DataRef
    datasets: DataRefs = Field(default_factory=list)
    builtin_datasets: Annotated[list[Builtin], Field(max_length=16)] = Field(default_factory=list)
    identity: Identity | None = None
    stage: Stage = "sft"
    method: Method = "lora"
    template: Template = "default"
    training: Training = Training()
    lora: Lora = Lora()
    freeze: Freeze = Freeze()
    deepspeed: DeepSpeed = DeepSpeed()
    resources: Resources = Resources()
    output: Name | None = None  # the model repository the result goes to (default: the name)
    merge: Flag = True  # LoRA: also the merged weights, which an engine can serve
    keep_checkpoints: Flag = False
    # Added to the run's environment (a cache folder, a proxy for the trainer's own needs).
    env: Environment = Field(default_factory=dict)
    pool: Name | None = None
    priority: Priority = "normal"
    preemptible: Flag = True
    max_duration: Duration | None = None
    # Attempts after the first: a preempted or failed run starts again from its checkpoint.
    retries: count(maximum=10) = 2
    trainer: Name = "llamafactory"

    @model_validator(mode="after")
    def _consistent(self) -> "FinetuneSpec":
        if not self.datasets and not self.builtin_datasets:
            raise PydanticCustomError("no_dataset", "choose at least one dataset")
        if len(self.datasets) + len(self.builtin_datasets) > 16:
            raise PydanticCustomError("too_many_datasets", "at most 16 datasets")
        return self

    @property
    def models(self) -> list[str]:
        """The versions the run reads besides its datasets (services.jobs.submit)."""
        return [self.model]


class ComparePrompts(RequestModel):
    prompts: Annotated[list[text(min_length=1, max_length=4000)], Field(min_length=1)]

    @model_validator(mode="after")
    def _few(self) -> "ComparePrompts":
        if len(self.prompts) > MAX_PROMPTS:
            raise PydanticCustomError(
                "too_many_prompts", "at most {maximum} prompts", {"maximum": MAX_PROMPTS}
            )
        return self


class MetricsQuery(RequestModel):
    # Points after this step only: a live chart asks for what is new.
    after: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class ProgressOut(ResponseModel):
    current_steps: int
    total_steps: int
    percentage: float
    loss: float | None
    remaining_seconds: int | None


class OutputOut(ResponseModel):
    repository: str
    version: int
    ref: str  # project/name@version


class FinetuneOut(ResponseModel):
    id: int
    name: str
    project: str
    user: str
    state: str
    stage: str
    method: str
    model: str
    datasets: list[str]
    gpus: int
    nodes: int
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    progress: ProgressOut | None
    pending: PendingOut | None
    exit: ExitOut | None
    output: OutputOut | None
    # Of the last attempt, once it ended (as jobs show it): max_rss_bytes, memory_peak_bytes, …
    usage: dict[str, float] = Field(default_factory=dict)


class EstimateOut(ResponseModel):
    per_device_bytes: int
    available_bytes: int | None  # the memory of one device asked for, where known
    fits: bool | None
    parameters: int
    trainable_parameters: int
    parts: dict[str, int]
    warning: str = ""
    suggestion: str = ""
    suggested: dict[str, Any] | None = None  # the spec's changed fields that would fit


class FinetuneDetailOut(FinetuneOut):
    spec: dict[str, Any]
    history: list[EventOut]
    estimate: EstimateOut | None
    final_metrics: dict[str, float]
    yaml: str
    services: list[str] = Field(default_factory=list)
    # Of the result: none (yet) | registered | skipped (the run did not succeed) | failed
    registration: str = "none"
    registration_error: str = ""


class MetricPoint(ResponseModel):
    step: int
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    lr: float | None = None
    throughput: float | None = None  # tokens per second
    tokens: int | None = None  # seen so far


class MetricsOut(ResponseModel):
    points: list[MetricPoint]
    current_steps: int
    total_steps: int
    percentage: float
    elapsed_seconds: int | None
    remaining_seconds: int | None


class BuiltinDatasetOut(ResponseModel):
    name: str
    formatting: str
    stage: str
    rows: int
    licence: str
    description: str


class OptionsOut(ResponseModel):
    templates: list[str]
    stages: list[str]
    methods: list[str]
    schedulers: list[str]
    compute_types: list[str]
    trainers: list[str]


class Answer(ResponseModel):
    prompt: str
    base: str
    tuned: str


class CompareOut(ResponseModel):
    state: str  # none | pending | running | succeeded | failed | cancelled
    job: int | None
    prompts: list[str]
    answers: list[Answer]
    detail: str = ""

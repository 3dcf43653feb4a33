"""How much memory one device needs for a fine-tuning run, before the run is queued.

A run that does not fit fails minutes into its start (CUDA out of memory, or the kernel's OOM
killer on a CPU node) after waiting for its GPUs; saying so at submission, with the nearest
plan that fits, saves that. This is an estimate from the model's shape (its config.json) and
the plan, with no I/O: it follows what LLaMA-Factory 0.9.5 does with the memory of one device.

Per device, in bytes (P = the model's parameters, T = the trainable ones, N = all devices of
the run, nodes × GPUs per node, when DeepSpeed shards; b = bytes of the compute type, 2 for
bf16/fp16 and 4 for fp32):

weights
    The frozen parameters in the compute type (b each; a QLoRA base: 0.5 or 1 byte plus its
    quantisation constants, embeddings and lm_head left in the compute type), and the trainable
    ones in fp32: LLaMA-Factory upcasts trainable parameters to fp32 in place, so with mixed
    precision that fp32 copy is the master copy. Under DeepSpeed the model is held in the
    compute type instead (the master copy is the optimiser's), sharded over N at ZeRO-3, where
    two layers are gathered whole at a time (the one computing and the one prefetched). DPO
    keeps a frozen reference model, P × b more (sharded at ZeRO-3), except with LoRA, where
    the base with the adapter switched off is the reference.
gradients
    One per trainable parameter, fp32 (4 bytes; under DeepSpeed in the compute type, sharded
    over N from ZeRO-2 on).
optimizer
    AdamW's two moments in fp32, 2 × 4 bytes per trainable parameter; under DeepSpeed also the
    fp32 master weights (4 bytes), 12 in all, sharded over N from ZeRO-2 on. `offload` moves
    the optimiser states and the gradient partitions to host memory (ZeRO-Offload), and at
    ZeRO-3 the weights too.
activations
    Per token of a batch (batch × cutoff_len tokens, twice that for DPO's chosen and rejected
    answers): LLaMA-Factory turns gradient checkpointing on by default, so each layer keeps
    only its input (hidden × b bytes) and one layer's internals are alive at a time while it
    is recomputed (LAYER_GPU or LAYER_CPU × hidden bytes, a CPU's unfused kernels and fp32
    autocast copies keep more); the logits and the loss's fp32 copies of them take
    LOGITS_BYTES per vocabulary entry. Attention is not quadratic here: PyTorch's
    scaled-dot-product attention uses its flash kernels on both (on a CPU, batches of 8 × 256,
    2 × 1024 and 1 × 2048 tokens peak alike).
overhead
    On a GPU, the CUDA context and the caching allocator's slack (CUDA_OVERHEAD); on a CPU the
    process's own baseline, Python, torch, transformers and LLaMA-Factory loaded
    (CPU_OVERHEAD), since there the device's memory is the process's.

LoRA's trainable parameters: rank × (inputs + outputs) for each linear layer it targets
(LLaMA-Factory's `all`: the attention's q, k, v, o and the MLP's gate, up and down of every
layer). Freeze trains the whole last (or first) n layers. A mixture-of-experts model is
counted through its total parameters, which the safetensors header gives.

Calibration (CPU): CPU_OVERHEAD, LAYER_CPU and LOGITS_BYTES are fitted (least squares on
the relative error) to the peak RSS of 34 real runs, `CALIBRATION`, of LLaMA-Factory 0.9.5 on
torch 2.13.0+cpu: random Llamas of hidden 64 to 1024, 2 to 8 layers, a 512-token vocabulary
(tests/serving/tiny_model.py's tokenizer; 8192 to 32768 entries for the logits term), LoRA
rank 8 on all, freeze of 2 layers, full, bf16, batch 1 to 8 of samples truncated to cutoff_len
256 to 2048, and two DPO runs on the built-in dpo_demo. Each ran as
`/usr/bin/time -v llamafactory-cli train run.yaml` (use_cpu, template qwen, max_samples 40,
max_steps 4, report_to none, HF_HUB_OFFLINE=1), the peak being "Maximum resident set size".
The estimate is within 8 % of every one. The GPU constants are the usual figures
(Korthikanti et al. 2022 for a layer's activations), not measured here.
"""

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

GIB = 1 << 30
MIB = 1 << 20
CUDA_OVERHEAD = GIB
CPU_OVERHEAD = 590 * MIB  # fitted: see CALIBRATION
LAYER_GPU = 34  # bytes per hidden unit and token of one layer's internals, fp16/bf16
LAYER_CPU = 160  # fitted: see CALIBRATION
LOGITS_BYTES = 12  # bf16 logits, their fp32 copy, log-softmax, its gradient (fitted: 11.8)
ADAM_BYTES = 8
MASTER_BYTES = 4
QUANT_BYTES = {4: 0.5 + 0.03, 8: 1.0 + 0.03}  # bitsandbytes: weights + blockwise constants
MAX_GPUS_PER_NODE = 8
LIMIT = 1 << 62  # a config value above this is not a real model's

# The CPU measurements the constants were fitted to (see the module's docstring): hidden,
# layers, vocabulary, stage, method, batch, cutoff_len, peak RSS in MiB. Every one is a Llama
# with heads = hidden / 64, intermediate = 8/3 × hidden (down to a multiple of 32), untied
# embeddings; a test holds the estimate within 15 % of each.
CALIBRATION: tuple[tuple[int, int, int, str, str, int, int, int], ...] = (
    (64, 2, 512, "sft", "lora", 2, 256, 609),
    (64, 2, 512, "sft", "freeze", 2, 256, 599),
    (64, 2, 512, "sft", "full", 2, 256, 602),
    (128, 2, 512, "sft", "lora", 2, 256, 608),
    (128, 2, 512, "sft", "freeze", 2, 256, 604),
    (128, 2, 512, "sft", "full", 2, 256, 610),
    (256, 4, 512, "sft", "lora", 2, 256, 625),
    (256, 4, 512, "sft", "freeze", 2, 256, 638),
    (256, 4, 512, "sft", "full", 2, 256, 665),
    (512, 4, 512, "sft", "lora", 2, 256, 663),
    (512, 4, 512, "sft", "freeze", 2, 256, 749),
    (512, 4, 512, "sft", "full", 2, 256, 834),
    (512, 8, 512, "sft", "lora", 2, 256, 696),
    (512, 8, 512, "sft", "freeze", 2, 256, 774),
    (512, 8, 512, "sft", "full", 2, 256, 1035),
    (1024, 8, 512, "sft", "lora", 2, 256, 900),
    (1024, 8, 512, "sft", "freeze", 2, 256, 1246),
    (1024, 8, 512, "sft", "full", 2, 256, 2266),
    (512, 8, 512, "sft", "lora", 4, 1024, 1008),
    (512, 8, 512, "sft", "full", 4, 1024, 1408),
    (1024, 8, 512, "sft", "full", 4, 1024, 3064),
    (512, 4, 512, "sft", "lora", 8, 256, 793),
    (512, 4, 512, "sft", "lora", 2, 1024, 792),
    (512, 4, 512, "sft", "lora", 1, 2048, 815),
    (128, 2, 32768, "sft", "lora", 4, 1024, 2215),
    (128, 2, 32768, "sft", "full", 4, 1024, 2309),
    (256, 8, 512, "sft", "freeze", 4, 1024, 762),
    (1024, 4, 512, "sft", "lora", 2, 2048, 1376),
    (768, 6, 512, "sft", "full", 2, 512, 1411),
    (384, 6, 8192, "sft", "freeze", 4, 512, 950),
    (1024, 8, 16384, "sft", "lora", 8, 512, 2251),
    (640, 4, 512, "sft", "freeze", 2, 1536, 1020),
    (1024, 8, 512, "dpo", "full", 2, 128, 2473),
    (1024, 8, 512, "dpo", "lora", 2, 128, 901)
)  # fmt: skip

Method = Literal["lora", "freeze", "full"]
Stage = Literal["sft", "dpo", "pt"]
ComputeType = Literal["bf16", "fp16", "fp32"]


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model: its dimensions and its parameter count."""

    hidden_size: int
    num_layers: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    tie_embeddings: bool
    parameters: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], parameters: int | None) -> "ModelShape | None":
        """The shape from a Hugging Face config.json (a multimodal model's text part from its
        `text_config`), or None where it lacks a dimension or holds nonsense. `parameters` is
        the count the safetensors headers give; without it, the count follows from the shape
        (a dense decoder)."""
        if not isinstance(config, Mapping):
            return None
        text = config.get("text_config")
        values = {**config, **text} if isinstance(text, Mapping) else dict(config)
        try:
            hidden = _size(values, "hidden_size", "n_embd", "d_model")
            layers = _size(values, "num_hidden_layers", "n_layer", "num_layers")
            vocab = _size(values, "vocab_size")
            heads = _size(values, "num_attention_heads", "n_head")
            if hidden is None or layers is None or vocab is None or heads is None:
                return None
            intermediate = _size(values, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
            kv_heads = _size(values, "num_key_value_heads") or heads
            head_dim = _size(values, "head_dim") or max(1, hidden // heads)
        except _Nonsense:
            return None
        tied = values.get("tie_word_embeddings") is True
        shape = cls(hidden, layers, vocab, heads, kv_heads, head_dim, intermediate, tied, 0)
        if parameters is not None and not (_positive(parameters) and parameters < LIMIT):
            return None
        return replace(shape, parameters=parameters or shape.dense_parameters())

    def embedding_parameters(self) -> int:
        """The token embeddings and, unless tied to them, the output head."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)

    def dense_parameters(self) -> int:
        """The count a dense decoder of this shape has (what a config alone tells)."""
        hidden, queries, keys = self.hidden_size, self._queries(), self._keys()
        attention = hidden * queries * 2 + hidden * keys * 2
        mlp = 3 * hidden * self.intermediate_size
        layer = attention + mlp + 2 * hidden  # and two norms
        return self.embedding_parameters() + self.num_layers * layer + hidden

    def layer_parameters(self) -> int:
        """One layer's share of the parameters that are not embeddings."""
        body = self.parameters - self.embedding_parameters()
        if body <= 0:  # a count that does not match the config: trust the shape
            body = self.dense_parameters() - self.embedding_parameters()
        return body // self.num_layers

    def lora_parameters(self, rank: int) -> int:
        """rank × (in + out) for q, k, v, o, gate, up and down of every layer."""
        hidden, queries, keys, inner = (
            self.hidden_size,
            self._queries(),
            self._keys(),
            self.intermediate_size,
        )
        per_layer = (
            (hidden + queries) * 2  # q, o
            + (hidden + keys) * 2  # k, v
            + (hidden + inner) * 3  # gate, up, down
        )
        return rank * per_layer * self.num_layers

    def _queries(self) -> int:
        return self.num_heads * self.head_dim

    def _keys(self) -> int:
        return self.num_kv_heads * self.head_dim


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class _Nonsense(ValueError):
    """A config value that no real model has (a string, zero, a float, a huge number)."""


def _size(values: Mapping[str, Any], *names: str) -> int | None:
    """The first of `names` the config sets (None if it sets none: absent or null, as GPT-2's
    `n_inner`); _Nonsense if that one is not a sensible positive integer, whether the
    dimension is required or has a default."""
    for name in names:
        if values.get(name) is not None:
            value = values[name]
            if not (_positive(value) and value < LIMIT):
                raise _Nonsense(name)
            return value
    return None


@dataclass(frozen=True)
class Plan:
    """The choices of a run that decide its memory, as the spec names them."""

    method: Method = "lora"
    stage: Stage = "sft"
    compute_type: ComputeType = "bf16"
    quantization_bit: Literal[4, 8] | None = None
    lora_rank: int = 8
    freeze_trainable_layers: int = 2
    batch_size: int = 2
    cutoff_len: int = 1024
    gpus_per_node: int = 1
    nodes: int = 1
    deepspeed_stage: Literal[0, 2, 3] = 0
    offload: bool = False
    on_gpu: bool = True
    # Not memory: `suggest` raises it as it lowers batch_size, to keep the effective batch.
    gradient_accumulation: int = 1

    @property
    def devices(self) -> int:
        return max(1, self.gpus_per_node) * max(1, self.nodes)


@dataclass(frozen=True)
class Estimate:
    """Bytes one device needs at its peak, and what they are made of."""

    per_device_bytes: int
    parameters: int
    trainable_parameters: int
    parts: dict[str, int] = field(default_factory=dict)


def estimate(shape: ModelShape, plan: Plan) -> Estimate:
    """The memory of one device for `plan` (the terms are the module's docstring's)."""
    trainable = _trainable(shape, plan)
    parts = {
        "weights": _weights(shape, plan, trainable),
        "gradients": _gradients(plan, trainable),
        "optimizer": _optimizer(plan, trainable),
        "activations": _activations(shape, plan),
        "overhead": CUDA_OVERHEAD if plan.on_gpu else CPU_OVERHEAD,
    }
    parts = {name: math.ceil(value) for name, value in parts.items()}
    return Estimate(sum(parts.values()), shape.parameters, trainable, parts)


def _trainable(shape: ModelShape, plan: Plan) -> int:
    if plan.method == "lora":
        return shape.lora_parameters(plan.lora_rank)
    if plan.method == "freeze":
        layers = min(abs(plan.freeze_trainable_layers), shape.num_layers)
        return layers * shape.layer_parameters()
    return shape.parameters


def _compute_bytes(plan: Plan) -> int:
    return 4 if plan.compute_type == "fp32" else 2


def _deepspeed(plan: Plan) -> int:
    """The ZeRO stage in effect: DeepSpeed runs on GPUs only."""
    return plan.deepspeed_stage if plan.on_gpu else 0


def _weights(shape: ModelShape, plan: Plan, trainable: int) -> float:
    size = _compute_bytes(plan)
    lora = plan.method == "lora"
    reference = shape.parameters * size if _has_reference(plan) else 0
    if _deepspeed(plan):
        # The model in the compute type; the fp32 master copy is counted with the optimiser.
        model = _frozen_bytes(shape, plan, shape.parameters) + (trainable if lora else 0) * size
        if _deepspeed(plan) < 3:
            return model + reference
        gathered = 2 * shape.layer_parameters() * size
        resident = 0 if plan.offload else (model + reference) / plan.devices
        return resident + gathered
    frozen = shape.parameters - (0 if lora else trainable)
    return _frozen_bytes(shape, plan, frozen) + trainable * 4 + reference


def _frozen_bytes(shape: ModelShape, plan: Plan, count: int) -> float:
    """`count` frozen parameters in the compute type, or a QLoRA base: its linear layers
    quantised, the embeddings and the output head (which bitsandbytes leaves) not."""
    size = _compute_bytes(plan)
    if not (plan.quantization_bit and plan.method == "lora"):
        return count * size
    embeddings = shape.embedding_parameters()
    return (count - embeddings) * QUANT_BYTES[plan.quantization_bit] + embeddings * size


def _has_reference(plan: Plan) -> bool:
    return plan.stage == "dpo" and plan.method != "lora"


def _gradients(plan: Plan, trainable: int) -> float:
    stage = _deepspeed(plan)
    if not stage:
        return trainable * 4
    if plan.offload:
        return 0
    return trainable * _compute_bytes(plan) / plan.devices


def _optimizer(plan: Plan, trainable: int) -> float:
    stage = _deepspeed(plan)
    if not stage:
        return trainable * ADAM_BYTES
    if plan.offload:
        return 0
    return trainable * (ADAM_BYTES + MASTER_BYTES) / plan.devices


def _activations(shape: ModelShape, plan: Plan) -> float:
    tokens = plan.batch_size * plan.cutoff_len * (2 if plan.stage == "dpo" else 1)
    scale = _compute_bytes(plan) / 2  # the constants are for 16-bit activations
    checkpoints = shape.num_layers * shape.hidden_size * 2
    layer = (LAYER_GPU if plan.on_gpu else LAYER_CPU) * shape.hidden_size
    logits = LOGITS_BYTES * shape.vocab_size
    return tokens * ((checkpoints + layer) * scale + logits)


def suggest(shape: ModelShape, plan: Plan, available_bytes: int) -> Plan | None:
    """The nearest plan that fits in `available_bytes` per device, or None.

    Nearest means the least the user gives up, tried in this order: a smaller batch (with
    more gradient accumulation, so the effective batch stays); LoRA instead of full or freeze
    training; on GPUs, ZeRO-3 over more GPUs per node (up to MAX_GPUS_PER_NODE), then with
    offload to host memory; last, QLoRA with a 4-bit base. Each step keeps the earlier ones'
    changes only as far as it needs them (the largest batch that fits). A plan that fits is
    its own nearest.
    """
    if estimate(shape, plan).per_device_bytes <= available_bytes:
        return plan
    for candidate in _candidates(shape, plan):
        if estimate(shape, candidate).per_device_bytes <= available_bytes:
            return candidate
    return None


def _candidates(shape: ModelShape, plan: Plan) -> Iterator[Plan]:
    yield from _smaller_batches(plan)
    methods = [plan.method] + (["lora"] if plan.method != "lora" else [])
    if plan.method != "lora":
        yield from _smaller_batches(replace(plan, method="lora"), include_first=True)
    if not plan.on_gpu:
        return
    gpus = plan.gpus_per_node
    counts = [gpus] + [n for n in (2, 4, MAX_GPUS_PER_NODE) if n > gpus]
    for offload in (False, True):
        for method in methods:
            for count in counts:
                sharded = replace(
                    plan, method=method, gpus_per_node=count, deepspeed_stage=3, offload=offload
                )
                if sharded != plan:
                    yield from _smaller_batches(sharded, include_first=True)
    if plan.quantization_bit != 4:
        qlora = replace(plan, method="lora", quantization_bit=4, deepspeed_stage=0, offload=False)
        yield from _smaller_batches(qlora, include_first=True)


def _smaller_batches(plan: Plan, include_first: bool = False) -> Iterator[Plan]:
    """`plan` (if asked), then with the batch halved down to 1, the accumulation raised so
    that batch × accumulation stays at least what it was."""
    if include_first:
        yield plan
    total = plan.batch_size * plan.gradient_accumulation
    batch = plan.batch_size
    while batch > 1:
        batch = max(1, batch // 2)
        yield replace(plan, batch_size=batch, gradient_accumulation=math.ceil(total / batch))

"""The memory estimate of a fine-tuning run: pure arithmetic on a model's shape and a plan."""

import pytest

from suanli.finetune import memory
from suanli.finetune.memory import ModelShape, Plan, estimate, suggest

GIB = 1 << 30
# Llama-2-7B's config.json, as Hugging Face has it.
LLAMA_7B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}


@pytest.fixture
def shape() -> ModelShape:
    found = ModelShape.from_config(LLAMA_7B, None)
    assert found is not None
    return found


def test_the_count_follows_from_the_config(shape: ModelShape) -> None:
    assert shape.parameters == 6_738_415_616  # Llama-2-7B's published count
    given = ModelShape.from_config(LLAMA_7B, 7_000_000_000)
    assert given is not None and given.parameters == 7_000_000_000


def test_gpt2_names_and_null_defaults_are_understood() -> None:
    config = {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None, "vocab_size": 50257}
    shape = ModelShape.from_config({**config, "tie_word_embeddings": True}, 124_439_808)
    assert shape is not None
    assert (shape.hidden_size, shape.intermediate_size, shape.head_dim) == (768, 3072, 64)


def test_a_multimodal_config_is_read_from_its_text_config() -> None:
    config = {
        "model_type": "qwen2_5_vl",
        "vision_config": {"hidden_size": 1280, "depth": 32},
        "text_config": {
            "hidden_size": 2048,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "intermediate_size": 11008,
            "vocab_size": 151936,
            "tie_word_embeddings": True,
        },
    }
    shape = ModelShape.from_config(config, 3_754_622_976)
    assert shape is not None
    assert (shape.hidden_size, shape.num_layers, shape.vocab_size) == (2048, 36, 151936)
    assert (shape.num_kv_heads, shape.head_dim, shape.tie_embeddings) == (2, 128, True)
    assert shape.parameters == 3_754_622_976


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"model_type": "llama"},
        {**LLAMA_7B, "hidden_size": "4096"},
        {**LLAMA_7B, "num_hidden_layers": 0},
        {**LLAMA_7B, "vocab_size": -5},
        {**LLAMA_7B, "num_attention_heads": True},
        {**LLAMA_7B, "hidden_size": 10**30},
        {**LLAMA_7B, "intermediate_size": 1.5},
        {**LLAMA_7B, "num_key_value_heads": "all"},
        {"text_config": "nonsense"},
        [1, 2, 3],
        "config",
        None,
    ],
)
def test_a_config_without_sensible_dimensions_gives_none(config: object) -> None:
    assert ModelShape.from_config(config, None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("parameters", [0, -1, True, 2**70])
def test_a_nonsensical_parameter_count_gives_none(parameters: int) -> None:
    assert ModelShape.from_config(LLAMA_7B, parameters) is None


@pytest.mark.parametrize(
    "plan",
    [
        Plan(),
        Plan(method="full", deepspeed_stage=3, gpus_per_node=4, offload=True),
        Plan(method="freeze", stage="dpo", compute_type="fp32"),
        Plan(method="lora", quantization_bit=4, stage="pt"),
        Plan(method="full", on_gpu=False, gpus_per_node=0),
    ],
)
def test_the_parts_add_up(shape: ModelShape, plan: Plan) -> None:
    found = estimate(shape, plan)
    assert set(found.parts) == {"weights", "gradients", "optimizer", "activations", "overhead"}
    assert all(value >= 0 for value in found.parts.values())
    assert sum(found.parts.values()) == found.per_device_bytes
    assert found.parameters == shape.parameters
    assert 0 < found.trainable_parameters <= shape.parameters


def test_lora_takes_less_than_freeze_which_takes_less_than_full(shape: ModelShape) -> None:
    lora, freeze, full = (estimate(shape, Plan(method=m)) for m in ("lora", "freeze", "full"))
    assert lora.per_device_bytes < freeze.per_device_bytes < full.per_device_bytes
    assert lora.trainable_parameters < freeze.trainable_parameters < full.trainable_parameters
    # LoRA rank 8 on every linear layer of Llama-2-7B: about 20 million parameters.
    assert 19_000_000 < lora.trainable_parameters < 21_000_000
    # Full training with AdamW in mixed precision: 16 bytes a parameter before activations.
    assert full.parts["weights"] + full.parts["gradients"] + full.parts["optimizer"] == (
        16 * shape.parameters
    )


def test_zero3_shrinks_with_more_gpus(shape: ModelShape) -> None:
    sizes = [
        estimate(shape, Plan(method="full", deepspeed_stage=3, gpus_per_node=gpus)).per_device_bytes
        for gpus in (1, 2, 4, 8)
    ]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    two_nodes = Plan(method="full", deepspeed_stage=3, gpus_per_node=8, nodes=2)
    assert estimate(shape, two_nodes).per_device_bytes < sizes[-1]
    zero2 = estimate(shape, Plan(method="full", deepspeed_stage=2, gpus_per_node=8))
    zero3 = estimate(shape, Plan(method="full", deepspeed_stage=3, gpus_per_node=8))
    assert zero3.parts["weights"] < zero2.parts["weights"]
    offloaded = estimate(
        shape, Plan(method="full", deepspeed_stage=3, gpus_per_node=8, offload=True)
    )
    assert offloaded.parts["optimizer"] == 0
    assert offloaded.per_device_bytes < zero3.per_device_bytes


def test_deepspeed_and_gpus_mean_nothing_on_a_cpu(shape: ModelShape) -> None:
    cpu = Plan(method="full", on_gpu=False, gpus_per_node=0)
    sharded = Plan(method="full", on_gpu=False, gpus_per_node=0, deepspeed_stage=3, nodes=4)
    assert estimate(shape, cpu) == estimate(shape, sharded)
    assert estimate(shape, cpu).parts["overhead"] == memory.CPU_OVERHEAD
    assert estimate(shape, Plan()).parts["overhead"] == memory.CUDA_OVERHEAD


def test_dpo_keeps_a_reference_model_except_with_lora(shape: ModelShape) -> None:
    for method in ("full", "freeze"):
        sft = estimate(shape, Plan(method=method))
        dpo = estimate(shape, Plan(method=method, stage="dpo"))
        assert dpo.parts["weights"] - sft.parts["weights"] == 2 * shape.parameters
    sft, dpo = estimate(shape, Plan()), estimate(shape, Plan(stage="dpo"))
    assert dpo.parts["weights"] == sft.parts["weights"]
    # Chosen and rejected answers: twice the tokens.
    assert dpo.parts["activations"] == 2 * sft.parts["activations"]


def test_qlora_shrinks_the_base_and_fp32_grows_everything(shape: ModelShape) -> None:
    lora = estimate(shape, Plan())
    assert estimate(shape, Plan(quantization_bit=8)).parts["weights"] < lora.parts["weights"]
    four = estimate(shape, Plan(quantization_bit=4)).parts["weights"]
    assert four < lora.parts["weights"] / 3
    fp32 = estimate(shape, Plan(compute_type="fp32"))
    assert fp32.parts["weights"] > lora.parts["weights"]
    assert fp32.parts["activations"] > lora.parts["activations"]


def test_activations_grow_with_the_tokens_of_a_batch(shape: ModelShape) -> None:
    small = estimate(shape, Plan(batch_size=1, cutoff_len=512)).parts["activations"]
    assert estimate(shape, Plan(batch_size=2, cutoff_len=512)).parts[
        "activations"
    ] == pytest.approx(2 * small, rel=1e-6)
    assert estimate(shape, Plan(batch_size=1, cutoff_len=2048)).parts["activations"] == (
        pytest.approx(4 * small, rel=1e-6)
    )


def test_a_plan_that_fits_is_its_own_suggestion(shape: ModelShape) -> None:
    plan = Plan()
    assert suggest(shape, plan, estimate(shape, plan).per_device_bytes) == plan


@pytest.mark.parametrize(
    ("plan", "available"),
    [
        (Plan(method="full", batch_size=8, cutoff_len=4096), 80 * GIB),
        (Plan(method="full", batch_size=8, cutoff_len=4096), 24 * GIB),
        (Plan(method="lora", batch_size=16, cutoff_len=4096), 16 * GIB),
        (Plan(method="lora", batch_size=4), 8 * GIB),
        (Plan(method="freeze", batch_size=4, gradient_accumulation=2), 20 * GIB),
        (Plan(method="full", on_gpu=False, gpus_per_node=0, batch_size=8), 32 * GIB),
    ],
)
def test_a_suggestion_fits_and_keeps_the_effective_batch(
    shape: ModelShape, plan: Plan, available: int
) -> None:
    assert estimate(shape, plan).per_device_bytes > available
    better = suggest(shape, plan, available)
    assert better is not None
    assert estimate(shape, better).per_device_bytes <= available
    assert better.batch_size * better.gradient_accumulation >= (
        plan.batch_size * plan.gradient_accumulation
    )
    if not plan.on_gpu:
        assert (better.deepspeed_stage, better.quantization_bit) == (0, None)
        assert better.gpus_per_node == plan.gpus_per_node


def test_a_smaller_batch_comes_before_another_method(shape: ModelShape) -> None:
    plan = Plan(method="lora", batch_size=16, cutoff_len=4096)
    fits_batch_4 = estimate(shape, Plan(method="lora", batch_size=4, cutoff_len=4096))
    better = suggest(shape, plan, fits_batch_4.per_device_bytes)
    assert better is not None
    assert (better.method, better.batch_size, better.gradient_accumulation) == ("lora", 4, 4)


def test_nothing_fits_gives_none(shape: ModelShape) -> None:
    assert suggest(shape, Plan(method="full"), 2 * GIB) is None
    assert suggest(shape, Plan(on_gpu=False, gpus_per_node=0), 4 * GIB) is None


@pytest.mark.parametrize("row", memory.CALIBRATION, ids=str)
def test_the_cpu_estimate_is_within_15_percent_of_each_measured_run(
    row: tuple[int, int, int, str, str, int, int, int],
) -> None:
    hidden, layers, vocab, stage, method, batch, cutoff, measured_mib = row
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "vocab_size": vocab,
        "num_attention_heads": hidden // 64,
        "head_dim": 64,
        "intermediate_size": hidden * 8 // 3 // 32 * 32,
        "tie_word_embeddings": False,
    }
    shape = ModelShape.from_config(config, None)
    assert shape is not None
    plan = Plan(
        method=method,  # type: ignore[arg-type]
        stage=stage,  # type: ignore[arg-type]
        batch_size=batch,
        cutoff_len=cutoff,
        on_gpu=False,
        gpus_per_node=0,
    )
    found = estimate(shape, plan).per_device_bytes
    assert found == pytest.approx(measured_mib << 20, rel=0.15)

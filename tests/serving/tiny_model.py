"""Writes a tiny random-weight Llama, as a Hugging Face model folder, for a real vLLM to serve.

Run with the engine's interpreter (scripts/engine-vllm's PREFIX/bin/python), which has torch,
transformers, tokenizers and safetensors as vLLM's own dependencies:

    PREFIX/bin/python tests/serving/tiny_model.py OUT_DIR [DTYPE]

DTYPE is bfloat16 (what vLLM serves here) unless given: the fine-tuning tests train in fp32,
and LLaMA-Factory keeps a model's own dtype for its frozen weights, so they ask for float32.

Why this shape: vLLM's CPU attention wants head_dim 64; everything else is as small as vLLM
accepts, so that the engine starts in seconds and answers on two cores. The tokenizer is trained
here on generated English and Chinese text (byte-level BPE, so any input encodes) and carries a
ChatML-like chat template, so /v1/chat/completions works. Nothing is downloaded, and the same
seed gives the same files.
"""

import os
import random
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SEED = 20261201
VOCAB_SIZE = 512
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CHAT_MARKERS = ["<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ENGLISH_WORDS = [
    "the", "cluster", "schedules", "jobs", "on", "nodes", "with", "free", "memory", "and",
    "cores", "while", "users", "wait", "for", "results", "from", "model", "server", "that",
    "streams", "tokens", "back", "to", "every", "client", "over", "http",
]  # fmt: skip
CHINESE_WORDS = [
    "集群", "调度", "作业", "节点", "内存", "模型", "服务", "用户", "令牌", "推理",
    "训练", "数据", "算力", "请求", "响应", "你好", "世界", "部署", "计费", "队列",
]  # fmt: skip


def corpus(lines: int = 400) -> list[str]:
    """Mixed English and Chinese sentences, so the vocabulary covers both scripts."""
    rng = random.Random(SEED)
    text = []
    for i in range(lines):
        words = ENGLISH_WORDS if i % 2 else CHINESE_WORDS
        joiner = " " if i % 2 else ""
        text.append(joiner.join(rng.choice(words) for _ in range(rng.randint(4, 16))))
    return text


def train_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer: every byte is in the alphabet, so no input is unknown."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[PAD, BOS, EOS, *CHAT_MARKERS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=CHAT_MARKERS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def build_model(
    tokenizer: PreTrainedTokenizerFast, dtype: torch.dtype = torch.bfloat16
) -> LlamaForCausalLM:
    """Random weights from a fixed seed; ids of the special tokens match the tokenizer's."""
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        num_hidden_layers=2,
        intermediate_size=256,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


def write(out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """Saves model.safetensors, config.json, generation_config.json and the tokenizer files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    model = build_model(tokenizer, dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    # In tokenizer_config.json rather than a separate chat_template.jinja: one place to look.
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)


def main() -> None:
    """Entry point: one argument, the folder to write."""
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR [DTYPE]")
    dtype = getattr(torch, sys.argv[2]) if len(sys.argv) == 3 else torch.bfloat16
    write(Path(sys.argv[1]), dtype)


if __name__ == "__main__":
    main()

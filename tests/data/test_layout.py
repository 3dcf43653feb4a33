"""Model layouts from real files written by hand: safetensors, GGUF, and hostile headers."""

import json
import random
import struct
from pathlib import Path

import pytest

from suanli.data.layout import ModelLayout, inspect_model
from tests.data.test_preview import mutations

SIZES = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8}


def safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    """The format: u64 LE header length, the JSON header, then the tensors' bytes."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = SIZES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * offset)
    return path


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf(
    path: Path,
    metadata: list[tuple[str, int, bytes]],
    tensors: list[tuple[str, list[int], int]],
    *,
    data: int = 64,
) -> Path:
    """GGUF v3: magic, version, tensor and kv counts, kvs, tensor infos, aligned data."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, kind, value in metadata:
        out += gguf_string(key) + struct.pack("<I", kind) + value
    offset = 0
    for name, dims, kind in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", kind, offset)
        offset += 32
    out += b"\x00" * (-len(out) % 32)
    path.write_bytes(out + b"\x00" * max(data, offset))
    return path


def string_array(items: list[str]) -> bytes:
    return struct.pack("<IQ", 8, len(items)) + b"".join(gguf_string(item) for item in items)


LLAMA_METADATA = [
    ("general.architecture", 8, gguf_string("llama")),
    ("general.name", 8, gguf_string("Tiny 中文")),
    ("general.file_type", 4, struct.pack("<I", 15)),
    ("llama.context_length", 4, struct.pack("<I", 4096)),
    ("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    ("general.quantized", 7, b"\x01"),
    ("llama.offset", 11, struct.pack("<q", -3)),
    ("tokenizer.ggml.model", 8, gguf_string("gpt2")),
    ("tokenizer.ggml.tokens", 9, string_array(["a", "b", "<s>"])),
    ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0, 0, 0)),
    ("nested", 9, struct.pack("<IQ", 9, 2) + string_array(["x"]) + string_array([])),
    ("general.alignment", 4, struct.pack("<I", 32)),
]
LLAMA_TENSORS = [("token_embd.weight", [64, 3], 12), ("output_norm.weight", [64], 0)]


def problem_keys(layout: ModelLayout) -> list[str]:
    return [problem.key for problem in layout.problems]


def test_huggingface_model(tmp_path: Path) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "max_position_embeddings": 2048,
        "torch_dtype": "float32",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "tok.json").write_text("{}")
    weights = {"embed": ("BF16", [100, 8]), "norm": ("F32", [8]), "lm_head": ("BF16", [8, 100])}
    files = {
        "config.json": tmp_path / "config.json",
        "model.safetensors": safetensors(tmp_path / "blob1", weights),
        "tokenizer.json": tmp_path / "tok.json",
    }
    layout = inspect_model(files)
    assert layout.problems == []
    assert (layout.format, layout.architecture, layout.parameters) == (
        "huggingface",
        "LlamaForCausalLM",
        1608,
    )
    assert (layout.dtype, layout.context_length, layout.has_tokenizer) == ("bfloat16", 2048, True)
    assert layout.size_bytes == sum(path.stat().st_size for path in files.values())


def test_sharded_model_counts_the_index_shards_and_reports_a_missing_one(tmp_path: Path) -> None:
    index = {
        "weight_map": {
            "a": "model-00001-of-00003.safetensors",
            "b": "model-00002-of-00003.safetensors",
            "c": "model-00003-of-00003.safetensors",
        }
    }
    (tmp_path / "index").write_text(json.dumps(index))
    (tmp_path / "config").write_text('{"model_type": "qwen2", "dtype": "bfloat16"}')
    files = {
        "config.json": tmp_path / "config",
        "model.safetensors.index.json": tmp_path / "index",
        "model-00001-of-00003.safetensors": safetensors(tmp_path / "s1", {"a": ("F16", [10, 10])}),
        "model-00002-of-00003.safetensors": safetensors(tmp_path / "s2", {"b": ("F16", [5])}),
        # A consolidated copy next to the shards is not counted twice.
        "consolidated.safetensors": safetensors(tmp_path / "s4", {"a": ("F16", [10, 10])}),
    }
    layout = inspect_model(files)
    assert (layout.architecture, layout.parameters, layout.dtype) == ("qwen2", 105, "float16")
    assert layout.has_tokenizer is False and layout.context_length is None
    assert [(p.key, p.params) for p in layout.problems] == [
        (
            "web.data.model.shard_missing",
            {"path": "model.safetensors.index.json", "shard": "model-00003-of-00003.safetensors"},
        )
    ]


def header_file(path: Path, length: int, body: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", length) + body)
    return path


def one_tensor(path: Path, shape: list[int], offsets: list[int]) -> Path:
    """A header for one F32 tensor and no data after it."""
    raw = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": offsets}}).encode()
    return header_file(path, len(raw), raw)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (lambda p: header_file(p, 2**60), "web.data.model.header_too_large"),
        (lambda p: header_file(p, 100_000_001), "web.data.model.header_too_large"),
        (lambda p: header_file(p, 1000, b"{}"), "web.data.model.truncated"),
        (lambda p: header_file(p, 5, b"{oops"), "web.data.model.malformed"),
        (lambda p: header_file(p, 2, b"[]"), "web.data.model.malformed"),
        (lambda p: p.write_bytes(b"\x01\x02") and p, "web.data.model.truncated"),
        (lambda p: one_tensor(p, [-1], [0, 0]), "web.data.model.malformed"),
        (lambda p: one_tensor(p, [4], [16, 0]), "web.data.model.malformed"),
        (lambda p: one_tensor(p, [2**40], [0, 0]), "web.data.model.malformed"),
        (lambda p: one_tensor(p, [4], [0, 16]), "web.data.model.truncated"),
    ],
)  # fmt: skip
def test_broken_safetensors_headers(tmp_path: Path, body, key: str) -> None:
    path = body(tmp_path / "bad")
    (tmp_path / "cfg").write_text("not json")
    layout = inspect_model({"model.safetensors": path, "config.json": tmp_path / "cfg"})
    assert problem_keys(layout) == ["web.data.model.not_json", key]
    assert layout.format == "huggingface" and layout.parameters == 0


def test_gguf_model(tmp_path: Path) -> None:
    path = gguf(tmp_path / "blob", LLAMA_METADATA, LLAMA_TENSORS)
    layout = inspect_model({"tiny-Q4_K_M.gguf": path, "README.md": tmp_path / "blob"})
    assert layout.problems == []
    assert (layout.format, layout.architecture, layout.parameters) == ("gguf", "llama", 256)
    assert (layout.dtype, layout.context_length, layout.has_tokenizer) == ("Q4_K_M", 4096, True)
    assert layout.metadata == {
        "general.architecture": "llama",
        "general.name": "Tiny 中文",
        "general.file_type": 15,
        "llama.context_length": 4096,
        "llama.rope.freq_base": 10000.0,
        "general.quantized": True,
        "llama.offset": -3,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": {"length": 3},
        "tokenizer.ggml.scores": {"length": 3},
        "nested": {"length": 2},
        "general.alignment": 32,
    }
    json.dumps(layout.metadata, allow_nan=False)


def test_split_gguf_sums_its_parts(tmp_path: Path) -> None:
    first = gguf(tmp_path / "p1", LLAMA_METADATA[:1], [("a", [10, 10], 1)])
    second = gguf(tmp_path / "p2", [], [("b", [7], 1)])
    layout = inspect_model({"m-00001-of-00003.gguf": first, "m-00002-of-00003.gguf": second})
    assert (layout.parameters, layout.dtype, layout.architecture) == (107, "F16", "llama")
    assert [p.params for p in layout.problems] == [
        {"path": "m-00001-of-00003.gguf", "shard": "m-00003-of-00003.gguf"}
    ]


def hostile(tmp_path: Path, body: bytes) -> ModelLayout:
    (tmp_path / "evil").write_bytes(body + b"\x00" * 64)
    return inspect_model({"evil.gguf": tmp_path / "evil"})


def counts(tensors: int, kvs: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


def one_kv(value: bytes) -> bytes:
    """A header of one key, "k", whose type and value are `value`."""
    return counts(0, 1) + gguf_string("k") + value


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b"GGML" + b"\x00" * 40, "web.data.model.malformed"),
        (b"GGUF", "web.data.model.unsupported_version"),  # version 0 (the padding)
        (counts(0, 0, version=1), "web.data.model.unsupported_version"),
        (counts(0, 2**60), "web.data.model.truncated"),
        (counts(2**60, 0), "web.data.model.truncated"),
        (counts(0, 1) + struct.pack("<Q", 2**60), "web.data.model.truncated"),
        (one_kv(struct.pack("<IQ", 8, 2**60)), "web.data.model.truncated"),
        (one_kv(struct.pack("<IIQ", 9, 0, 2**60)), "web.data.model.truncated"),
        (one_kv(struct.pack("<IIQ", 9, 8, 2**60)), "web.data.model.truncated"),
        (one_kv(struct.pack("<IIQ", 9, 9, 2**60)), "web.data.model.truncated"),
        (one_kv(struct.pack("<I", 77)), "web.data.model.malformed"),
        (one_kv(struct.pack("<IIQ", 9, 99, 1)), "web.data.model.malformed"),
        (
            one_kv(struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 6),
            "web.data.model.malformed",
        ),
        (
            counts(1, 0) + gguf_string("t") + struct.pack("<I", 2**31),
            "web.data.model.malformed",
        ),
        (
            counts(1, 0) + gguf_string("t") + struct.pack("<IQIQ", 1, 4, 0, 2**60),
            "web.data.model.truncated",
        ),
    ],
)  # fmt: skip
def test_hostile_gguf_headers(tmp_path: Path, body: bytes, key: str) -> None:
    layout = hostile(tmp_path, body)
    assert problem_keys(layout) == [key]
    assert layout.format == "gguf" and layout.parameters is None


def test_gguf_item_cap(tmp_path: Path, monkeypatch) -> None:
    from suanli.data import layout as module

    monkeypatch.setattr(module, "MAX_ITEMS", 10)
    body = one_kv(struct.pack("<I", 9) + string_array(["x"] * 20))
    assert problem_keys(hostile(tmp_path, body)) == ["web.data.model.too_many_items"]


def test_unknown_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "r").write_text("hello")
    layout = inspect_model({"README.md": tmp_path / "r", "notes.txt": tmp_path / "gone"})
    assert (layout.format, layout.size_bytes, layout.parameters) == ("unknown", 5, None)
    assert [(p.key, p.params) for p in layout.problems] == [
        ("web.data.model.missing_file", {"path": "notes.txt"})
    ]


def test_mutated_headers_never_raise(tmp_path: Path) -> None:
    rng = random.Random(11)
    seeds = {
        "m.gguf": gguf(tmp_path / "g", LLAMA_METADATA, LLAMA_TENSORS).read_bytes(),
        "model.safetensors": safetensors(tmp_path / "s", {"a": ("F32", [3, 4])}).read_bytes(),
    }
    for name, seed in seeds.items():
        for data in mutations(seed, 150, rng):
            (tmp_path / "m").write_bytes(data)
            layout = inspect_model({name: tmp_path / "m"})
            json.dumps(layout.metadata, allow_nan=False)

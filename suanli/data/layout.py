"""What a model version holds: its format, architecture, size in parameters, dtype, context.

Read from the files' headers only (config.json, each safetensors file's JSON header, a GGUF
file's metadata and tensor infos), never from their weights, so that a 100 GB model is
inspected in the time it takes to read a few megabytes. The headers come from anyone, so each
length in them is checked against the file before anything is read or allocated, and a file
that breaks its format gives a `Problem` instead of an exception.
"""

import json
import math
import re
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from suanli.data.preview import Problem, json_safe

MAX_HEADER = 100_000_000  # bytes of a safetensors JSON header
MAX_CONFIG = 16 << 20  # bytes of config.json or an index read
MAX_KEY = 64 << 10  # bytes of a GGUF key or tensor name
MAX_STRING_READ = 64 << 10  # bytes of a GGUF string value read (the rest is skipped)
MAX_ITEMS = 50_000_000  # GGUF array items walked over in one file
MAX_DIMS = 8
MAX_DEPTH = 4  # GGUF arrays of arrays

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
SPLIT = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")

SAFETENSORS_DTYPES = {
    "BF16": "bfloat16",
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I8": "int8",
    "U8": "uint8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "BOOL": "bool",
}
# Bytes per element, to hold a tensor's offsets to its shape (sub-byte types are not checked).
SAFETENSORS_BYTES = {
    "BF16": 2, "F16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1,
    "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8, "BOOL": 1,
}  # fmt: skip
# llama.cpp's llama_ftype (general.file_type) and ggml_type (a tensor's type), by number.
GGUF_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE",
}  # fmt: skip
GGML_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
    30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}  # fmt: skip
# GGUF metadata value types: number -> struct format of a scalar (8 string, 9 array).
GGUF_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
    11: "<q", 12: "<d",
}  # fmt: skip
GGUF_STRING, GGUF_ARRAY = 8, 9


@dataclass(frozen=True)
class ModelLayout:
    """A model version as the console shows it; None where the files do not say."""

    format: str  # "huggingface" | "gguf" | "unknown"
    architecture: str | None = None
    parameters: int | None = None
    dtype: str | None = None
    size_bytes: int = 0
    has_tokenizer: bool = False
    context_length: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # GGUF: arrays as {"length": n}
    problems: list[Problem] = field(default_factory=list)


class _Bad(Exception):
    """A file breaks its format; carries the problem without its path (added by the caller)."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key, self.params = key, params


def inspect_model(files: Mapping[str, Path]) -> ModelLayout:
    """Inspect the files of one version, given as {path in the version: path on disk}."""
    problems: list[Problem] = []
    size = 0
    for name, path in sorted(files.items()):
        try:
            size += path.stat().st_size
        except OSError:
            problems.append(Problem("web.data.model.missing_file", {"path": name}))
    names = sorted(files)
    has_tokenizer = any(PurePosixPath(name).name in TOKENIZER_FILES for name in names)
    has_weights = any(name.endswith(WEIGHT_SUFFIXES) for name in names)
    ggufs = [name for name in names if name.lower().endswith(".gguf")]
    if has_weights or ("config.json" in files and not ggufs):
        found = _huggingface(files, problems)
    elif ggufs:
        found = _gguf(files, ggufs, problems)
    else:
        found = {"format": "unknown"}
    has_tokenizer = has_tokenizer or found.pop("has_tokenizer", False)
    return ModelLayout(**found, size_bytes=size, has_tokenizer=has_tokenizer, problems=problems)


# Hugging Face: config.json and safetensors ---------------------------------------------------


def _huggingface(files: Mapping[str, Path], problems: list[Problem]) -> dict[str, Any]:
    config = _json_file(files, "config.json", problems) or {}
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    architectures = config.get("architectures")
    architecture = (
        architectures[0]
        if isinstance(architectures, list) and architectures and isinstance(architectures[0], str)
        else config.get("model_type")
        if isinstance(config.get("model_type"), str)
        else None
    )
    context = next(
        (
            source[key]
            for source in (config, text_config)
            for key in CONTEXT_KEYS
            if isinstance(source.get(key), int) and not isinstance(source.get(key), bool)
        ),
        None,
    )
    parameters, dtype = _safetensors_totals(files, problems)
    configured = config.get("torch_dtype") or config.get("dtype")
    return {
        "format": "huggingface",
        "architecture": architecture,
        "parameters": parameters,
        "dtype": dtype or (configured if isinstance(configured, str) else None),
        "context_length": context,
    }


def _json_file(files: Mapping[str, Path], name: str, problems: list[Problem]) -> dict | None:
    """A small JSON object file of the version, or None (with a problem if it is broken)."""
    if name not in files:
        return None
    try:
        with files[name].open("rb") as file:
            data = file.read(MAX_CONFIG + 1)
        document = json.loads(data) if len(data) <= MAX_CONFIG else None
    except OSError:
        return None  # already reported as a missing file
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        problems.append(Problem("web.data.model.not_json", {"path": name}))
        return None
    return document


def _safetensors_totals(
    files: Mapping[str, Path], problems: list[Problem]
) -> tuple[int | None, str | None]:
    """Parameters over every shard and the dtype holding most of them.

    The shards are the index's when there is one (a folder may also hold a consolidated copy
    that must not be counted twice), else every .safetensors file.
    """
    shards = _index_shards(files, problems)
    if shards is None:
        shards = [name for name in sorted(files) if name.endswith(".safetensors")]
    if not shards:
        return None, None
    parameters, by_dtype = 0, Counter[str]()
    for name in shards:
        try:
            tensors = _safetensors_tensors(files[name])
        except _Bad as bad:
            problems.append(Problem(bad.key, {"path": name, **bad.params}))
            continue
        except OSError:
            continue  # already reported as a missing file
        for dtype, count in tensors:
            parameters += count
            by_dtype[dtype] += count
    dtype = by_dtype.most_common(1)[0][0] if by_dtype else None
    return parameters, SAFETENSORS_DTYPES.get(dtype, dtype) if dtype else None


def _index_shards(files: Mapping[str, Path], problems: list[Problem]) -> list[str] | None:
    """The shards model.safetensors.index.json names, each missing one reported."""
    index_name = "model.safetensors.index.json"
    index = _json_file(files, index_name, problems)
    if index is None:
        return None
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        problems.append(Problem("web.data.model.not_json", {"path": index_name}))
        return None
    shards = []
    for shard in sorted({value for value in weight_map.values() if isinstance(value, str)}):
        if shard in files:
            shards.append(shard)
        else:
            problems.append(
                Problem("web.data.model.shard_missing", {"path": index_name, "shard": shard})
            )
    return shards


def _safetensors_tensors(path: Path) -> list[tuple[str, int]]:
    """(dtype, element count) of each tensor, from the header: 8-byte length, then JSON."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise _Bad("web.data.model.truncated")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER:
            raise _Bad("web.data.model.header_too_large", limit_mib=MAX_HEADER // 1_000_000)
        if 8 + length > size:
            raise _Bad("web.data.model.truncated")
        raw = file.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Bad("web.data.model.malformed", format="safetensors") from None
    if not isinstance(header, dict):
        raise _Bad("web.data.model.malformed", format="safetensors")
    data_size = size - 8 - length
    return [
        _safetensors_tensor(info, data_size)
        for name, info in header.items()
        if name != "__metadata__"
    ]


def _safetensors_tensor(info: Any, data_size: int) -> tuple[str, int]:
    malformed = _Bad("web.data.model.malformed", format="safetensors")
    if not isinstance(info, dict):
        raise malformed
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or not _counts(shape) or not _counts(offsets):
        raise malformed
    if len(offsets) != 2 or offsets[0] > offsets[1]:
        raise malformed
    if offsets[1] > data_size:
        raise _Bad("web.data.model.truncated")
    elements = math.prod(shape)
    if (
        dtype in SAFETENSORS_BYTES
        and elements * SAFETENSORS_BYTES[dtype] != offsets[1] - offsets[0]
    ):
        raise malformed  # a shape its bytes cannot hold would make up a parameter count
    return dtype, elements


def _counts(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    )


# GGUF -------------------------------------------------------------------------------------


def _gguf(files: Mapping[str, Path], ggufs: list[str], problems: list[Problem]) -> dict[str, Any]:
    """The first GGUF file's metadata; its parameters summed over its split parts if split.

    A folder of several quantisations of one model holds several unrelated files: only
    the parts of the first one's split are counted.
    """
    first = ggufs[0]
    parts = [first]
    split = SPLIT.match(first)
    if split:
        prefix, total = split.group(1), int(split.group(3))
        wanted = [f"{prefix}-{part:05d}-of-{total:05d}.gguf" for part in range(1, total + 1)]
        parts = [name for name in wanted if name in files]
        for name in wanted:
            if name not in files:
                problems.append(
                    Problem("web.data.model.shard_missing", {"path": first, "shard": name})
                )
    metadata: dict[str, Any] = {}
    parameters: int | None = 0
    by_type = Counter[int]()
    for number, name in enumerate(parts):
        try:
            header = _gguf_header(files[name])
        except _Bad as bad:
            problems.append(Problem(bad.key, {"path": name, **bad.params}))
            parameters = None if number == 0 else parameters
            continue
        except OSError:
            continue
        if number == 0:
            metadata = header.metadata
        if parameters is not None:
            parameters += header.parameters
        by_type.update(header.types)
    architecture = metadata.get("general.architecture")
    architecture = architecture if isinstance(architecture, str) else None
    context = metadata.get(f"{architecture}.context_length")
    file_type = metadata.get("general.file_type")
    dtype = GGUF_FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
    if dtype is None and by_type:
        dtype = GGML_TYPES.get(by_type.most_common(1)[0][0])
    return {
        "format": "gguf",
        "architecture": architecture,
        "parameters": parameters,
        "dtype": dtype,
        "context_length": context if isinstance(context, int) else None,
        "metadata": metadata,
        "has_tokenizer": "tokenizer.ggml.model" in metadata,
    }


@dataclass(frozen=True)
class _GgufHeader:
    metadata: dict[str, Any]
    parameters: int
    types: Counter[int]  # elements per ggml tensor type


class _Reader:
    """Reads a header field by field, refusing any length the rest of the file cannot hold."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file, self.size, self.items = file, size, 0

    def remaining(self) -> int:
        return self.size - self.file.tell()

    def need(self, count: int) -> None:
        if count > self.remaining():
            raise _Bad("web.data.model.truncated")

    def read(self, count: int) -> bytes:
        self.need(count)
        return self.file.read(count)

    def skip(self, count: int) -> None:
        self.need(count)
        self.file.seek(count, 1)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self, limit: int) -> str:
        """A u64-length UTF-8 string; past `limit` bytes the rest is skipped, not read."""
        length = self.unpack("<Q")
        self.need(length)
        data = self.read(min(length, limit))
        self.skip(length - len(data))
        return data.decode("utf-8", errors="replace")

    def count(self, items: int, least_bytes: int) -> None:
        """Refuse a count of items that cannot fit, or that is too many to walk through."""
        self.need(items * least_bytes)
        self.items += items
        if self.items > MAX_ITEMS:
            raise _Bad("web.data.model.too_many_items", limit=MAX_ITEMS)


def _gguf_header(path: Path) -> _GgufHeader:
    """Magic, version, counts, metadata key/values, tensor infos; see ggml's docs/gguf.md."""
    with path.open("rb") as file:
        reader = _Reader(file, path.stat().st_size)
        if reader.remaining() < 24 or file.read(4) != b"GGUF":
            raise _Bad("web.data.model.malformed", format="gguf")
        version = reader.unpack("<I")
        if version not in (2, 3):
            raise _Bad("web.data.model.unsupported_version", version=version)
        tensor_count, kv_count = reader.unpack("<Q"), reader.unpack("<Q")
        reader.count(kv_count, 8 + 4 + 1)
        metadata = {}
        for _ in range(kv_count):
            key = reader.string(MAX_KEY)
            metadata[key] = _gguf_value(reader, reader.unpack("<I"), depth=0)
        reader.count(tensor_count, 8 + 4 + 4 + 8)
        parameters, types, last_offset = 0, Counter[int](), 0
        for _ in range(tensor_count):
            reader.string(MAX_KEY)
            dims = reader.unpack("<I")
            if dims > MAX_DIMS:
                raise _Bad("web.data.model.malformed", format="gguf")
            elements = math.prod(reader.unpack("<Q") for _ in range(dims))
            kind, offset = reader.unpack("<I"), reader.unpack("<Q")
            parameters += elements
            types[kind] += elements
            last_offset = max(last_offset, offset)
        alignment = metadata.get("general.alignment", 32)
        alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
        data_start = -(-file.tell() // alignment) * alignment
        if tensor_count and data_start + last_offset >= reader.size:
            raise _Bad("web.data.model.truncated")
    return _GgufHeader(metadata, parameters, types)


def _gguf_value(reader: _Reader, kind: int, depth: int) -> Any:
    """A scalar or string as a JSON-safe value; an array walked over, kept as its length."""
    if kind in GGUF_SCALARS:
        return json_safe(reader.unpack(GGUF_SCALARS[kind]))
    if kind == GGUF_STRING:
        return json_safe(reader.string(MAX_STRING_READ))
    if kind != GGUF_ARRAY or depth >= MAX_DEPTH:
        raise _Bad("web.data.model.malformed", format="gguf")
    item_kind, length = reader.unpack("<I"), reader.unpack("<Q")
    if item_kind in GGUF_SCALARS:
        reader.skip(length * struct.calcsize(GGUF_SCALARS[item_kind]))
    elif item_kind in (GGUF_STRING, GGUF_ARRAY):
        reader.count(length, 8 if item_kind == GGUF_STRING else 12)
        for _ in range(length):
            if item_kind == GGUF_STRING:
                reader.skip(reader.unpack("<Q"))
            else:
                _gguf_value(reader, GGUF_ARRAY, depth + 1)
    else:
        raise _Bad("web.data.model.malformed", format="gguf")
    return {"length": length}

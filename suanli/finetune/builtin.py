"""The datasets Suanli ships for fine-tuning, so that a first run needs no upload.

Each is a small JSON file under `datasets/`, written for Suanli (none is copied from
LLaMA-Factory or elsewhere), so it ships under Suanli's own licence. Together they show each
format LLaMA-Factory reads: alpaca, sharegpt (from/value and OpenAI-style role/content
messages), tool calls, preference pairs for DPO and plain text for pre-training. A run gets a
dataset as its file plus its `dataset_info.json` entry (`entry`). The `identity` dataset
teaches a model its own name and maker: its answers hold `{{name}}` and `{{author}}`, which
`content` fills in from the run's spec.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

Stage = Literal["sft", "dpo", "pt"]
PLACEHOLDER = re.compile(r"\{\{(name|author)\}\}")
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
}
OPENAI_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


@dataclass(frozen=True)
class BuiltinDataset:
    """One shipped dataset and what its dataset_info.json entry says about it."""

    name: str
    file: str  # under suanli/finetune/datasets/
    formatting: Literal["alpaca", "sharegpt"]
    ranking: bool
    columns: Mapping[str, str]
    tags: Mapping[str, str]
    stage: Stage
    rows: int
    licence: str = "Apache-2.0"
    description: str = ""  # i18n key; set from the name when left empty

    def __post_init__(self) -> None:
        # Read-only views: the instances are shared, module-wide constants.
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))
        if not self.description:
            object.__setattr__(self, "description", f"label.finetune.dataset.{self.name}")


def _alpaca(name: str, rows: int, stage: Stage = "sft") -> BuiltinDataset:
    return BuiltinDataset(name, f"{name}.json", "alpaca", False, ALPACA_COLUMNS, {}, stage, rows)


DATASETS: tuple[BuiltinDataset, ...] = (
    _alpaca("identity", 36),
    _alpaca("alpaca_en_demo", 40),
    _alpaca("alpaca_zh_demo", 40),
    BuiltinDataset(
        "sharegpt_demo",
        "sharegpt_demo.json",
        "sharegpt",
        False,
        {"messages": "conversations"},
        SHAREGPT_TAGS,
        "sft",
        30,
    ),
    BuiltinDataset(
        "openai_demo",
        "openai_demo.json",
        "sharegpt",
        False,
        {"messages": "messages"},
        OPENAI_TAGS,
        "sft",
        30,
    ),
    BuiltinDataset(
        "glaive_toolcall_demo",
        "glaive_toolcall_demo.json",
        "sharegpt",
        False,
        {"messages": "conversations", "tools": "tools"},
        {**SHAREGPT_TAGS, "function_tag": "function_call", "observation_tag": "observation"},
        "sft",
        30,
    ),
    BuiltinDataset(
        "dpo_demo",
        "dpo_demo.json",
        "sharegpt",
        True,
        {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        SHAREGPT_TAGS,
        "dpo",
        30,
    ),
    BuiltinDataset("pt_demo", "pt_demo.json", "alpaca", False, {"prompt": "text"}, {}, "pt", 40),
)
_BY_NAME = {dataset.name: dataset for dataset in DATASETS}


def get(name: str) -> BuiltinDataset | None:
    """The shipped dataset of that name, or None."""
    return _BY_NAME.get(name)


def entry(dataset: BuiltinDataset) -> dict[str, Any]:
    """Its dataset_info.json entry, spelled out in full so that LLaMA-Factory's defaults
    never decide how a shipped file is read."""
    info: dict[str, Any] = {
        "file_name": dataset.file,
        "formatting": dataset.formatting,
        "columns": dict(dataset.columns),
    }
    if dataset.ranking:
        info["ranking"] = True
    if dataset.tags:
        info["tags"] = dict(dataset.tags)
    return info


def content(dataset: BuiltinDataset, identity: tuple[str, str] | None) -> bytes:
    """The file's bytes; for `identity`, with `{{name}}` and `{{author}}` filled in from
    `identity` (name, author).

    The placeholders sit inside JSON strings, so each value goes in JSON-escaped: a name with
    a quote or a backslash still gives a valid file. One pass replaces both, so a name that
    itself contains `{{author}}` stays as the user wrote it. The identity dataset without a
    name and an author is the caller's mistake (training on the placeholders would teach the
    model to call itself "{{name}}"): ValueError.
    """
    data = resources.files(__package__).joinpath("datasets", dataset.file).read_bytes()
    if dataset.name != "identity":
        return data
    if identity is None:
        raise ValueError("the identity dataset needs a name and an author")
    values = dict(zip(("name", "author"), identity, strict=True))
    escaped = {key: json.dumps(value, ensure_ascii=False)[1:-1] for key, value in values.items()}
    text = PLACEHOLDER.sub(lambda match: escaped[match.group(1)], data.decode("utf-8"))
    return text.encode("utf-8")

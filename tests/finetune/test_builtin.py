"""The shipped datasets: each reads as LLaMA-Factory would read it through its own entry."""

import json
import re

import pytest

from suanli.data import formats
from suanli.finetune import builtin
from suanli.i18n import LANGUAGES, catalogue
from suanli.schemas.finetune import BUILTIN_PATTERN

NAMES = [dataset.name for dataset in builtin.DATASETS]
IDENTITY = ("小算", "算力团队")


def records(dataset: builtin.BuiltinDataset) -> list:
    return json.loads(builtin.content(dataset, IDENTITY))


@pytest.mark.parametrize("name", NAMES)
def test_each_dataset_passes_the_format_check_of_its_entry(name: str) -> None:
    dataset = builtin.get(name)
    assert dataset is not None
    # Through dataset_info.json, as a run's folder has it and as inspection reads it.
    info = formats.read_dataset_info(json.dumps({name: builtin.entry(dataset)}))
    assert info.problems == []
    entry = info.entries[name]
    assert entry.file_name == dataset.file
    report = formats.check_dataset(
        records(dataset),
        formatting=entry.formatting,
        columns=entry.columns,
        tags=entry.tags,
        ranking=entry.ranking,
    )
    assert report.checked == dataset.rows
    assert 30 <= dataset.rows <= 60
    if dataset.stage == "pt":
        # Pre-training reads the text alone: the only finding allowed is the absent answer.
        assert report.counts == {"web.data.format.missing_column": dataset.rows}
        assert {f.problem.params["column"] for f in report.findings} == {"output"}
    else:
        assert report.ok, report.findings


@pytest.mark.parametrize("name", NAMES)
def test_each_dataset_is_described_in_both_languages(name: str) -> None:
    dataset = builtin.get(name)
    assert dataset is not None
    assert re.fullmatch(BUILTIN_PATTERN, name)
    assert dataset.description == f"label.finetune.dataset.{name}"
    assert dataset.licence == "Apache-2.0"
    for language in LANGUAGES:
        assert catalogue(language)[dataset.description].strip()


def test_stages_match_the_formats() -> None:
    by_stage = {dataset.name: dataset.stage for dataset in builtin.DATASETS}
    assert by_stage["dpo_demo"] == "dpo"
    assert by_stage["pt_demo"] == "pt"
    assert all(dataset.ranking == (dataset.stage == "dpo") for dataset in builtin.DATASETS)
    assert len(set(NAMES)) == len(NAMES)
    assert builtin.get("no_such_dataset") is None


def test_tool_calls_carry_their_schemas() -> None:
    dataset = builtin.get("glaive_toolcall_demo")
    assert dataset is not None
    rows = records(dataset)
    calls = 0
    for row in rows:
        for tool in json.loads(row["tools"]):
            assert {"name", "description", "parameters"} <= tool.keys()
        for message in row["conversations"]:
            if message["from"] == "function_call":
                calls += 1
                assert {"name", "arguments"} <= json.loads(message["value"]).keys()
    assert calls >= len(rows) // 2


def test_identity_is_filled_in_and_stays_valid_json_with_quotes_and_backslashes() -> None:
    dataset = builtin.get("identity")
    assert dataset is not None
    template = builtin.content(dataset, ("{{name}}", "{{author}}")).decode()
    assert "{{name}}" in template and "{{author}}" in template
    name, author = 'Ada "the \\ bot"', 'Lab\\n "Q" {{name}}'
    text = builtin.content(dataset, (name, author)).decode()
    rows = json.loads(text)  # raises if a quote or a backslash broke the JSON
    answers = " ".join(row["output"] for row in rows)
    assert name in answers and author in answers
    # One pass: the author's own "{{name}}" is kept as written, no other placeholder is left.
    assert answers.replace(author, "").count("{{") == 0
    questions = {row["instruction"] for row in rows}
    assert {"Who are you?", "你是谁？"} <= questions


def test_identity_without_a_name_is_refused() -> None:
    dataset = builtin.get("identity")
    assert dataset is not None
    with pytest.raises(ValueError):
        builtin.content(dataset, None)


def test_other_datasets_ignore_the_identity() -> None:
    dataset = builtin.get("alpaca_en_demo")
    assert dataset is not None
    assert builtin.content(dataset, None) == builtin.content(dataset, IDENTITY)
    assert b"{{" not in builtin.content(dataset, None)

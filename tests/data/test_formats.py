"""LLaMA-Factory dataset formats: recognition, the checks per record, dataset_info.json."""

import json

import pytest

from suanli.data.formats import MAX_FINDINGS, FormatReport, check_dataset, read_dataset_info


def keys(report: FormatReport) -> list[tuple[int, str]]:
    return [(finding.index, finding.problem.key) for finding in report.findings]


ALPACA = {"instruction": "Add 2 and 3.", "input": "", "output": "5", "system": "Be brief."}
SHAREGPT = {
    "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "Weather?"},
        {"from": "function_call", "value": '{"name": "weather"}'},
        {"from": "observation", "value": "sunny"},
        {"from": "gpt", "value": "Sunny."},
    ]
}
OPENAI_STYLE = {
    "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
}


def test_clean_datasets_are_recognised() -> None:
    history = {**ALPACA, "history": [["Hi", "Hello"]]}
    report = check_dataset([ALPACA, history])
    assert (report.formatting, report.checked, report.findings, report.ok) == (
        "alpaca",
        2,
        [],
        True,
    )
    assert check_dataset([SHAREGPT] * 3).formatting == "sharegpt"
    assert check_dataset([SHAREGPT]).ok
    assert check_dataset([OPENAI_STYLE]).ok
    # from/value keys with user/assistant roles: guessed too
    mixed = {"conversations": [{"from": "user", "value": "a"}, {"from": "assistant", "value": "b"}]}
    assert check_dataset([mixed]).ok


def test_alpaca_findings() -> None:
    records = [
        {"instruction": "q"},  # no output
        {"instruction": "q", "output": "   "},
        {"instruction": "q", "output": 5},
        {"instruction": "", "input": "", "output": "a"},
        {"instruction": "q", "output": "a", "history": [["only one"]]},
        ["not", "an", "object"],
    ]
    report = check_dataset(records, formatting="alpaca")
    assert keys(report) == [
        (0, "web.data.format.missing_column"),
        (1, "web.data.format.empty_response"),
        (2, "web.data.format.not_string"),
        (3, "web.data.format.empty_prompt"),
        (4, "web.data.format.bad_history"),
        (5, "web.data.format.not_object"),
    ]
    assert report.findings[0].problem.params == {"record": 1, "column": "output"}
    assert not report.ok


def test_sharegpt_findings() -> None:
    def conversation(*turns: tuple[str, object]) -> dict:
        return {"conversations": [{"from": role, "value": value} for role, value in turns]}

    records = [
        conversation(("human", "a"), ("gpt", "b")),
        conversation(("gpt", "b"), ("human", "a")),
        conversation(("human", "a"), ("robot", "b")),
        conversation(("human", "a"), ("gpt", "b"), ("human", "c")),
        conversation(("human", "a"), ("gpt", 3)),
        conversation(("human", "a"), ("gpt", "")),
        conversation(("system", "s")),
        conversation(("human", "a"), ("system", "s")),
        {"conversations": "hello"},
        {"conversations": [{"from": "human"}]},
        {"other": 1},
        conversation((["a", "list"], "a"), ("gpt", "b")),
    ]
    report = check_dataset(records)
    assert report.formatting == "sharegpt"
    assert keys(report) == [
        (1, "web.data.format.roles_out_of_order"),
        (2, "web.data.format.unknown_role"),
        (3, "web.data.format.no_final_answer"),
        (4, "web.data.format.turn_not_string"),
        (5, "web.data.format.empty_answer"),
        (6, "web.data.format.empty_conversation"),
        (7, "web.data.format.roles_out_of_order"),
        (8, "web.data.format.not_list"),
        (9, "web.data.format.bad_message"),
        (10, "web.data.format.missing_column"),
        (11, "web.data.format.unknown_role"),
    ]
    assert report.findings[1].problem.params == {"record": 3, "turn": 2, "role": "robot"}
    assert report.findings[0].problem.params == {"record": 2, "turn": 1, "role": "gpt"}


def test_findings_are_capped_and_counted_and_limit_stops() -> None:
    records = [{"instruction": "q", "output": ""}] * 50 + [{"instruction": "q"}] * 5
    report = check_dataset(records)
    assert len(report.findings) == MAX_FINDINGS
    assert report.counts == {
        "web.data.format.empty_response": 50,
        "web.data.format.missing_column": 5,
    }
    limited = check_dataset(iter(records), limit=10)
    assert (limited.checked, limited.truncated) == (10, True)


def test_unrecognised_and_empty() -> None:
    report = check_dataset([{"text": "pretraining text", "id": 1}])
    assert report.formatting is None
    assert report.findings[0].problem.params == {"record": 1, "fields": "text, id"}
    assert keys(check_dataset([])) == [(0, "web.data.format.empty")]
    unhashable_roles = {"conversations": [{"from": ["x"], "value": "a"}]}
    assert keys(check_dataset([unhashable_roles])) == [(0, "web.data.format.unknown_role")]
    with pytest.raises(ValueError):
        check_dataset([ALPACA], formatting="yaml")


def test_dataset_info_entry_mapping_is_applied() -> None:
    info = read_dataset_info(
        json.dumps(
            {
                "chat": {
                    "file_name": "chat.jsonl",
                    "formatting": "sharegpt",
                    "columns": {"messages": "turns", "system": "sys"},
                    "tags": {
                        "role_tag": "speaker",
                        "content_tag": "text",
                        "user_tag": "me",
                        "assistant_tag": "bot",
                    },
                },
                "qa": {"file_name": "qa.json", "columns": {"prompt": "q", "response": "a"}},
            }
        )
    )
    assert info.problems == []
    chat, qa = info.entries["chat"], info.entries["qa"]
    assert (qa.formatting, qa.file_name, qa.ranking) == ("alpaca", "qa.json", False)
    turns = {"turns": [{"speaker": "me", "text": "hi"}, {"speaker": "bot", "text": "yo"}]}
    options = {"columns": chat.columns, "tags": chat.tags}
    assert check_dataset([turns], formatting=chat.formatting, **options).ok
    # The entry's names are LLaMA-Factory's: default-named data does not pass for this entry.
    report = check_dataset([SHAREGPT], formatting=chat.formatting, **options)
    assert keys(report) == [(0, "web.data.format.missing_column")]
    assert check_dataset([{"q": "1+1", "a": "2"}], formatting="alpaca", columns=qa.columns).ok
    # Without an entry, sharegpt data keyed "messages" reads; with the default entry it does not.
    assert check_dataset([OPENAI_STYLE], formatting="sharegpt").ok
    assert not check_dataset([OPENAI_STYLE], formatting="sharegpt", columns={}, tags={}).ok


def test_ranking_sharegpt() -> None:
    record = {
        "conversations": [{"from": "human", "value": "q"}],
        "chosen": {"from": "gpt", "value": "good"},
        "rejected": {"from": "gpt", "value": "bad"},
    }
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
    assert check_dataset([record], formatting="sharegpt", columns=columns, ranking=True).ok
    report = check_dataset([SHAREGPT], formatting="sharegpt", columns=columns, ranking=True)
    assert "web.data.format.ends_on_answer" in report.counts


def test_dataset_info_problems() -> None:
    text = json.dumps(
        {
            "nofile": {"formatting": "alpaca"},
            "hub": {"hf_hub_url": "org/data"},
            "escape": {"file_name": "../../etc/passwd"},
            "weird": {"file_name": "a.json", "formatting": "yaml"},
            "list": [1, 2],
            "cols": {
                "file_name": "b.json",
                "columns": {"prompt": 3, "colour": "x"},
                "ranking": "y",
            },
        }
    )
    info = read_dataset_info(text)
    assert sorted(info.entries) == ["cols", "hub"]
    assert info.entries["hub"].file_name is None
    assert info.entries["cols"].columns == {}
    assert [(p.key, p.params) for p in info.problems] == [
        ("web.data.info.file_name_missing", {"dataset": "nofile"}),
        ("web.data.info.bad_file_name", {"dataset": "escape", "file_name": "../../etc/passwd"}),
        ("web.data.info.unknown_formatting", {"dataset": "weird", "formatting": "yaml"}),
        ("web.data.info.entry_not_object", {"dataset": "list"}),
        ("web.data.info.bad_value", {"dataset": "cols", "field": "ranking"}),
        ("web.data.info.bad_value", {"dataset": "cols", "field": "columns.prompt"}),
        ("web.data.info.unknown_key", {"dataset": "cols", "field": "columns", "key": "colour"}),
    ]
    assert read_dataset_info("{").problems[0].key == "web.data.info.not_json"
    assert read_dataset_info("[]").problems[0].key == "web.data.info.not_object"
    assert read_dataset_info("[" * 100_000).problems  # deep nesting: a problem, no crash

"""LLaMA-Factory's dataset formats: recognise a dataset's records and say what it would reject.

LLaMA-Factory reads a dataset through its `dataset_info.json` entry: `formatting` (alpaca or
sharegpt), `columns` naming the record's fields and, for sharegpt, `tags` naming the keys and
role values of each message. It skips a malformed example with a log line, so a bad dataset
trains on fewer examples than its owner thinks; checking before training says which and why.
The names and defaults below are LLaMA-Factory's (`data/README.md`, `DatasetAttr`).
"""

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from suanli.data import paths
from suanli.data.preview import Problem

FORMATTINGS = ("alpaca", "sharegpt", "openai")
COLUMN_DEFAULTS: dict[str, str | None] = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": None,
    "messages": "conversations",
    "system": None,
    "tools": None,
    "images": None,
    "videos": None,
    "audios": None,
    "chosen": None,
    "rejected": None,
    "kto_tag": None,
}
TAG_DEFAULTS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
# The tags of OpenAI-style messages ({"role": "user", "content": …}), guessed when no
# dataset_info.json entry names them.
ROLE_CONTENT_TAGS = {
    **TAG_DEFAULTS,
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
}
SOURCES = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
MAX_FINDINGS = 20
MAX_SHOWN = 80  # characters of a user's value (a role, a column name) put in a message

Report = Callable[..., None]  # report(key, **params): one finding on the record being checked
Checker = Callable[[dict[str, Any], Report], None]


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one record; `index` counts from 0, the message's `record` from 1."""

    index: int
    problem: Problem


@dataclass(frozen=True)
class FormatReport:
    """What `check_dataset` found: the first MAX_FINDINGS findings and a count per key."""

    formatting: str | None
    checked: int
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    truncated: bool = False  # more records than `limit`: only the first were checked

    @property
    def ok(self) -> bool:
        return self.formatting is not None and not self.counts


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a dataset_info.json, with LLaMA-Factory's defaults filled in."""

    name: str
    file_name: str | None  # None for a dataset on a hub or behind a script
    formatting: str
    ranking: bool
    columns: dict[str, str]
    tags: dict[str, str]


@dataclass(frozen=True)
class DatasetInfo:
    """The entries that can be used, and the problems of those and of the others."""

    entries: dict[str, DatasetEntry]
    problems: list[Problem]


# Checking records ----------------------------------------------------------------------------


def check_dataset(
    records: Iterable[Any],
    *,
    formatting: str | None = None,
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    ranking: bool = False,
    limit: int = 100_000,
) -> FormatReport:
    """Check up to `limit` records as LLaMA-Factory would read them.

    With `formatting` None the format is recognised from the first record. `columns` and
    `tags` are a dataset_info.json entry's: given (even empty), they are read the way
    LLaMA-Factory reads them, defaults included; None means "no entry yet", and the column
    and tag names are then guessed from the first record (`conversations` or `messages`,
    `from`/`value` or `role`/`content`). An unknown `formatting` is the caller's mistake
    (entries from `read_dataset_info` have a known one): ValueError.
    """
    if formatting is not None and formatting not in FORMATTINGS:
        raise ValueError(formatting)
    findings: list[Finding] = []
    counts: Counter[str] = Counter()

    def report(index: int, key: str, /, **params: Any) -> None:
        counts[key] += 1
        if len(findings) < MAX_FINDINGS:
            findings.append(Finding(index, Problem(key, {"record": index + 1, **params})))

    checked, truncated = 0, False
    checker: Checker | None = None
    for index, record in enumerate(records):
        if index >= limit:
            truncated = True
            break
        checked += 1
        if not isinstance(record, dict):
            report(index, "web.data.format.not_object")
            continue
        if checker is None:
            # Without an entry, a record with chosen and rejected answers is preference data.
            ranking = ranking or (columns is None and "chosen" in record and "rejected" in record)
            formatting = formatting or _recognise(record, columns)
            if formatting is None:
                report(index, "web.data.format.unrecognised", fields=_shown_keys(record))
                break
            checker = _checker(formatting, record, columns, tags, ranking)
        checker(record, partial(report, index))
    if checked == 0:
        report(0, "web.data.format.empty")
    return FormatReport(formatting, checked, findings, dict(counts), truncated)


def _recognise(record: dict[str, Any], columns: Mapping[str, str] | None) -> str | None:
    names = {**COLUMN_DEFAULTS, **(columns or {})}
    if names["messages"] in record or (columns is None and "messages" in record):
        return "sharegpt"
    if names["prompt"] in record or names["response"] in record:
        return "alpaca"
    return None


def _checker(
    formatting: str,
    first: dict[str, Any],
    columns: Mapping[str, str] | None,
    tags: Mapping[str, str] | None,
    ranking: bool,
) -> Checker:
    """The function that checks one record, its names settled from the entry or the first."""
    names = {**COLUMN_DEFAULTS, **(columns or {})}
    if columns is None and ranking:
        names |= {"chosen": "chosen", "rejected": "rejected"}
    if formatting == "alpaca":
        if columns is None:
            names |= {"system": "system", "history": "history"}
        return lambda record, report: _check_alpaca(record, names, ranking, report)
    if columns is None:
        if names["messages"] not in first and "messages" in first:
            names["messages"] = "messages"
        names["system"], names["tools"] = "system", "tools"
    if tags is None:
        tags = _guess_tags(first.get(names["messages"]))
    roles = {**TAG_DEFAULTS, **tags}
    merge = formatting == "openai"
    return lambda record, report: _check_sharegpt(record, names, roles, ranking, merge, report)


def entry_fields(formatting: str, first: dict[str, Any]) -> dict[str, Any]:
    """A dataset_info.json entry's formatting, ranking, columns and tags for a file that has
    none, from its first record, named the way `check_dataset` guessed them: what
    LLaMA-Factory must be told to read the file as it was checked."""
    ranking = "chosen" in first and "rejected" in first
    columns: dict[str, str] = {"chosen": "chosen", "rejected": "rejected"} if ranking else {}
    if formatting == "alpaca":
        if "text" in first and COLUMN_DEFAULTS["prompt"] not in first:
            columns["prompt"] = "text"  # pre-training text
        columns |= {name: name for name in ("system", "history") if name in first}
        return {"formatting": formatting, "ranking": ranking, "columns": columns, "tags": None}
    messages = "messages" if "messages" in first and "conversations" not in first else None
    columns["messages"] = messages or "conversations"
    columns |= {name: name for name in ("system", "tools") if name in first}
    tags = _guess_tags(first.get(columns["messages"]))
    changed = {key: value for key, value in tags.items() if TAG_DEFAULTS.get(key) != value}
    return {
        "formatting": "sharegpt",
        "ranking": ranking,
        "columns": columns,
        "tags": changed or None,
    }


def _guess_tags(messages: Any) -> dict[str, str]:
    """`from`/`value` or `role`/`content` keys, `human`/`gpt` or `user`/`assistant` roles."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
        return TAG_DEFAULTS
    keys = ROLE_CONTENT_TAGS if "role" in messages[0] and "from" not in messages[0] else {}
    tags = {**TAG_DEFAULTS, **keys}
    said = {
        message.get(tags["role_tag"])
        for message in messages
        if isinstance(message, dict) and isinstance(message.get(tags["role_tag"]), str)
    }
    if not said & {"human", "gpt"} and said & {"user", "assistant"}:
        tags |= {"user_tag": "user", "assistant_tag": "assistant"}
    return tags


def _check_alpaca(record: dict, names: dict, ranking: bool, report: Report) -> None:
    """instruction (and input) make the prompt; output the response; history earlier turns."""
    prompt, query, response = names["prompt"], names["query"], names["response"]
    answers = (names["chosen"], names["rejected"]) if ranking else (response,)
    for column in (prompt, *answers):
        if column and column not in record:
            report("web.data.format.missing_column", column=column)
    for column in (prompt, query, names["system"], *answers):
        value = record.get(column) if column else None
        if value is not None and not isinstance(value, str):
            report("web.data.format.not_string", column=column)
    if prompt in record and not _text(record[prompt]) and not _text(record.get(query)):
        report("web.data.format.empty_prompt", column=prompt)
    for column in answers:
        if column in record and isinstance(record[column], str) and not _text(record[column]):
            report("web.data.format.empty_response", column=column)
    history = record.get(names["history"]) if names["history"] else None
    if history is not None and not _is_history(history):
        report("web.data.format.bad_history", column=names["history"])


def _is_history(value: Any) -> bool:
    """A list of [prompt, response] pairs of strings."""
    return isinstance(value, list) and all(
        isinstance(pair, list | tuple)
        and len(pair) == 2
        and all(isinstance(text, str) for text in pair)
        for pair in value
    )


def _check_sharegpt(
    record: dict, names: dict, roles: dict, ranking: bool, merge: bool, report: Report
) -> None:
    """After an optional system message, user (or observation) and assistant (or function
    call) turns alternate, and the last is the assistant's (the user's for a ranking set,
    whose answers are the chosen and rejected columns)."""
    column = names["messages"]
    if column not in record:
        report("web.data.format.missing_column", column=column)
        return
    messages = record[column]
    if not isinstance(messages, list):
        report("web.data.format.not_list", column=column)
        return
    role_key, content_key = roles["role_tag"], roles["content_tag"]
    for turn, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or role_key not in message or content_key not in message:
            report("web.data.format.bad_message", turn=turn, role=role_key, content=content_key)
            return
    turns = list(enumerate(messages, start=1))
    if turns and turns[0][1][role_key] == roles["system_tag"]:
        turns = turns[1:]
    if merge:
        turns = _merge_observations(turns, roles)
    if not turns:
        report("web.data.format.empty_conversation", column=column)
        return
    _check_turns(turns, roles, ranking, report)
    for name in ("system", "tools"):
        value = record.get(names[name]) if names[name] else None
        if value is not None and not isinstance(value, str):
            report("web.data.format.not_string", column=names[name])
    if ranking:
        for answer in (names["chosen"], names["rejected"]):
            if not answer or not isinstance(record.get(answer), dict):
                report("web.data.format.missing_column", column=answer or "chosen")


def _merge_observations(turns: list[tuple[int, dict]], roles: dict) -> list[tuple[int, dict]]:
    """OpenAI-style data gives each tool result its own message; they make one turn."""
    role_key, observation = roles["role_tag"], roles["observation_tag"]
    merged: list[tuple[int, dict]] = []
    for turn in turns:
        if not (merged and merged[-1][1][role_key] == observation == turn[1][role_key]):
            merged.append(turn)
    return merged


def _check_turns(turns: list[tuple[int, dict]], roles: dict, ranking: bool, report: Report) -> None:
    role_key, content_key = roles["role_tag"], roles["content_tag"]
    asking = (roles["user_tag"], roles["observation_tag"])
    answering = (roles["assistant_tag"], roles["function_tag"])
    known = {*asking, *answering, roles["system_tag"]}
    for position, (turn, message) in enumerate(turns):
        role, content = message[role_key], message[content_key]
        if not isinstance(role, str) or role not in known:
            report("web.data.format.unknown_role", turn=turn, role=_shown(role))
            return
        if role not in (asking, answering)[position % 2]:
            report("web.data.format.roles_out_of_order", turn=turn, role=role)
            return
        if message.get("tool_calls") and role in answering:
            continue  # OpenAI-style function call: the content may be empty or null
        if not isinstance(content, str):
            report("web.data.format.turn_not_string", turn=turn)
        elif role in answering and not _text(content):
            report("web.data.format.empty_answer", turn=turn)
    if len(turns) % 2 != (1 if ranking else 0):
        key = "web.data.format.ends_on_answer" if ranking else "web.data.format.no_final_answer"
        report(key, turn=turns[-1][0])


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


def _shown_keys(record: dict[str, Any]) -> str:
    return _shown(", ".join(str(key) for key in list(record)[:20]))


# dataset_info.json ---------------------------------------------------------------------------


def read_dataset_info(text: str) -> DatasetInfo:
    """Parse a dataset_info.json; an entry LLaMA-Factory could not use is left out, with why."""
    problems: list[Problem] = []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        problem = Problem("web.data.info.not_json", {"line": error.lineno, "column": error.colno})
        return DatasetInfo({}, [problem])
    except RecursionError:
        return DatasetInfo({}, [Problem("web.data.info.not_object", {})])
    if not isinstance(document, dict):
        return DatasetInfo({}, [Problem("web.data.info.not_object", {})])
    entries = {}
    for name, attributes in document.items():
        entry = _entry(name, attributes, problems)
        if entry is not None:
            entries[name] = entry
    return DatasetInfo(entries, problems)


def _entry(name: str, attributes: Any, problems: list[Problem]) -> DatasetEntry | None:
    dataset = _shown(name)

    def problem(key: str, /, **params: Any) -> None:
        problems.append(Problem(key, {"dataset": dataset, **params}))

    if not isinstance(attributes, dict):
        problem("web.data.info.entry_not_object")
        return None
    file_name = attributes.get("file_name")
    if not any(source in attributes for source in SOURCES):
        if file_name is None:
            problem("web.data.info.file_name_missing")
            return None
        if not isinstance(file_name, str):
            problem("web.data.info.bad_value", field="file_name")
            return None
        try:
            paths.check(file_name)
        except paths.BadPath:
            problem("web.data.info.bad_file_name", file_name=_shown(file_name))
            return None
    else:
        file_name = None
    formatting = attributes.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        problem("web.data.info.unknown_formatting", formatting=_shown(formatting))
        return None
    ranking = attributes.get("ranking", False)
    if not isinstance(ranking, bool):
        problem("web.data.info.bad_value", field="ranking")
        ranking = False
    columns = _names(attributes, "columns", COLUMN_DEFAULTS, problem)
    tags = _names(attributes, "tags", TAG_DEFAULTS, problem)
    return DatasetEntry(name, file_name, formatting, ranking, columns, tags)


def _names(attributes: dict, group: str, known: Mapping, problem: Report) -> dict[str, str]:
    """The `columns` or `tags` mapping: known keys to strings; a wrong one is reported, dropped."""
    given = attributes.get(group, {})
    if not isinstance(given, dict):
        problem("web.data.info.bad_value", field=group)
        return {}
    names = {}
    for key, value in given.items():
        if key not in known:
            problem("web.data.info.unknown_key", field=group, key=_shown(key))
        elif not isinstance(value, str) or not value:
            problem("web.data.info.bad_value", field=f"{group}.{key}")
        else:
            names[key] = value
    return names

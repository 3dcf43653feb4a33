"""YAML and JSON from users (a job spec typed into the console, a file given to the CLI),
read within bounds.

A document from outside must never cost more than its size: a few hundred bytes of YAML
anchors and aliases expand to gigabytes ("billion laughs"), deep nesting overflows the stack
(libyaml's composer crashes the process), and a file may be endless. So every such document
is read here, and only here:

- at most MAX_BYTES, counted before parsing (a file is never read past that);
- YAML anchors and aliases (`&name`, `*name`) are refused, naming the line: nothing may
  expand; tags beyond the JSON-like core types (`!!binary`, `!!set`, ...) are refused too;
- at most MAX_DEPTH levels of nesting and MAX_VALUES values;
- dates stay text (`2024-01-01` is a string, as in JSON): a document is JSON-shaped.

What is wrong is a DocumentError: a catalogue key and its parameters, for the console (a
field's message) and the CLI (one line) to say in the reader's language. Parsing is CPU
work: servers call this in a worker thread, never on the event loop.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml

MAX_BYTES = 2**20  # a job spec's script may be 100 KB; nothing sent is near a mebibyte
MAX_DEPTH = 32
MAX_VALUES = 50_000  # scalars, lists and mappings: a spec has hundreds

_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_CORE + name for name in ("str", "int", "float", "bool", "null", "seq", "map")}
# libyaml where the wheel has it (fast, and only its parser is used on unchecked input: its
# composer recurses in C without a limit); PyYAML's own parser otherwise.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DocumentError(ValueError):
    """Why a document was refused: a catalogue key (`error.…`) and its parameters."""

    def __init__(self, key: str, **params: Any):
        self.key, self.params = key, params
        super().__init__(key, params)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """The safe loader without implicit timestamps: values are what JSON has."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _CORE + "timestamp"]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


def load_yaml(text: str) -> Any:
    """A YAML document (JSON is YAML too) as plain data, or a DocumentError."""
    _check_size(len(text.encode("utf-8", "surrogatepass")))
    _check_events(text)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader, checked above)
    except yaml.YAMLError as error:
        raise DocumentError("error.yaml_syntax", line=_line(error)) from None
    except ValueError:  # an integer of more digits than Python converts (sys.int_info)
        raise DocumentError("error.document_value") from None


def load_json(text: str) -> Any:
    """A JSON document as plain data, or a DocumentError."""
    _check_size(len(text.encode("utf-8", "surrogatepass")))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DocumentError("error.json_syntax", line=error.lineno, column=error.colno) from None
    except RecursionError:
        raise DocumentError("error.document_too_deep", limit=MAX_DEPTH) from None
    _check_shape(data)
    return data


def read_text(path: Path) -> str:
    """A file's text, read no further than MAX_BYTES (a device or a huge file costs nothing
    more); OSError as open() raises it."""
    with path.open("rb") as file:
        data = file.read(MAX_BYTES + 1)
    _check_size(len(data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError("error.document_encoding") from None


def read_file(path: Path) -> Any:
    """A spec file: JSON when it is named *.json, YAML otherwise."""
    text = read_text(path)
    return load_json(text) if path.suffix.lower() == ".json" else load_yaml(text)


def _check_size(size: int) -> None:
    if size > MAX_BYTES:
        raise DocumentError("error.document_too_large", limit=MAX_BYTES)


def _check_events(text: str) -> None:
    """Walk the parser's events (no tree is built, nothing recurses) and refuse anchors,
    aliases, foreign tags, deep nesting and too many values before anything is composed."""
    depth = values = 0
    for event in _events(text):
        if not isinstance(event, yaml.NodeEvent):
            if isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            continue
        line = event.start_mark.line + 1
        if event.anchor is not None:
            raise DocumentError("error.yaml_alias", line=line)
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _ALLOWED_TAGS:
            raise DocumentError("error.yaml_tag", line=line, tag=tag)
        values += 1
        if values > MAX_VALUES:
            raise DocumentError("error.document_too_many_values", limit=MAX_VALUES)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise DocumentError("error.document_too_deep", limit=MAX_DEPTH)


def _events(text: str) -> Iterator[yaml.Event]:
    try:
        yield from yaml.parse(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise DocumentError("error.yaml_syntax", line=_line(error)) from None


def _check_shape(data: Any) -> None:
    """Depth and number of values of parsed data, walked without recursion."""
    stack, values = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise DocumentError("error.document_too_many_values", limit=MAX_VALUES)
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise DocumentError("error.document_too_deep", limit=MAX_DEPTH)
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)


def _line(error: yaml.YAMLError) -> int:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return mark.line + 1 if mark is not None else 1

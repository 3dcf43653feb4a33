"""How the CLI shows things: Rich tables for people, `--json` for scripts, errors in red
(under `--json`, one JSON object on stderr instead).

Every string goes through the catalogues, in the language of the user's locale.
"""

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from suanli.client import ApiError
from suanli.i18n import normalize, translate

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts (errors too, on stderr).")
]
# Under --json, errors are JSON too; main() decides once per run, before any command starts,
# so that usage errors (found before a command's options are read) are JSON as well.
_errors_as_json = False


def errors_as_json(on: bool) -> None:
    global _errors_as_json
    _errors_as_json = on


def language() -> str:
    for variable in ("SUANLI_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if value:
            return normalize(value.split(".")[0])
    return "en"


def t(key: str, **params: Any) -> str:
    return translate(key, language(), **params)


def console() -> Console:
    # Made on each call so that tests capturing sys.stdout see the output.
    # No markup: names and descriptions are user data and must print as written.
    # Piped output gets room for whole rows instead of the 80 columns Rich assumes.
    width = None if sys.stdout.isatty() else 200
    return Console(file=sys.stdout, highlight=False, markup=False, soft_wrap=True, width=width)


def error_console() -> Console:
    return Console(file=sys.stderr, highlight=False, markup=False, soft_wrap=True)


def label(group: str, value: object) -> str:
    """A stored value (a role, a token kind, an audit result) as the reader's word for it."""
    return t(f"label.{group}.{value}") if value else "-"


def say(key: str, **params: Any) -> None:
    console().print(t(key, **params))


def print_json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def print_json_line(data: dict[str, Any]) -> None:
    """One compact JSON object on a line of its own (JSON Lines, for what streams)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def stream_log(chunks: Iterable[str], json: bool) -> None:
    """A log arriving in chunks cut anywhere: written as it comes, or under --json as JSON
    Lines, one {"line": …} per line (the last one also when no newline ends it)."""
    if not json:
        for text in chunks:
            sys.stdout.write(text)
            sys.stdout.flush()
        return
    rest = ""
    for text in chunks:
        *whole, rest = (rest + text).split("\n")
        for line in whole:
            print_json_line({"line": line})
    if rest:
        print_json_line({"line": rest})


def report(json: bool, key: str, data: Any, **params: Any) -> None:
    """What a command did: the catalogue's sentence for people, `data` for scripts."""
    if json:
        print_json(data)
    else:
        say(key, **params)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table whose headers are catalogue keys under `label.col.`."""
    grid = Table(show_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(t(f"label.col.{column}"))
    for row in rows:
        grid.add_row(*(value if isinstance(value, Text) else Text(cell(value)) for value in row))
    console().print(grid)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """One object as aligned `label: value` lines."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in pairs:
        grid.add_row(t(f"label.col.{key}"), Text(cell(value)))
    console().print(grid)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return t("cli.yes") if value else t("cli.no")
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def show_api_error(error: ApiError) -> None:
    problem = error.problem
    errors = [item.model_dump(mode="json") for item in problem.errors]
    if _errors_as_json:
        _json_error(problem.type, problem.title, problem.detail, problem.status, errors)
        return
    fail(f"{problem.title}: {problem.detail}", errors=errors)


def fail(message: str, kind: str = "error", errors: Sequence[dict[str, str]] = ()) -> None:
    """An error found on this side (`kind`: error, usage, connection, config, not-logged-in,
    aborted): a red line, or under --json the same object an API error gives, with the
    type `urn:suanli:cli:<kind>` and no HTTP status."""
    if _errors_as_json:
        title = t("cli.problem." + kind.replace("-", "_"))
        _json_error(f"urn:suanli:cli:{kind}", title, message, None, list(errors))
        return
    error_console().print(Text.assemble((t("cli.error") + " ", "bold red"), message))
    for item in errors:
        if not message.endswith(item["message"]):  # already said
            line = f"{item['field']}: {item['message']}"
            error_console().print(Text.assemble(("  • ", "red"), line))


def _json_error(
    type_: str, title: str, detail: str, status: int | None, errors: list[dict[str, str]]
) -> None:
    problem = {"type": type_, "title": title, "detail": detail, "status": status}
    sys.stderr.write(json.dumps({"error": {**problem, "errors": errors}}, ensure_ascii=False))
    sys.stderr.write("\n")

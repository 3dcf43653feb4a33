"""The CLI's Typer application: Typer's own, with help that shows no type beside a flag.

Typer's help prints a value type next to every option, flags included (`--json <bool>`,
`--help <bool>`), which reads as if each wanted a value. A flag takes none, so its type is left
out; options that take a value keep theirs (`--project <str>`).
"""

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


class _FlagsWithoutType:
    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            takes_no_value = getattr(param, "is_flag", False) or getattr(param, "count", False)
            if takes_no_value and param.metavar is None:
                param.metavar = ""  # shown as is: nothing
        super().format_help(ctx, formatter)  # type: ignore[misc]


class Command(_FlagsWithoutType, TyperCommand):
    pass


class Group(_FlagsWithoutType, TyperGroup):
    pass


class App(typer.Typer):
    """A Typer app whose groups and commands print their flags without a type."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(cls=Group, **settings)

    def command(self, name: str | None = None, *, cls: Any = None, **settings: Any) -> Any:
        return super().command(name, cls=cls or Command, **settings)

"""The signed-in client the commands share."""

import typer

from suanli.cli import config
from suanli.cli.output import fail, language, t
from suanli.client import Client


def connect() -> Client:
    """A client for the saved server and token; exits with a hint when not logged in."""
    saved = config.load()
    if not saved.token:
        fail(t("cli.not_logged_in"), "not-logged-in")
        raise typer.Exit(1)
    return Client(saved.url, saved.token, language=language())


def read_secret(prompt_key: str, *, from_stdin: bool, confirm: bool = False) -> str:
    """A password from standard input (for scripts) or a hidden prompt."""
    if from_stdin:
        import sys

        return sys.stdin.readline().rstrip("\n")
    # On stderr, so that stdout holds only what the command prints (JSON under --json).
    return typer.prompt(t(prompt_key), hide_input=True, confirmation_prompt=confirm, err=True)

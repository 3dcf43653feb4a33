"""`suanli ssh-keys`: the public keys that let you SSH into your dev environments."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from suanli.cli.commands import App
from suanli.cli.output import JsonOption, fail, print_json, report, say, t, table
from suanli.cli.session import connect

app = App(help="Manage your SSH public keys.", no_args_is_help=True)
DEFAULT_KEY = Path("~/.ssh/id_ed25519.pub")


@app.command("list")
def list_keys(json: JsonOption = False) -> None:
    """List your SSH public keys."""
    with connect() as client:
        keys = client.ssh_keys.list()
    if json:
        print_json(keys)
        return
    table(
        ["id", "name", "algorithm", "fingerprint", "created", "last_used"],
        [(k.id, k.name, k.algorithm, k.fingerprint, k.created_at, k.last_used_at) for k in keys],
    )


@app.command()
def add(
    file: Annotated[
        str,
        typer.Argument(help="A public key file (.pub), or - to read the key from stdin."),
    ] = str(DEFAULT_KEY),
    name: Annotated[str, typer.Option(help="A name for it (default: the key's comment).")] = "",
    json: JsonOption = False,
) -> None:
    """Add a public key: suanli ssh-keys add ~/.ssh/id_ed25519.pub"""
    line = _read_key(file)
    with connect() as client:
        key = client.ssh_keys.add(line, name)
    if json:
        print_json(key)
        return
    say("cli.ssh_key_added", id=key.id, name=key.name, fingerprint=key.fingerprint)


@app.command()
def remove(
    key_id: Annotated[int, typer.Argument(help="Key id from 'ssh-keys list'.")],
    json: JsonOption = False,
) -> None:
    """Remove a key: its holder can no longer SSH in as you."""
    with connect() as client:
        client.ssh_keys.remove(key_id)
    report(json, "cli.ssh_key_removed", {"id": key_id, "removed": True}, id=key_id)


def _read_key(file: str) -> str:
    """The public key line in `file` (or stdin). A private key is refused here, before it
    could leave this computer."""
    if file == "-":
        text, where = sys.stdin.read(), "stdin"
    else:
        path = Path(file).expanduser()
        where = str(path)
        if not path.exists():
            fail(t("cli.ssh_key_no_file", path=where))
            raise typer.Exit(1)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            fail(t("cli.ssh_key_unreadable", path=where, reason=reason))
            raise typer.Exit(1) from None
    if "PRIVATE KEY" in text:
        fail(t("cli.ssh_key_private_file", path=where))
        raise typer.Exit(1)
    line = text.strip()
    if not line:
        fail(t("cli.ssh_key_empty", path=where))
        raise typer.Exit(1)
    return line

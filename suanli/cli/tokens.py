"""`suanli tokens`: your API tokens."""

from enum import StrEnum
from typing import Annotated

import typer

from suanli.cli.commands import App
from suanli.cli.output import JsonOption, label, print_json, report, say, table
from suanli.cli.session import connect

app = App(help="Manage your API tokens.", no_args_is_help=True)


class TokenKind(StrEnum):
    api = "api"
    metrics = "metrics"


@app.command("list")
def list_tokens(json: JsonOption = False) -> None:
    """List your live tokens (the secret itself is never shown again)."""
    with connect() as client:
        tokens = client.tokens.list()
    if json:
        print_json(tokens)
        return
    table(
        ["id", "name", "kind", "prefix", "created", "expires", "last_used"],
        [
            (
                k.id,
                k.name,
                label("kind", k.kind),
                k.prefix + "…",
                k.created_at,
                k.expires_at,
                k.last_used_at,
            )
            for k in tokens
        ],
    )


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. 'ci'.")],
    days: Annotated[int | None, typer.Option(help="Expire after this many days.")] = None,
    kind: Annotated[
        TokenKind,
        typer.Option(help="api: everything you may do; metrics: only /metrics (Prometheus)."),
    ] = TokenKind.api,
    json: JsonOption = False,
) -> None:
    """Create a token for scripts. It is printed once: store it now."""
    with connect() as client:
        created = client.tokens.create(name, expires_in_days=days, kind=kind.value)
    if json:
        print_json(created)
        return
    say("cli.token_created", name=created.name, id=created.id)
    print(created.token)


@app.command()
def revoke(
    token_id: Annotated[int, typer.Argument(help="Token id from 'tokens list'.")],
    json: JsonOption = False,
) -> None:
    """Revoke a token at once."""
    with connect() as client:
        client.tokens.revoke(token_id)
    report(json, "cli.token_revoked", {"id": token_id, "revoked": True}, id=token_id)

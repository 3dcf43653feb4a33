"""`suanli users`: user administration (administrators)."""

from typing import Annotated

import typer

from suanli.cli.commands import App
from suanli.cli.output import JsonOption, fields, print_json, report, t, table
from suanli.cli.session import connect, read_secret
from suanli.schemas.accounts import UserOut

app = App(help="Manage users (administrators).", no_args_is_help=True)
Name = Annotated[str, typer.Argument(help="User name.")]
PasswordStdin = Annotated[bool, typer.Option(help="Read the password from stdin.")]


def _show(user: UserOut, json: bool) -> None:
    if json:
        print_json(user)
        return
    fields(
        [
            ("name", user.name),
            ("display_name", user.display_name),
            ("email", user.email),
            ("admin", user.is_admin),
            ("disabled", user.is_disabled),
            ("created", user.created_at),
            ("last_login", user.last_login_at),
        ]
    )


@app.command("list")
def list_users(json: JsonOption = False) -> None:
    """List all users."""
    with connect() as client:
        users = client.users.list()
    if json:
        print_json(users)
        return
    table(
        ["name", "display_name", "admin", "disabled", "last_login"],
        [(u.name, u.display_name, u.is_admin, u.is_disabled, u.last_login_at) for u in users],
    )


@app.command()
def create(
    name: Name,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False,
    display_name: Annotated[str, typer.Option()] = "",
    email: Annotated[str, typer.Option()] = "",
    password_stdin: PasswordStdin = False,
    json: JsonOption = False,
) -> None:
    """Create a user. You are asked for the password twice unless it comes from stdin."""
    password = read_secret("cli.prompt_new_password", from_stdin=password_stdin, confirm=True)
    with connect() as client:
        user = client.users.create(
            name, password, is_admin=admin, display_name=display_name, email=email
        )
    report(json, "cli.user_created", user, name=user.name)


@app.command()
def show(name: Name, json: JsonOption = False) -> None:
    """Show one user."""
    with connect() as client:
        _show(client.users.get(name), json)


@app.command()
def disable(name: Name, json: JsonOption = False) -> None:
    """Disable a user: they cannot sign in, and all their tokens are revoked."""
    with connect() as client:
        user = client.users.update(name, is_disabled=True)
    report(json, "cli.user_disabled", user, name=name)


@app.command()
def enable(name: Name, json: JsonOption = False) -> None:
    """Enable a disabled user again."""
    with connect() as client:
        user = client.users.update(name, is_disabled=False)
    report(json, "cli.user_enabled", user, name=name)


@app.command("set-admin")
def set_admin(
    name: Name,
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the role away.")] = False,
    json: JsonOption = False,
) -> None:
    """Make a user an administrator (or, with --revoke, no longer one)."""
    with connect() as client:
        user = client.users.update(name, is_admin=not revoke)
    report(json, "cli.admin_revoked" if revoke else "cli.admin_granted", user, name=name)


@app.command("reset-password")
def reset_password(
    name: Name, password_stdin: PasswordStdin = False, json: JsonOption = False
) -> None:
    """Set a new password for a user; their login sessions end."""
    password = read_secret("cli.prompt_new_password", from_stdin=password_stdin, confirm=True)
    with connect() as client:
        client.users.reset_password(name, password)
    report(json, "cli.password_reset", {"name": name, "password_reset": True}, name=name)


@app.command()
def delete(
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json: JsonOption = False,
) -> None:
    """Delete a user, their tokens and memberships. The audit trail keeps their name."""
    if not yes:
        typer.confirm(t("cli.confirm_delete_user", name=name), abort=True, err=True)
    with connect() as client:
        client.users.delete(name)
    report(json, "cli.user_deleted", {"name": name, "deleted": True}, name=name)

"""`suanli`: the root command, the server, and signing in and out."""

import logging
import shutil
import socket
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
import uvicorn

from suanli import __version__
from suanli.cli import (
    admin,
    audit,
    config,
    data,
    deployments,
    envs,
    finetunes,
    jobs,
    monitoring,
    nodes,
    projects,
    services,
    sshkeys,
    tokens,
    users,
)
from suanli.cli.commands import App
from suanli.cli.output import (
    JsonOption,
    errors_as_json,
    fail,
    fields,
    language,
    print_json,
    print_json_line,
    report,
    say,
    show_api_error,
    t,
)
from suanli.cli.session import connect, read_secret
from suanli.client import ApiError, Client

app = App(
    name="suanli",
    help="Suanli (算力): share GPU servers across projects and people.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(users.app, name="users")
app.add_typer(tokens.app, name="tokens")
app.add_typer(sshkeys.app, name="ssh-keys")
app.add_typer(projects.app, name="projects")
app.add_typer(projects.members_app, name="members")
app.add_typer(projects.quota_app, name="quota")
app.command("audit")(audit.audit)
app.command("run", context_settings={"allow_interspersed_args": False})(jobs.run)
app.command("submit")(jobs.submit)
app.add_typer(jobs.app, name="jobs")
app.add_typer(envs.app, name="envs")
app.add_typer(deployments.app, name="deployments")
app.add_typer(services.app, name="services")
app.add_typer(services.keys_app, name="keys")
app.add_typer(services.prompts_app, name="prompts")
app.add_typer(finetunes.app, name="finetune")
app.add_typer(data.datasets_app, name="datasets")
app.add_typer(data.models_app, name="models")
app.add_typer(data.imports_app, name="imports")
app.add_typer(admin.app, name="admin")
app.add_typer(nodes.nodes_app, name="nodes")
app.add_typer(nodes.gpus_app, name="gpus")
app.command("alerts")(monitoring.alerts)
app.command("metrics")(monitoring.metrics)


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port; 0 picks a free one.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where state is kept.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL; SQLite if unset.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Start the Suanli server (SQLite in the data directory unless a database URL is set).
    With --json, what it prints once it listens is one JSON object on a line."""
    from suanli import backends
    from suanli.app import Runtime, create_app, prepare
    from suanli.db.engine import Database

    settings = admin.server_settings(
        host=host, port=port, data_dir=data_dir, database_url=database_url
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    database = Database(settings.effective_database_url)
    generated = prepare(settings, database)
    listener = _listen(settings.host, settings.port)
    bound_port = listener.getsockname()[1]
    settings = settings.model_copy(update={"port": bound_port})
    url = settings.effective_public_url
    name, cli = settings.admin_username, _cli_command()
    if json:
        print_json_line(
            {
                "version": __version__,
                "url": url,
                "docs": f"{url}/docs",
                "data_dir": str(settings.data_dir),
                "database": database.dialect,
                "admin": {"name": name, "generated_password": generated or None},
                "login": f"{cli} login {url} --username {name}",
            }
        )
    else:
        say("cli.server_running", version=__version__, url=url)
        say("cli.server_console", url=url, name=name)
        say("cli.server_docs", url=url)
        say("cli.server_data", path=str(settings.data_dir), database=database.dialect)
        if generated:
            say("cli.server_admin_generated", name=name, password=generated)
        say("cli.server_login", url=url, name=name, cli=cli)
    sys.stdout.flush()
    backend = backends.create(settings)
    runtime = Runtime(settings, database, backend)
    uv = uvicorn.Config(
        create_app(settings, database, runtime),
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        # Browsers following a job's log hold a stream open; do not wait for them forever.
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(uv).run(sockets=[listener])


def _cli_command() -> str:
    """How to call this CLI from a shell: `suanli`, or its full path when it lives in a
    virtual environment that is not activated (as the one `scripts/start` makes)."""
    here = Path(sys.prefix) / "bin" / "suanli"
    found = shutil.which("suanli")
    in_venv = sys.prefix != sys.base_prefix
    if in_venv and here.exists() and (found is None or Path(found) != here):
        return str(here)
    return "suanli"


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        fail(t("cli.cannot_listen", host=host, port=port, reason=error.strerror or str(error)))
        raise typer.Exit(1) from error
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


@app.command()
def login(
    url: Annotated[str | None, typer.Argument(help="Server URL, e.g. http://gpu1:8686")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u")] = None,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
    json: JsonOption = False,
) -> None:
    """Sign in and keep a session token in your config file (mode 600)."""
    saved = config.load()
    url = (url or saved.url).rstrip("/")
    username = username or saved.username or typer.prompt(t("cli.prompt_username"), err=True)
    password = read_secret("cli.prompt_password", from_stdin=password_stdin)
    with Client(url, language=None) as client:
        result = client.login(username, password, token_name=f"cli@{socket.gethostname()}"[:64])
    path = config.save(config.CliConfig(url=url, username=username, token=result.token))
    data = {"url": url, "user": result.user.model_dump(mode="json"), "config": str(path)}
    report(json, "cli.logged_in", data, name=result.user.name, url=url, path=str(path))


@app.command()
def logout(json: JsonOption = False) -> None:
    """Revoke the session token saved by `suanli login` and forget it (a SUANLI_TOKEN in the
    environment is left alone: it is not this login's to revoke)."""
    saved = config.load_file()
    revoked = False
    if saved.token:
        with Client(saved.url, saved.token, language=language()) as client:
            try:
                client.logout()
                revoked = True
            except ApiError as error:
                if error.status != 401:
                    raise
    config.forget()
    report(json, "cli.logged_out", {"logged_out": True, "token_revoked": revoked})


@app.command()
def whoami(json: JsonOption = False) -> None:
    """Show who you are signed in as."""
    with connect() as client:
        me = client.whoami()
    if json:
        print_json(me)
        return
    fields(
        [
            ("name", me.name),
            ("display_name", me.display_name),
            ("email", me.email),
            ("admin", me.is_admin),
            ("server", config.load().url),
        ]
    )


@app.command()
def passwd(
    password_stdin: Annotated[
        bool, typer.Option(help="Read the current and the new password from stdin, one a line.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Change your password. Your other login sessions end."""
    current = read_secret("cli.prompt_current_password", from_stdin=password_stdin)
    new = read_secret("cli.prompt_new_password", from_stdin=password_stdin, confirm=True)
    with connect() as client:
        client.change_password(current, new)
    report(json, "cli.password_changed", {"password_changed": True})


@app.command()
def version(json: JsonOption = False) -> None:
    """Show the versions of this client and of the server."""
    with connect() as client:
        remote = client.version()
    if json:
        print_json({"client": __version__, "server": remote.model_dump()})
        return
    fields([("client", __version__), ("server", remote.version), ("database", remote.database)])


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; API and connection errors become one red line (under --json one JSON
    object on stderr), never a traceback."""
    args = sys.argv[1:] if argv is None else list(argv)
    as_json = wants_json(args)
    errors_as_json(as_json)
    try:
        code = app(args=args, standalone_mode=False)
    except ApiError as error:
        show_api_error(error)
        return 1
    except httpx.HTTPError as error:
        url = error.request.url if isinstance(error, httpx.RequestError) else ""
        reason = str(error) or type(error).__name__
        fail(t("cli.cannot_connect", url=url, reason=reason), "connection")
        return 1
    except config.BadConfigFile as error:
        fail(t("cli.bad_config", path=str(error.path), reason=error.reason), "config")
        return 1
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        fail(t("cli.aborted"), "aborted")
        return 1
    except typer.exceptions.TyperException as error:
        # Usage errors (bad option values) print with the command's usage line.
        show = getattr(error, "show", None)
        if show is None or as_json:
            fail(error.format_message(), "usage", _bad_parameters(error))
        else:
            show()
        return error.exit_code
    return code if isinstance(code, int) else 0


def wants_json(args: list[str]) -> bool:
    """Whether --json was given: anywhere before `--`, after which the words are a job's
    command (`suanli run -- tool --json` is not a request for JSON)."""
    own = args[: args.index("--")] if "--" in args else args
    return "--json" in own


def _bad_parameters(error: Exception) -> list[dict[str, str]]:
    """The option or argument a usage error is about, as an API error's `errors` entry."""
    param = getattr(error, "param", None)
    hint = getattr(error, "param_hint", None)
    if param is None and not hint:
        return []
    if not isinstance(hint, str):
        hint = param.opts[0] if param is not None and param.opts else str(param.name)
    kind = "missing" if type(error).__name__ == "MissingParameter" else "invalid"
    message = getattr(error, "message", "") or error.format_message()  # type: ignore[attr-defined]
    return [{"field": hint, "type": kind, "message": message}]


def entry() -> None:
    sys.exit(main())

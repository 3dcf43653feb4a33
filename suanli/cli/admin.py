"""`suanli admin`: back up and restore a server's state, on the server's own machine.

These commands do not go through the API: they read the server's settings as `suanli server`
does (flags, then `SUANLI_*` variables, then the file named by SUANLI_CONFIG) and work on its
database and data directory directly. Run them as the server's user. What they do and why is
in suanli.services.backup.
"""

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from suanli.cli.commands import App
from suanli.cli.output import JsonOption, error_console, fail, print_json, say, t
from suanli.config import Settings
from suanli.db.engine import Database
from suanli.services import backup as service

app = App(
    help="Back up and restore this server's state (run on the server's machine).",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path | None, typer.Option(help="The server's data directory (as given to `suanli server`).")
]
DatabaseOption = Annotated[
    str | None, typer.Option(help="The server's database URL (as given to `suanli server`).")
]


@app.command()
def backup(
    directory: Annotated[Path, typer.Argument(help="A new or empty directory for the backup.")],
    blobs: Annotated[
        bool, typer.Option("--blobs/--no-blobs", help="Include the datasets' and models' bytes.")
    ] = True,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    json: JsonOption = False,
) -> None:
    """Back up the database, the state files and the blobs into DIRECTORY.

    The server may keep running: the rows are read in one transaction. Without --blobs, back
    up the blob store (<data dir>/data/blobs) yourself."""
    settings = server_settings(data_dir=data_dir, database_url=database_url)
    database = Database(settings.effective_database_url)
    try:
        with _Bars(json) as bars:
            result = service.backup(settings, database, directory, blobs=blobs, progress=bars)
    except service.BackupError as error:
        _refuse(error)
    finally:
        database.dispose()
    _show_problems(result.problems)
    rows = sum(result.tables.values())
    if json:
        print_json(_backup_json(result, blobs))
    else:
        say(
            "cli.backup.done", path=str(result.path), rows=rows, tables=len(result.tables),
            files=result.state_files, blobs=result.blobs, size=_size(result.blob_bytes),
        )  # fmt: skip
        if result.blobs:
            say("cli.backup.blobs_how", linked=result.linked, copied=result.copied)
        elif not blobs:
            say("cli.backup.no_blobs", path=str(settings.data_dir / "data" / "blobs"))
    if result.problems:
        raise typer.Exit(1)


@app.command()
def restore(
    directory: Annotated[Path, typer.Argument(help="A backup made by `suanli admin backup`.")],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Wipe a database or data directory that is not empty (blobs are kept)."
        ),
    ] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    json: JsonOption = False,
) -> None:
    """Restore a backup onto a stopped server, then verify every checksum.

    The database and the data directory must be empty (--yes wipes them; blobs are kept).
    The version trees are rebuilt. Exits 1 when anything is missing or does not match."""
    settings = server_settings(data_dir=data_dir, database_url=database_url)
    try:
        with _Bars(json) as bars:
            source = service.read_backup(directory, bars)
    except service.BackupError as error:
        _refuse(error)
    database = Database(settings.effective_database_url)
    try:
        service.check_stopped(settings, database)
        service.check_empty(settings, database, wipe=yes)
        with _Bars(json) as bars:
            result = service.restore(settings, database, source, wipe=yes, progress=bars)
    except service.BackupError as error:
        _refuse(error)
    finally:
        database.dispose()
    _show_problems(result.problems)
    if json:
        print_json(_restore_json(result))
    else:
        _say_restored(settings, result)
    if result.problems or result.missing_blobs:
        raise typer.Exit(1)


def server_settings(**overrides: object) -> Settings:
    """The server's settings (its environment, SUANLI_CONFIG) with the flags given (None: not
    given); bad ones end the command with every field named (exit 2)."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        problems = [
            {
                "field": ".".join(str(p) for p in item["loc"]),
                "type": item["type"],
                "message": item["msg"],
            }
            for item in error.errors()
        ]
        fail(t("cli.bad_settings"), "config", problems)
        raise typer.Exit(2) from None


def _refuse(error: service.BackupError) -> NoReturn:
    fail(t(error.key, **error.params))
    raise typer.Exit(1)


def _show_problems(problems: list[service.Problem]) -> None:
    for problem in problems:
        fail(t(problem.key, **problem.params))


def _say_restored(settings: Settings, result: service.RestoreResult) -> None:
    say(
        "cli.backup.restored", rows=sum(result.tables.values()), tables=len(result.tables),
        files=result.state_files, blobs=result.blobs_restored, trees=result.trees,
    )  # fmt: skip
    say("cli.backup.verified", ok=result.blobs_ok, count=result.blobs_checked)
    if result.missing_blobs:
        blobs = settings.data_dir / "data" / "blobs"
        fail(t("cli.backup.missing_blobs", count=len(result.missing_blobs), path=str(blobs)))
        for sha256 in result.missing_blobs:
            error_console().print(f"  {sha256}")


def _backup_json(result: service.BackupResult, blobs: bool) -> dict[str, Any]:
    return {
        "path": str(result.path),
        "revision": result.revision,
        "tables": result.tables,
        "state_files": result.state_files,
        "blobs_included": blobs,
        "blobs": result.blobs,
        "blob_bytes": result.blob_bytes,
        "blobs_linked": result.linked,
        "blobs_copied": result.copied,
        "problems": [t(p.key, **p.params) for p in result.problems],
    }


def _restore_json(result: service.RestoreResult) -> dict[str, Any]:
    return {
        "revision": result.revision,
        "tables": result.tables,
        "state_files": result.state_files,
        "blobs_restored": result.blobs_restored,
        "trees": result.trees,
        "blobs_checked": result.blobs_checked,
        "blobs_ok": result.blobs_ok,
        "missing_blobs": result.missing_blobs,
        "problems": [t(p.key, **p.params) for p in result.problems],
        "ok": not result.problems and not result.missing_blobs,
    }


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class _Bars(service.Progress):
    """A bar per step on stderr (stdout stays for the result); none under --json or when
    stderr is not a terminal."""

    def __init__(self, quiet: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=error_console(),
            transient=True,
            disable=quiet,
        )
        self._task: TaskID | None = None

    def begin(self, step: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total)
        self._task = self._progress.add_task(t(f"cli.backup.step_{step}"), total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def __enter__(self) -> "_Bars":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

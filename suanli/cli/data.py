"""`suanli datasets` and `suanli models`: repositories of versioned files, pushed from and
pulled into folders.

Both kinds have the same commands; `repository_app` makes the set for each. A repository is
named NAME with --project, or PROJECT/NAME; a version by number or tag after @ (NAME@3,
NAME@prod; without one, `latest`).
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as Bar
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from suanli.cli.commands import App
from suanli.cli.jobs import state_text
from suanli.cli.output import (
    JsonOption,
    console,
    error_console,
    fail,
    fields,
    label,
    print_json,
    report,
    say,
    t,
    table,
)
from suanli.cli.session import connect
from suanli.client import ApiError, Client
from suanli.client.data import Progress, Repositories
from suanli.core.quantities import format_bytes
from suanli.schemas.data import ImportOut, RepositoryOut, UserOfOut

LATEST = "latest"
ProjectOption = Annotated[
    str | None,
    typer.Option("--project", "-p", help="The repository's project (or say PROJECT/NAME)."),
]
Workers = Annotated[int, typer.Option(min=1, max=32, help="Files moved at once.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def repository_app(kind: str, plural: str) -> App:
    """The commands of one kind (`dataset` as `suanli datasets`, `model` as `suanli models`)."""
    app = App(
        help=f"{plural.capitalize()}: versioned folders of files (create, list, show, files, "
        "push, pull, tag, untag, verify, rm, storage).",
        no_args_is_help=True,
    )
    Name = Annotated[str, typer.Argument(help="NAME or PROJECT/NAME.", metavar="NAME")]
    Ref = Annotated[
        str,
        typer.Argument(
            help="NAME[@VERSION] or PROJECT/NAME[@VERSION] (default: latest).",
            metavar="NAME[@VERSION]",
        ),
    ]

    def group(client: Client) -> Repositories:
        return client.datasets if kind == "dataset" else client.models

    @app.command()
    def create(
        name: Name,
        project: ProjectOption = None,
        description: Annotated[str, typer.Option(help="What it holds.")] = "",
        public: Annotated[bool, typer.Option(help="Readable by every user.")] = False,
        json: JsonOption = False,
    ) -> None:
        """Make an empty repository in a project (members and owners)."""
        project, name, _ = address(name, project)
        visibility = "public" if public else "project"
        with connect() as client:
            created = group(client).create(project, name, description, visibility)
        report(json, "cli.data.created", created.model_dump(mode="json"), **_words(kind, created))

    @app.command("list")
    def list_all(
        project: Annotated[str | None, typer.Option("--project", "-p")] = None,
        catalogue: Annotated[
            bool, typer.Option(help="Only the administrators' catalogue.")
        ] = False,
        json: JsonOption = False,
    ) -> None:
        """List repositories, newest first: your projects' and the public ones."""
        with connect() as client:
            found = group(client).list(project, catalogue)
        if json:
            print_json(found)
            return
        table(
            ["repository", "versions", "latest", "size", "tags", "visibility", "created"],
            [
                (
                    f"{r.project}/{r.name}",
                    r.versions,
                    r.latest,
                    format_bytes(r.size_bytes),
                    _tags(r.tags),
                    label("visibility", r.visibility),
                    r.created_at,
                )
                for r in found
            ],
        )

    @app.command()
    def show(name: Name, project: ProjectOption = None, json: JsonOption = False) -> None:
        """Show a repository: its versions, newest first, and their tags."""
        project, name, _ = address(name, project)
        with connect() as client:
            repository = group(client).get(project, name)
            versions = group(client).versions(project, name)
        if json:
            history = [v.model_dump(mode="json") for v in versions]
            print_json({"repository": repository.model_dump(mode="json"), "versions": history})
            return
        fields(
            [
                ("repository", f"{repository.project}/{repository.name}"),
                ("description", repository.description),
                ("visibility", label("visibility", repository.visibility)),
                ("user", repository.user),
                ("created", repository.created_at),
                ("latest", repository.latest),
                ("size", format_bytes(repository.size_bytes)),
            ]
        )
        print()
        table(
            ["version", "tags", "files", "size", "user", "created", "message"],
            [
                (
                    v.number,
                    ", ".join(v.tags),
                    v.file_count,
                    format_bytes(v.size_bytes),
                    v.user,
                    v.created_at,
                    v.message,
                )
                for v in versions
            ],
        )

    @app.command()
    def files(
        ref: Ref,
        project: ProjectOption = None,
        prefix: Annotated[str, typer.Option(help="Only paths that start with this.")] = "",
        json: JsonOption = False,
    ) -> None:
        """List a version's files: path, size and sha256 (at most 1000; narrow with --prefix)."""
        project, name, version = address(ref, project)
        with connect() as client:
            found = group(client).version(project, name, version or LATEST, prefix)
        if json:
            print_json(found)
            return
        table(
            ["path", "size", "sha256"],
            [(f.path, format_bytes(f.size), f.sha256) for f in found.files],
        )
        if not prefix and found.files_total > len(found.files):
            say("cli.data.files_more", shown=len(found.files), total=found.files_total)

    @app.command()
    def push(
        directory: Annotated[
            Path,
            typer.Argument(
                help="The folder to send.",
                exists=True,
                file_okay=False,
                readable=True,
                metavar="DIRECTORY",
            ),
        ],
        name: Annotated[
            str, typer.Option("--name", "-n", help="The repository (made if missing).")
        ],
        message: Annotated[str, typer.Option("--message", "-m", help="What changed.")],
        project: ProjectOption = None,
        tag: Annotated[
            list[str] | None, typer.Option("--tag", "-t", help="Tags for the new version.")
        ] = None,
        workers: Workers = 4,
        json: JsonOption = False,
    ) -> None:
        """Send a folder as a new version: only the files the project does not hold yet are
        uploaded. An interrupted push continues where it stopped when run again."""
        project, name, _ = address(name, project)
        with connect() as client, _transfer(json) as bar:
            repositories = group(client)
            _ensure(repositories, kind, project, name, json)
            version = repositories.push(
                project, name, directory, message, tags=tag or [], workers=workers, progress=bar
            )
        summary = bar.pushed()
        if json:
            print_json({**version.model_dump(mode="json"), "transfer": summary})
            return
        say(
            "cli.data.pushed",
            repository=version.repository,
            version=version.number,
            files=summary["files"],
            uploaded=summary["uploaded_files"],
            size=format_bytes(summary["uploaded_bytes"]),
        )
        kept = summary["files"] - summary["uploaded_files"]
        if kept:
            say("cli.data.pushed_kept", count=kept)

    @app.command()
    def pull(
        ref: Ref,
        directory: Annotated[
            Path,
            typer.Argument(help="Where to put the files (made if missing).", metavar="DIRECTORY"),
        ],
        project: ProjectOption = None,
        workers: Workers = 4,
        json: JsonOption = False,
    ) -> None:
        """Download a version into a folder, each file checked against its sha256. Files
        already there are kept when right; an interrupted pull continues when run again."""
        project, name, version = address(ref, project)
        if directory.exists() and not directory.is_dir():
            raise typer.BadParameter(t("cli.data.not_a_folder"), param_hint="DIRECTORY")
        with connect() as client, _transfer(json) as bar:
            found = group(client).pull(
                project, name, version or LATEST, directory, workers=workers, progress=bar
            )
        summary = bar.pulled()
        if json:
            print_json({**found.model_dump(mode="json"), "transfer": summary})
            return
        say(
            "cli.data.pulled",
            repository=found.repository,
            version=found.number,
            path=str(directory),
            files=summary["files"],
            size=format_bytes(summary["downloaded_bytes"]),
        )

    @app.command("tag")
    def tag_version(
        name: Name,
        tag: Annotated[str, typer.Argument(help="The tag, e.g. prod.")],
        version: Annotated[int, typer.Argument(min=1, help="The version it points at.")],
        project: ProjectOption = None,
        expected: Annotated[
            int | None,
            typer.Option(min=1, help="Only if the tag still points at this version."),
        ] = None,
        json: JsonOption = False,
    ) -> None:
        """Point a tag at a version (moving it if it points elsewhere)."""
        project, name, _ = address(name, project)
        with connect() as client:
            changed = group(client).tag(project, name, tag, version, expected)
        data = changed.model_dump(mode="json")
        report(json, "cli.data.tagged", data, tag=tag, version=version, **_words(kind, changed))

    @app.command()
    def untag(
        name: Name,
        tag: Annotated[str, typer.Argument(help="The tag.")],
        project: ProjectOption = None,
        json: JsonOption = False,
    ) -> None:
        """Remove a tag (the version stays; `latest` cannot be removed)."""
        project, name, _ = address(name, project)
        with connect() as client:
            group(client).untag(project, name, tag)
        data = {"repository": f"{project}/{name}", "tag": tag, "removed": True}
        report(json, "cli.data.untagged", data, tag=tag, repository=f"{project}/{name}")

    @app.command()
    def verify(ref: Ref, project: ProjectOption = None, json: JsonOption = False) -> None:
        """Have the server hash every file of a version again; exit 1 when one is corrupt or
        missing."""
        project, name, version = address(ref, project)
        with connect() as client:
            result = group(client).verify(project, name, version or LATEST)
        if json:
            print_json(result)
        elif result.ok:
            say("cli.data.verified", checked=result.checked, size=format_bytes(result.bytes))
        else:
            for path in result.corrupt:
                fail(t("cli.data.corrupt", path=path))
            for path in result.missing:
                fail(t("cli.data.missing", path=path))
        if not result.ok:
            raise typer.Exit(1)

    @app.command("rm")
    def remove(
        ref: Annotated[
            str,
            typer.Argument(
                help="NAME@VERSION deletes that version; NAME the repository with every version.",
                metavar="NAME[@VERSION]",
            ),
        ],
        project: ProjectOption = None,
        yes: Yes = False,
        force: Annotated[bool, typer.Option(help="Even while running workloads read it.")] = False,
        json: JsonOption = False,
    ) -> None:
        """Delete a version, or a repository with every version (owners). Shows first what
        reads it, and asks unless --yes."""
        project, name, version = address(ref, project)
        where = f"{project}/{name}"
        with connect() as client:
            repositories = group(client)
            users = _users(repositories, project, name, version)
            if users and not json:
                say("cli.data.in_use", count=len(users))
                _users_table(users)
            if not yes:
                question = (
                    t("cli.data.confirm_rm_version", version=version, repository=where)
                    if version
                    else t("cli.data.confirm_rm", repository=where, **_kind(kind))
                )
                typer.confirm(question, abort=True, err=True)
            if version:
                repositories.delete_version(project, name, version, force)
            else:
                repositories.delete(project, name, force)
        data = {"repository": where, "version": version, "deleted": True}
        if version:
            report(json, "cli.data.removed_version", data, version=version, repository=where)
        else:
            report(json, "cli.data.removed", data, repository=where, **_kind(kind))

    @app.command()
    def storage(
        project: Annotated[str, typer.Option("--project", "-p", help="The project.")],
        json: JsonOption = False,
    ) -> None:
        """Show a project's storage: bytes held (each content once), reserved by unfinished
        uploads and imports, and its limit."""
        with connect() as client:
            found = group(client).storage(project)
        if json:
            print_json(found)
            return
        limit = found.limit_bytes
        fields(
            [
                ("project", found.project),
                ("used", format_bytes(found.used_bytes)),
                ("reserved", format_bytes(found.reserved_bytes)),
                ("limit", t("cli.unlimited") if limit is None else format_bytes(limit)),
            ]
        )
        if limit:
            taken = found.used_bytes + found.reserved_bytes
            line = Table.grid(padding=(0, 2))
            line.add_row(
                ProgressBar(total=limit, completed=min(taken, limit), width=40),
                Text(t("cli.data.storage_share", percent=f"{100 * taken / limit:.0f}")),
            )
            console().print(line)

    @app.command("commit")
    def commit_output(
        job: Annotated[int, typer.Argument(min=1, help="The job or dev environment id.")],
        path: Annotated[str, typer.Argument(help="A folder inside its own folder, e.g. out.")],
        name: Annotated[str, typer.Option("--name", "-n", help="NAME or PROJECT/NAME.")],
        message: Annotated[str, typer.Option("--message", "-m")] = "",
        project: ProjectOption = None,
        json: JsonOption = False,
    ) -> None:
        """Make a workload's output folder a new version, with its lineage (the workload and
        the versions it read). The repository is made if missing."""
        project, name, _ = address(name, project)
        with connect() as client:
            _ensure(group(client), kind, project, name, json)
            version = group(client).commit_output(project, name, job, path, message)
        data = version.model_dump(mode="json")
        report(
            json,
            "cli.data.committed",
            data,
            repository=version.repository,
            version=version.number,
            files=version.file_count,
            job=job,
        )

    @app.command("import")
    def start_import(
        name: Name,
        url: Annotated[str, typer.Argument(help="Where from: http(s)://, ftp://, sftp://, git.")],
        project: ProjectOption = None,
        source_kind: Annotated[
            str, typer.Option("--kind", help="http, ftp, sftp, git or s3.")
        ] = "http",
        ref: Annotated[str | None, typer.Option(help="git: a branch or tag.")] = None,
        lfs: Annotated[bool, typer.Option(help="git: fetch git-lfs files.")] = False,
        username: Annotated[str | None, typer.Option(help="ftp, sftp, http: the user.")] = None,
        password: Annotated[
            bool, typer.Option("--password", help="Ask for a password (never on the line).")
        ] = False,
        bucket: Annotated[str | None, typer.Option(help="s3: the bucket.")] = None,
        prefix: Annotated[str, typer.Option(help="s3: the key prefix.")] = "",
        region: Annotated[str, typer.Option(help="s3: the region.")] = "us-east-1",
        unpack: Annotated[bool, typer.Option(help="Unpack zip and tar archives.")] = False,
        message: Annotated[str, typer.Option("--message", "-m")] = "",
        wait: Annotated[bool, typer.Option(help="Follow it with a progress bar.")] = True,
        json: JsonOption = False,
    ) -> None:
        """Fetch a remote source into a new version, in the background. S3 keys are read
        from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; a password is asked for."""
        project, name, _ = address(name, project)
        source: dict[str, Any] = {
            "kind": source_kind,
            "url": url,
            "ref": ref,
            "lfs": lfs,
            "username": username,
            "bucket": bucket,
            "prefix": prefix,
            "region": region,
            "unpack": unpack,
        }
        if password:
            source["password"] = typer.prompt(t("cli.data.password"), hide_input=True)
        if source_kind == "s3":
            source["access_key"] = os.environ.get("AWS_ACCESS_KEY_ID") or None
            source["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY") or None
        source = {key: value for key, value in source.items() if value not in (None, "", False)}
        with connect() as client:
            _ensure(group(client), kind, project, name, json)
            row = group(client).start_import(project, name, source, message)
            if wait:
                row = _follow(client, row.id, json)
        if json:
            print_json(row)
        elif row.state == "succeeded":
            say("cli.data.imported", repository=row.repository, version=row.version)
        elif wait:
            fail(t("cli.data.import_ended", state=label("import", row.state), error=row.error))
            raise typer.Exit(1)
        else:
            say("cli.data.import_started", id=row.id)

    @app.command("imports")
    def list_imports(name: Name, project: ProjectOption = None, json: JsonOption = False) -> None:
        """The repository's imports, newest first."""
        project, name, _ = address(name, project)
        with connect() as client:
            found = group(client).imports(project, name)
        if json:
            print_json(found)
            return
        table(
            ["id", "state", "source", "progress", "version", "user", "created"],
            [
                (
                    row.id,
                    label("import", row.state),
                    row.source.get("url", ""),
                    _progress(row),
                    row.version,
                    row.user,
                    row.created_at,
                )
                for row in found
            ],
        )

    return app


def address(ref: str, project: str | None) -> tuple[str, str, str | None]:
    """(project, name, version or None) from `[PROJECT/]NAME[@VERSION]` and --project."""
    where, _, version = ref.partition("@")
    owner, slash, name = where.rpartition("/")
    if slash and project and owner != project:
        raise typer.BadParameter(
            t("cli.data.two_projects", given=owner, option=project), param_hint="--project"
        )
    project = owner if slash else project
    if not project:
        raise typer.BadParameter(t("cli.data.no_project"), param_hint="--project")
    return project, name, version or None


def _ensure(repositories: Repositories, kind: str, project: str, name: str, json: bool) -> None:
    """The repository a push goes to, made when missing (a project one cannot read answers
    as if missing: the creation then says why not)."""
    try:
        repositories.get(project, name)
    except ApiError as error:
        if error.status != 404:
            raise
        created = repositories.create(project, name)
        if not json:
            say("cli.data.created", **_words(kind, created))


def _users(
    repositories: Repositories, project: str, name: str, version: str | None
) -> list[UserOfOut]:
    """The live workloads that read the version, or any version of the repository."""
    if version:
        return repositories.users(project, name, version)
    return [
        user
        for v in repositories.versions(project, name)
        for user in repositories.users(project, name, str(v.number))
    ]


def _users_table(users: list[UserOfOut]) -> None:
    table(
        ["id", "kind", "name", "state", "user", "version"],
        [(u.job_id, u.kind, u.name, state_text(u.state), u.user, u.version) for u in users],
    )


def _kind(kind: str) -> dict[str, str]:
    return {"kind": t(f"cli.data.kind.{kind}")}


def _words(kind: str, repository: RepositoryOut) -> dict[str, str]:
    return {**_kind(kind), "repository": f"{repository.project}/{repository.name}"}


def _tags(tags: dict[str, int]) -> str:
    return ", ".join(f"{tag}={number}" for tag, number in sorted(tags.items()))


class _Bars:
    """The progress callback of a push or pull: a bar per stage over its bytes, with the files
    counted, on stderr (stdout keeps only the result); it remembers each stage's last word
    for the summary."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown
        self.last: dict[str, Progress] = {}
        self.bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]}"),
            TimeRemainingColumn(),
            console=error_console(),
        )
        self.tasks: dict[str, Any] = {}
        self.running = False

    def __call__(self, event: Progress) -> None:
        self.last[event.stage] = event
        if not self.shown:
            return
        if not self.tasks:
            self.bar.start()
            self.running = True
        if event.stage not in self.tasks:
            description = t(f"cli.data.stage.{event.stage}")
            self.tasks[event.stage] = self.bar.add_task(description, total=None, files="")
        self.bar.update(
            self.tasks[event.stage],
            total=event.total_bytes,
            completed=event.done_bytes,
            files=t("cli.data.files_done", done=event.done_files, total=event.total_files),
        )

    def close(self) -> None:
        """Stop the bars, if they started (a stopped bar still prints a line)."""
        if self.running:
            self.bar.stop()
            self.running = False

    def pushed(self) -> dict[str, int]:
        """Files in the version; of them, uploaded; bytes sent in this run, and those an
        interrupted run had sent before."""
        files, sent = self.last.get("hash"), self.last.get("upload")
        return {
            "files": files.total_files if files else 0,
            "uploaded_files": sent.total_files if sent else 0,
            "uploaded_bytes": sent.total_bytes - sent.resumed_bytes if sent else 0,
            "resumed_bytes": sent.resumed_bytes if sent else 0,
        }

    def pulled(self) -> dict[str, int]:
        """Files in the version; bytes downloaded in this run, and those already there (whole
        files, or parts of an interrupted pull)."""
        got = self.last.get("download")
        return {
            "files": got.total_files if got else 0,
            "downloaded_bytes": got.total_bytes - got.resumed_bytes if got else 0,
            "kept_bytes": got.resumed_bytes if got else 0,
        }


@contextmanager
def _transfer(json: bool) -> Iterator[_Bars]:
    """Bars shown for the length of a transfer (none under --json). Ctrl-C and the files one
    cannot read end it with one line, not a traceback; what was moved is kept for the next
    run."""
    bars = _Bars(shown=not json)
    try:
        yield bars
    except KeyboardInterrupt:
        bars.close()
        fail(t("cli.data.interrupted"), "aborted")
        raise typer.Exit(130) from None
    except OSError as error:
        bars.close()
        where = error.filename or ""
        fail(t("cli.data.os_error", path=str(where), reason=error.strerror or str(error)))
        raise typer.Exit(1) from None
    finally:
        bars.close()


def _progress(row: ImportOut) -> str:
    done = format_bytes(row.done_bytes)
    return f"{done} / {format_bytes(row.total_bytes)}" if row.total_bytes else done


def _follow(client: Client, import_id: int, json: bool) -> ImportOut:
    """Poll an import until it ends, with a bar over its bytes; Ctrl-C leaves it running."""
    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=error_console(),
        disable=json,
        transient=True,
    )
    try:
        with bar:
            task = bar.add_task(t("cli.data.importing"), total=None)
            while True:
                row = client.imports.get(import_id)
                bar.update(task, completed=row.done_bytes, total=row.total_bytes)
                if row.state in ("succeeded", "failed", "cancelled"):
                    return row
                time.sleep(0.5)
    except KeyboardInterrupt:
        fail(t("cli.data.import_left_running", id=import_id), "aborted")
        raise typer.Exit(130) from None


imports_app = App(help="Imports of datasets and models by id: show, cancel, retry.")


@imports_app.command("show")
def show_import(
    import_id: Annotated[int, typer.Argument(min=1, metavar="ID")], json: JsonOption = False
) -> None:
    """An import's state, progress and error."""
    with connect() as client:
        row = client.imports.get(import_id)
    _import_fields(row, json)


@imports_app.command("cancel")
def cancel_import(
    import_id: Annotated[int, typer.Argument(min=1, metavar="ID")], json: JsonOption = False
) -> None:
    """Stop an import: a queued one at once, a running one at its next chunk. No version."""
    with connect() as client:
        row = client.imports.cancel(import_id)
    _import_fields(row, json)


@imports_app.command("retry")
def retry_import(
    import_id: Annotated[int, typer.Argument(min=1, metavar="ID")],
    wait: Annotated[bool, typer.Option(help="Follow it with a progress bar.")] = True,
    json: JsonOption = False,
) -> None:
    """Run a failed or cancelled import again; what it fetched before is resumed."""
    with connect() as client:
        row = client.imports.retry(import_id)
        if wait:
            row = _follow(client, row.id, json)
    _import_fields(row, json)


def _import_fields(row: ImportOut, json: bool) -> None:
    if json:
        print_json(row)
        return
    fields(
        [
            ("id", row.id),
            ("repository", row.repository),
            ("state", label("import", row.state)),
            ("source", row.source.get("url", "")),
            ("progress", _progress(row)),
            ("version", row.version),
            ("error", row.error or "-"),
        ]
    )


datasets_app = repository_app("dataset", "datasets")
models_app = repository_app("model", "models")

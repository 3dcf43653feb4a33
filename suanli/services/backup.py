"""Back up a server's whole state to a directory, and restore it onto an empty server.

The state is the database plus the data directory. A backup is a directory:

    manifest.json              written last: without it a backup is unfinished
    database/<table>.jsonl     every row of every table, one JSON object a line
    state/<path>               the data directory's own files (SSH keys, job histories, ...)
    blobs/ab/cd/<sha256>       the datasets' and models' contents (unless --no-blobs)

The manifest holds the format version, the Suanli version, the database's Alembic revision,
when, each table's row count and column kinds, the state files' modes, whether blobs are
included, and the size and sha256 of every file written into the backup. A restore checks all
of them before it writes anything, so that a tampered or truncated backup is refused whole.

Rows are JSON, not an SQL dump: read through SQLAlchemy from `Base.metadata` in dependency
order, they restore into SQLite or PostgreSQL alike (datetimes as ISO 8601 in UTC, JSON columns
as JSON, bytes as base64). The `leases` table is left out: it says which server process runs
which loop, and a restored server takes its leases anew.

What of the data directory is state (`state/`): everything in it except
  - `data/`: the blob store (blobs, copied into `blobs/` when asked), the version trees (hard
    links rebuilt from the database on restore) and `incoming/` (unfinished uploads, which
    start over from their first byte after a restore);
  - `work/` and the work directory wherever it lies inside: the workloads' own folders;
  - the SQLite database file and its journals (the database is in `database/`);
  - `lost+found`, and anything that is not a regular file or folder (sockets, links).
Today that is `ssh/` (the gateway's host and client keys), `jobs/` (the workloads' histories
and logs) and the simulated GPUs' telemetry overrides; files added later are picked up alike.

Consistency: the rows are read in one transaction (REPEATABLE READ, read-only, on PostgreSQL;
one read transaction on SQLite, whose WAL gives it a snapshot), so a server may keep running
during a backup. Blobs are written once and never change, so those the snapshot names are
copied after it. Each is hashed as it is written into the backup: a blob that no longer
hashes to its name is reported and left out. Blobs are hard-linked when the backup is on the
data directory's filesystem (no bytes copied, but no protection against losing that disk:
copy the directory elsewhere), copied otherwise; the result says how many of each.

A restore needs the server stopped (nothing answers on its port, and no lease of the target
database was renewed in the last minute), an empty database (any tables there are dropped
only with --yes) and a data directory without state or trees (replaced only with --yes; a
blob store already there is kept and used). It migrates the database to the backup's
revision, replaces the rows its migrations seeded with the backup's, resets PostgreSQL's
sequences past the largest ids, migrates to this version's head, copies the state files with
their modes (0600 for the SSH keys), copies the blobs into the store (never links: the live
store shares no inode with the backup), rebuilds every version's tree, and then verifies:
every blob hashed again (recorded in the blobs table as a scrub would), every restored file
and every table's row count checked against the manifest. Unfinished uploads start over.
A restore that fails halfway leaves the target half restored: run it again with --yes.
"""

import base64
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from suanli import __version__
from suanli.config import Settings
from suanli.data import paths
from suanli.data.store import CHUNK, BlobStore, hash_file, is_sha256
from suanli.db import migrate
from suanli.db.engine import Database
from suanli.db.models import Base, Blob, DataFile, Lease
from suanli.services.verification import check_blob

FORMAT = "suanli-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Runtime coordination, not state (see the module doc).
SKIPPED_TABLES = frozenset({"leases"})
# Top-level names in the data directory that are never state (see the module doc).
NOT_STATE = frozenset({"data", "work", "lost+found"})
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
BATCH = 1000
# A lease renewed this recently means a server still uses the database.
LEASE_FRESH = timedelta(minutes=1)
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class BackupError(Exception):
    """Refused or failed, said by a catalogue key (`cli.backup.*`) and its parameters."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


class Progress:
    """What a long step tells whoever watches it; this one tells nobody (the CLI shows bars).
    `step` is a name under `cli.backup.step_*`; `total` None when unknown."""

    def begin(self, step: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass
class Problem:
    """Something a backup or a restore found wrong, said by a catalogue key."""

    key: str
    params: dict[str, Any]


@dataclass
class BackupResult:
    path: Path
    revision: str
    tables: dict[str, int]
    state_files: int
    blobs: int = 0
    blob_bytes: int = 0
    linked: int = 0
    copied: int = 0
    problems: list[Problem] = field(default_factory=list)


@dataclass
class RestoreResult:
    revision: str
    tables: dict[str, int]
    state_files: int
    blobs_restored: int = 0
    trees: int = 0
    blobs_checked: int = 0
    blobs_ok: int = 0
    missing_blobs: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Backup


def backup(
    settings: Settings,
    database: Database,
    target: Path,
    *,
    blobs: bool,
    progress: Progress | None = None,
) -> BackupResult:
    """Write the backup into `target`, a new or empty directory outside the data directory
    (a backup inside it would be lost with it, and be backed up into itself)."""
    progress = progress or Progress()
    target = _empty_target(settings, target)
    files: dict[str, dict[str, Any]] = {}
    with _snapshot(database.engine) as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
        head = migrate.head_revision(database.engine)
        if revision != head:
            raise BackupError(
                "cli.backup.database_not_current", found=revision or "-", head=head or "-",
                version=__version__,
            )  # fmt: skip
        tables, wanted = _dump_tables(connection, target, files, progress)
    state = _copy_state(settings, target, files, progress)
    result = BackupResult(
        target, revision or "", {t["name"]: t["rows"] for t in tables}, len(state)
    )
    if blobs:
        _copy_blobs(settings, wanted, target, files, result, progress)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "suanli_version": __version__,
        "alembic_revision": revision,
        "created_at": datetime.now(UTC).isoformat(),
        "database_dialect": database.dialect,
        "tables": tables,
        "state_files": state,
        "blobs_included": blobs,
        "blobs_linked": result.linked,
        "blobs_copied": result.copied,
        "problems": [{"key": p.key, "params": p.params} for p in result.problems],
        "files": files,
    }
    _write_atomically(target / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1))
    return result


def _empty_target(settings: Settings, target: Path) -> Path:
    target = target.expanduser().absolute()
    data_dir = settings.data_dir.expanduser().absolute()
    if target == data_dir or data_dir in target.parents:
        raise BackupError("cli.backup.target_inside_data_dir", path=str(target))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError("cli.backup.target_not_empty", path=str(target))
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.chmod(0o700)  # password hashes and keys: the administrator's eyes only
    return target


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction that sees the database as of its first read."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(text("SET TRANSACTION READ ONLY"))
            yield connection


# How each kind of column is written in JSON (see `_encode` and `_decoder`), most specific first.
_KINDS = (
    ("datetime", DateTime),
    ("json", JSON),
    ("boolean", Boolean),
    ("integer", Integer),
    ("float", Float),
    ("string", String),
    ("bytes", LargeBinary),
)
KINDS = frozenset(kind for kind, _ in _KINDS)


def _column_kind(column_type: Any) -> str:
    """The kind of a column, recorded in the manifest so a restore knows how to read it back
    whatever this version's models say."""
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    for kind, types in _KINDS:
        if isinstance(column_type, types):
            return kind
    raise TypeError(f"no backup encoding for column type {column_type!r}")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _dump_tables(
    connection: Connection, target: Path, files: dict[str, dict[str, Any]], progress: Progress
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every table's rows as JSON Lines; returns the tables' entries for the manifest and the
    blobs the snapshot names (sha256 → size)."""
    tables = [t for t in Base.metadata.sorted_tables if t.name not in SKIPPED_TABLES]
    counts = {t.name: connection.scalar(select(func.count()).select_from(t)) or 0 for t in tables}
    progress.begin("rows", sum(counts.values()))
    entries: list[dict[str, Any]] = []
    wanted: dict[str, int] = {}
    (target / "database").mkdir(mode=0o700)
    for table in tables:
        name = f"database/{table.name}.jsonl"
        rows = 0
        query = select(table).order_by(*table.primary_key.columns)
        with _HashingFile(target / name) as out:
            for row in connection.execution_options(yield_per=BATCH).execute(query):
                values = row._asdict()
                if table.name == "blobs":
                    wanted[values["sha256"]] = values["size"]
                out.write(
                    json.dumps({k: _encode(v) for k, v in values.items()}, ensure_ascii=False)
                )
                out.write("\n")
                rows += 1
                progress.advance()
        files[name] = out.entry()
        columns = {column.name: _column_kind(column.type) for column in table.columns}
        entries.append({"name": table.name, "file": name, "rows": rows, "columns": columns})
    return entries, wanted


def state_paths(settings: Settings) -> list[Path]:
    """The data directory's state files, relative to it (see the module doc for what is)."""
    root = settings.data_dir.absolute()
    skip = {root / name for name in NOT_STATE} | {settings.effective_work_dir.absolute()}
    skip |= {Path(str(db) + suffix) for db in _sqlite_files(settings) for suffix in SQLITE_SUFFIXES}
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if here / d not in skip and not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            with contextlib.suppress(FileNotFoundError):  # a running server's file, just gone
                if path not in skip and stat.S_ISREG(os.lstat(path).st_mode):
                    found.append(path.relative_to(root))
    return found


def _sqlite_files(settings: Settings) -> list[Path]:
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return []
    return [Path(url.database).absolute()]


def _copy_state(
    settings: Settings, target: Path, files: dict[str, dict[str, Any]], progress: Progress
) -> list[dict[str, Any]]:
    found = state_paths(settings)
    progress.begin("state", len(found))
    entries = []
    for relative in found:
        source = settings.data_dir / relative
        name = f"state/{relative.as_posix()}"
        (target / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            stream = source.open("rb")
        except FileNotFoundError:  # removed by the running server since it was listed
            continue
        with stream, _HashingFile(target / name) as out:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
            mode = stat.S_IMODE(os.fstat(stream.fileno()).st_mode)
        files[name] = out.entry()
        entries.append({"path": relative.as_posix(), "mode": mode})
        progress.advance()
    return entries


def _copy_blobs(
    settings: Settings,
    wanted: dict[str, int],
    target: Path,
    files: dict[str, dict[str, Any]],
    result: BackupResult,
    progress: Progress,
) -> None:
    """Each blob the snapshot names, linked or copied, and hashed as written (a link is read
    once to hash it): what the backup holds is what the manifest says, whatever the store's
    disk did."""
    store = BlobStore(settings.data_dir / "data")
    progress.begin("blobs", sum(wanted.values()))
    for sha256 in sorted(wanted):
        source = store.path_of(sha256)
        name = f"blobs/{source.relative_to(store.blobs).as_posix()}"
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            linked = _link_or_copy(source, destination)
        except FileNotFoundError:
            result.problems.append(Problem("cli.backup.blob_missing", {"sha256": sha256}))
            continue
        found, size = hash_file(destination)
        progress.advance(size)
        if found != sha256:
            destination.unlink()
            result.problems.append(Problem("cli.backup.blob_corrupt", {"sha256": sha256}))
            continue
        files[name] = {"sha256": found, "size": size}
        result.blobs += 1
        result.blob_bytes += size
        result.linked += linked
        result.copied += not linked


def _link_or_copy(source: Path, destination: Path) -> bool:
    """A hard link where the filesystem allows one (True), else a copy; read-only either way."""
    try:
        os.link(source, destination)
        return True
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
            raise
    shutil.copyfile(source, destination)
    destination.chmod(0o444)
    return False


class _HashingFile:
    """A new private file (0600) that hashes what is written into it."""

    def __init__(self, path: Path) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self._stream: IO[bytes] = os.fdopen(descriptor, "wb")
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, data: str | bytes) -> None:
        chunk = data if isinstance(data, bytes) else data.encode("utf-8")
        self._digest.update(chunk)
        self._size += len(chunk)
        self._stream.write(chunk)

    def entry(self) -> dict[str, Any]:
        return {"sha256": self._digest.hexdigest(), "size": self._size}

    def __enter__(self) -> "_HashingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()


def _write_atomically(path: Path, content: str) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(content + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(scratch, path)


# ---------------------------------------------------------------------------------------------
# Reading a backup


@dataclass
class Backup:
    """A backup read and checked whole: every file present and matching the manifest."""

    root: Path
    manifest: dict[str, Any]

    @property
    def revision(self) -> str:
        return self.manifest["alembic_revision"]

    @property
    def tables(self) -> list[dict[str, Any]]:
        return self.manifest["tables"]

    @property
    def state_files(self) -> list[dict[str, Any]]:
        return self.manifest["state_files"]

    @property
    def blob_files(self) -> list[tuple[str, Path]]:
        """(sha256, file) of each blob in the backup."""
        return [
            (name.rsplit("/", 1)[1], self.root / name)
            for name in self.manifest["files"]
            if name.startswith("blobs/")
        ]


def read_backup(source: Path, progress: Progress | None = None) -> Backup:
    """The backup at `source`, checked before anything is written anywhere: the manifest's
    format, every path it names (inside the backup, in its place, a regular file), every
    file's size and sha256, and a database revision this version knows."""
    progress = progress or Progress()
    root = source.expanduser().absolute()
    manifest = _load_manifest(root)
    files: dict[str, dict[str, Any]] = manifest["files"]
    for name in files:
        _check_name(name)
    for table in manifest["tables"]:
        if not _TABLE_NAME.match(str(table.get("name"))) or table.get("file") not in files:
            raise BackupError("cli.backup.unsafe_path", name=str(table.get("file")))
    for entry in manifest["state_files"]:
        if f"state/{entry.get('path')}" not in files:
            raise BackupError("cli.backup.unsafe_path", name=str(entry.get("path")))
    _known_revision(str(manifest.get("alembic_revision")))
    progress.begin("check", sum(int(entry["size"]) for entry in files.values()))
    resolved_root = root.resolve()
    for name, entry in sorted(files.items()):
        path = root / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise BackupError("cli.backup.file_missing", name=name) from None
        if not stat.S_ISREG(info.st_mode) or resolved_root not in path.resolve().parents:
            raise BackupError("cli.backup.unsafe_path", name=name)
        if info.st_size != entry["size"] or hash_file(path)[0] != entry["sha256"]:
            raise BackupError("cli.backup.file_mismatch", name=name)
        progress.advance(info.st_size)
    return Backup(root, manifest)


def _load_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise BackupError("cli.backup.no_manifest", path=str(root))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError("not a Suanli backup")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BackupError(
                "cli.backup.bad_format", path=str(root),
                found=manifest.get("format_version"), expected=FORMAT_VERSION,
            )  # fmt: skip
        for key, kind in (("files", dict), ("tables", list), ("state_files", list)):
            if not isinstance(manifest.get(key), kind):
                raise ValueError(f"{key} missing")
        for entry in manifest["files"].values():
            if not is_sha256(str(entry.get("sha256"))) or not isinstance(entry.get("size"), int):
                raise ValueError("a file without its sha256 and size")
        for table in manifest["tables"]:
            columns = table.get("columns")
            if not isinstance(table.get("rows"), int) or not isinstance(columns, dict):
                raise ValueError(f"table {table.get('name')} without its rows and columns")
            if not set(columns.values()) <= KINDS:
                raise ValueError(f"table {table.get('name')}: unknown column kinds")
        for entry in manifest["state_files"]:
            if not isinstance(entry.get("path"), str) or not isinstance(entry.get("mode"), int):
                raise ValueError("a state file without its path and mode")
    except (ValueError, AttributeError, TypeError) as error:
        raise BackupError("cli.backup.bad_manifest", path=str(path), reason=str(error)) from None
    return manifest


def _check_name(name: str) -> None:
    """A file the manifest names must be a plain relative path in one of the backup's parts;
    a blob's must be its place in the store's layout."""
    try:
        paths.check(name)
    except paths.BadPath:
        raise BackupError("cli.backup.unsafe_path", name=name) from None
    parts = name.split("/")
    if parts[0] == "database" and len(parts) == 2 and parts[1].endswith(".jsonl"):
        return
    if parts[0] == "state" and len(parts) >= 2 and parts[1] not in NOT_STATE:
        return
    blob = parts[-1]
    if parts[0] == "blobs" and is_sha256(blob) and parts[1:] == [blob[:2], blob[2:4], blob]:
        return
    raise BackupError("cli.backup.unsafe_path", name=name)


def _known_revision(revision: str) -> None:
    try:
        known = ScriptDirectory(str(migrate.MIGRATIONS)).get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise BackupError("cli.backup.unknown_revision", revision=revision, version=__version__)


# ---------------------------------------------------------------------------------------------
# Restore


def check_stopped(settings: Settings, database: Database) -> None:
    """Refuse while a server may run on this state: its port answers, or it renewed a lease
    in the target database within the last minute."""
    if settings.port:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104
            settings.host, settings.host
        )
        with contextlib.suppress(OSError), socket.create_connection((host, settings.port), 1):
            raise BackupError("cli.backup.server_running_port", host=host, port=settings.port)
    if "leases" not in inspect(database.engine).get_table_names():
        return
    with database.reading() as session:
        leases = session.execute(select(Lease.holder, Lease.expires_at)).all()
    cutoff = datetime.now(UTC) - LEASE_FRESH
    for holder, expires_at in leases:
        if expires_at > cutoff:
            raise BackupError("cli.backup.server_running_lease", holder=holder)


def check_empty(settings: Settings, database: Database, *, wipe: bool) -> None:
    """The target must hold nothing a restore would overwrite or mix with, unless `wipe`."""
    if wipe:
        return
    rows = _row_count(database.engine)
    if rows:
        raise BackupError("cli.backup.database_not_empty", rows=rows)
    occupied = _occupied(settings)
    if occupied:
        raise BackupError(
            "cli.backup.data_dir_not_empty", path=str(settings.data_dir), name=occupied[0]
        )


def _row_count(engine: Engine) -> int:
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as connection:
        return sum(
            connection.scalar(select(func.count()).select_from(table)) or 0
            for table in meta.sorted_tables
            if table.name != "alembic_version"
        )


def _occupied(settings: Settings) -> list[str]:
    """What of the data directory a restore would replace: state files and version trees
    (a tree already there would be kept in place of the restored version's)."""
    if not settings.data_dir.is_dir():
        return []
    found = [path.as_posix() for path in state_paths(settings)]
    trees = settings.data_dir / "data" / "trees"
    if trees.is_dir():
        found += [f"data/trees/{entry.name}" for entry in sorted(trees.iterdir())]
    return found


def restore(
    settings: Settings,
    database: Database,
    source: Backup,
    *,
    wipe: bool,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore `source` (read and checked by `read_backup`) onto this server's settings.
    The caller checked that the server is stopped and the target empty (`check_stopped`,
    `check_empty`); `wipe` drops the database's tables and the data directory's state and
    trees first (blobs stay: they are content-addressed, and verified below)."""
    progress = progress or Progress()
    engine = database.engine
    _check_state_targets(settings, source)
    _drop_everything(engine)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = BlobStore(settings.data_dir / "data")
    if wipe:
        _wipe_state(settings, store)
    result = RestoreResult(source.revision, {}, 0)
    try:
        migrate.upgrade(engine, source.revision)
        _insert_rows(engine, source, result, progress)
        _check_counts(engine, source, result)
        migrate.upgrade(engine)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error)
        raise BackupError("cli.backup.database_failed", reason=reason) from error
    store.prepare()
    _restore_state(settings, source, result, progress)
    _restore_blobs(store, source, result, progress)
    _rebuild_trees(database, store, result, progress)
    _verify(settings, database, store, source, result, progress)
    _private(settings)
    return result


def _private(settings: Settings) -> None:
    """The data directory and the SQLite database only the server's user may read, as the
    server keeps them (suanli.services.isolation): engines create them with the umask's mode."""
    settings.data_dir.chmod(0o700)
    for database in _sqlite_files(settings):
        for suffix in SQLITE_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                Path(str(database) + suffix).chmod(0o600)


def _check_state_targets(settings: Settings, source: Backup) -> None:
    """A state file may not land where this server keeps what is not state (its SQLite
    database, its work directory): a backup naming `state/suanli.db` is refused."""
    allowed = set(map(Path, (entry["path"] for entry in source.state_files)))
    root = settings.data_dir.absolute()
    excluded = {root / name for name in NOT_STATE} | {settings.effective_work_dir.absolute()}
    excluded |= {
        Path(str(db) + suffix) for db in _sqlite_files(settings) for suffix in SQLITE_SUFFIXES
    }
    for relative in allowed:
        target = root / relative
        if target in excluded or excluded & set(target.parents):
            raise BackupError("cli.backup.unsafe_path", name=f"state/{relative.as_posix()}")


def _drop_everything(engine: Engine) -> None:
    meta = MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)


def _wipe_state(settings: Settings, store: BlobStore) -> None:
    for relative in state_paths(settings):
        (settings.data_dir / relative).unlink()
    if store.trees.is_dir():
        for tree in store.trees.iterdir():
            if tree.name.isdigit():
                store.remove_tree(int(tree.name))
            else:
                shutil.rmtree(tree, ignore_errors=True)
    if store.incoming.is_dir():
        shutil.rmtree(store.incoming, ignore_errors=True)


def _decoder(kind: str) -> Callable[[Any], Any]:
    if kind == "datetime":
        return lambda value: None if value is None else datetime.fromisoformat(value)
    if kind == "bytes":
        return lambda value: None if value is None else base64.b64decode(value)
    return lambda value: value


def _insert_rows(engine: Engine, source: Backup, result: RestoreResult, progress: Progress) -> None:
    """The rows in the manifest's (dependency) order, in batches, into the tables as the
    backup's revision made them (reflected: this version's models may differ)."""
    meta = MetaData()
    meta.reflect(engine)
    progress.begin("rows", sum(int(t["rows"]) for t in source.tables))
    with engine.begin() as connection:
        # Migrations seed some rows (the default alert rules): the backup's rows replace them.
        for table in reversed(meta.sorted_tables):
            if table.name != "alembic_version":
                connection.execute(table.delete())
        for entry in source.tables:
            table = meta.tables.get(entry["name"])
            if table is None:
                raise BackupError(
                    "cli.backup.unknown_table", table=entry["name"], revision=source.revision
                )
            decoders = _decoders(table, entry, source.revision)
            count = 0
            for batch in _batches(_rows(source.root / entry["file"], decoders)):
                connection.execute(table.insert(), batch)
                count += len(batch)
                progress.advance(len(batch))
            result.tables[entry["name"]] = count
        if engine.dialect.name == "postgresql":
            _reset_sequences(connection, meta)


def _decoders(table: Table, entry: dict[str, Any], revision: str) -> dict[str, Callable]:
    decoders = {}
    for column, kind in entry["columns"].items():
        if column not in table.columns:
            raise BackupError(
                "cli.backup.unknown_column", table=table.name, column=column, revision=revision
            )
        decoders[column] = _decoder(kind)
    return decoders


def _rows(path: Path, decoders: dict[str, Callable]) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                yield {column: decoders[column](value) for column, value in row.items()}
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise BackupError(
                    "cli.backup.bad_row", name=path.name, line=number, reason=repr(error)
                ) from None


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _reset_sequences(connection: Connection, meta: MetaData) -> None:
    """Rows came with their ids: each serial's next value must come after the largest, or
    the first new row would collide with a restored one."""
    quote = connection.dialect.identifier_preparer.quote
    for table in meta.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer):
            continue
        column = keys[0].name
        sequence = connection.scalar(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": quote(table.name), "column": column},
        )
        if sequence:
            connection.execute(
                text(
                    f"SELECT setval(:sequence, COALESCE((SELECT MAX({quote(column)}) "  # noqa: S608
                    f"FROM {quote(table.name)}), 0) + 1, false)"
                ),
                {"sequence": sequence},
            )


def _restore_state(
    settings: Settings, source: Backup, result: RestoreResult, progress: Progress
) -> None:
    progress.begin("state", len(source.state_files))
    for entry in source.state_files:
        relative = entry["path"]
        target = settings.data_dir / relative
        _private_parents(settings.data_dir, target)
        mode = 0o600 if relative.startswith("ssh/") else int(entry["mode"]) & 0o777
        descriptor = os.open(
            target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o700
        )
        with (
            os.fdopen(descriptor, "wb") as out,
            (source.root / f"state/{relative}").open("rb") as s,
        ):
            shutil.copyfileobj(s, out, CHUNK)
        os.chmod(target, mode)
        result.state_files += 1
        progress.advance()


def _private_parents(root: Path, target: Path) -> None:
    """Create the folders between the data directory and `target` (0700), refusing any that
    is not a real folder (a link could lead the write elsewhere)."""
    folder = root
    for part in target.relative_to(root).parts[:-1]:
        folder = folder / part
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise BackupError("cli.backup.unsafe_path", name=str(folder))


def _restore_blobs(
    store: BlobStore, source: Backup, result: RestoreResult, progress: Progress
) -> None:
    """Copied (never linked: the live store shares no inode with the backup) into incoming/,
    then renamed into place, as an upload arrives; one already in a kept store is left."""
    blobs = source.blob_files
    progress.begin("blobs", sum(path.stat().st_size for _, path in blobs))
    for sha256, path in blobs:
        size = path.stat().st_size
        if not store.has(sha256):
            scratch = store.new_incoming()
            shutil.copyfile(path, scratch)
            store.add(scratch, sha256)
        result.blobs_restored += 1
        progress.advance(size)


def _rebuild_trees(
    database: Database, store: BlobStore, result: RestoreResult, progress: Progress
) -> None:
    """Every version's tree from its files; a version whose blobs are not all in the store
    gets none (the verification below names what is missing)."""
    with database.reading() as session:
        rows = session.execute(
            select(DataFile.version_id, DataFile.path, DataFile.sha256).order_by(
                DataFile.version_id, DataFile.path
            )
        ).all()
    versions: dict[int, list[tuple[str, str]]] = {}
    for version_id, path, sha256 in rows:
        versions.setdefault(version_id, []).append((path, sha256))
    progress.begin("trees", len(versions))
    for version_id, files in versions.items():
        if all(store.has(sha256) for _, sha256 in files):
            store.build_tree(version_id, files)
            result.trees += 1
        progress.advance()


def _verify(
    settings: Settings,
    database: Database,
    store: BlobStore,
    source: Backup,
    result: RestoreResult,
    progress: Progress,
) -> None:
    """Every blob hashed again (and recorded, as a scrub would); every restored state file
    and every table's row count checked against the manifest."""
    with database.reading() as session:
        blobs = session.execute(select(Blob.sha256, Blob.size).order_by(Blob.sha256)).all()
    progress.begin("verify", sum(size for _, size in blobs))
    with database.writing() as session:
        for sha256, size in blobs:
            state = check_blob(session, store, sha256)
            result.blobs_checked += 1
            if state == "ok":
                result.blobs_ok += 1
            elif state == "missing":
                result.missing_blobs.append(sha256)
            else:
                corrupt = Problem("cli.backup.blob_corrupt_restored", {"sha256": sha256})
                result.problems.append(corrupt)
            progress.advance(size)
        session.commit()
    files = source.manifest["files"]
    for entry in source.state_files:
        found = hash_file(settings.data_dir / entry["path"])
        expected = files[f"state/{entry['path']}"]
        if found != (expected["sha256"], expected["size"]):
            result.problems.append(Problem("cli.backup.restore_mismatch", {"name": entry["path"]}))


def _check_counts(engine: Engine, source: Backup, result: RestoreResult) -> None:
    """Each table holds as many rows as the manifest says (checked at the backup's revision,
    before later migrations may change them)."""
    meta = MetaData()
    meta.reflect(engine, only=[t["name"] for t in source.tables])
    with engine.connect() as connection:
        for entry in source.tables:
            table = meta.tables[entry["name"]]
            found = connection.scalar(select(func.count()).select_from(table)) or 0
            if found != entry["rows"]:
                result.problems.append(
                    Problem(
                        "cli.backup.rows_mismatch",
                        {"table": entry["name"], "found": found, "expected": entry["rows"]},
                    )
                )

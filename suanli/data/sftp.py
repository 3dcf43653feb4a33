"""Datasets and models over SFTP (and so scp and WinSCP), through the SSH gateway.

The login `data` (`sftp -P 2222 data@server`, `scp -P 2222 file data@server:/p/datasets/x/`)
opens a data session instead of a dev environment, for the holder of a key uploaded to an
account. What it shows is made up from the database, not a folder on disk:

    /<project>/datasets/<name>/…    /<project>/models/<name>/…

the projects where the user is a member or an owner (an administrator may also name any
other), and in each repository the files of its latest version. Those files are read-only:
reading one serves its blob. A file written into a repository folder (or a folder made in
it) streams into a staging file in the store's incoming/ folder, hashed as it arrives; the
project's storage is checked when it is opened (`room_left`), a write beyond that room is
refused with an SFTP failure, and again when it is closed, when it becomes a blob the project
holds. `mkdir /<project>/datasets/<new>` makes a repository (members may, as in the console);
nothing else can be made above a repository's folder.

When the SFTP session ends (the client exits or the connection is lost), each repository
that received files gets one new version: its latest version at that moment plus the files
(replacing those of the same path), "SFTP upload by <user>", source `sftp`. A file whose
handle the client never closed (the connection dropped in the middle of it) is left out:
its bytes are discarded. Versions are immutable, so files of a version can be neither
removed nor renamed; only what this session uploaded and has not committed yet can be (so
WinSCP's upload to a temporary name, then rename, works). Empty folders are not kept: a
version holds files. `..` in a path, links and anything outside the shown tree are refused.

Every database and file operation runs in a worker thread: the gateway shares uvicorn's
event loop. The channel is asyncssh's stream session with its SFTP packet handler, which
this module extends only to know when the session ends with handles still open.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import posixpath
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.sftp import SFTPServerHandler
from asyncssh.stream import SSHServerStreamSession
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.core.errors import Conflict, Forbidden, NotFound, SuanliError
from suanli.core.roles import ProjectRole
from suanli.data import paths
from suanli.data.store import BlobStore, hash_file
from suanli.db.engine import Database
from suanli.db.models import Membership, Project, ProjectBlob, Repository, User, utcnow
from suanli.i18n import DEFAULT_LANGUAGE, translate
from suanli.schemas.data import ManifestEntry, RepositoryCreate, VersionCreate
from suanli.services import data, sshkeys
from suanli.services.actor import Actor
from suanli.services.projects import access, writable

LOGIN = "data"
KINDS = {"datasets": "dataset", "models": "model"}
SFTP_VERSION = 3  # what OpenSSH and WinSCP speak; asyncssh negotiates down to it
BUFFER = 1 << 20  # bytes gathered before a write reaches the disk from a worker thread
MAX_FILES = 100_000  # files one session may add to a repository (a manifest's limit)
COMMIT_TRIES = 3  # another version made at the same moment: commit on top of it again

log = logging.getLogger("suanli.sftp")


@dataclass(frozen=True)
class Person:
    """Who signed in with the `data` login (their key said so)."""

    user_id: int
    name: str
    language: str
    address: str


@dataclass(frozen=True)
class Entry:
    """A file as shown: its content and when it came."""

    sha256: str
    size: int
    mtime: int


@dataclass
class _Repository:
    """A repository the session looked into: its latest version's files when first seen, and
    what this session added (uploaded files, made folders) and will commit at its end."""

    id: int
    project_id: int
    project: str
    kind: str
    name: str
    files: dict[str, Entry]
    staged: dict[str, Entry] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)  # every folder, made here or holding files

    @property
    def where(self) -> str:
        return f"{self.project}/{self.name}"

    def __post_init__(self) -> None:
        self.folders.add("")
        for path in self.files:
            self.note_folders(path)

    def note_folders(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for end in range(1, len(parts) + 1):
            self.folders.add("/".join(parts[:end]))

    def file(self, path: str) -> Entry | None:
        return self.staged.get(path) or self.files.get(path)

    def stage(self, path: str, entry: Entry) -> None:
        self.staged[path] = entry
        self.note_folders(path)

    def children(self, folder: str) -> dict[str, Entry | None]:
        """Names right under `folder`: a file's entry, or None for a folder."""
        prefix = folder + "/" if folder else ""
        found: dict[str, Entry | None] = {}
        for path in self.folders:
            if path.startswith(prefix) and path != folder and "/" not in path[len(prefix) :]:
                found[path[len(prefix) :]] = None
        for path in (*self.files, *self.staged):
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                found[path[len(prefix) :]] = self.file(path)
        return found


class DataFiles:
    """The database and store side of data sessions: blocking calls, run in threads."""

    def __init__(self, database: Database, store: BlobStore) -> None:
        self.database = database
        self.store = store

    def person(self, key: asyncssh.SSHKey, address: str) -> Person | None:
        with self.database.writing() as session:
            user = sshkeys.owner_of(session, key)
            if user is None:
                return None
            return Person(user.id, user.name, user.language or DEFAULT_LANGUAGE, address)

    def is_admin(self, person: Person) -> bool:
        with self.database.reading() as session:
            user = session.get(User, person.user_id)
            return bool(user and user.is_admin and not user.is_disabled)

    def projects(self, person: Person) -> list[str]:
        """The projects the person may write into (member or owner), not archived."""
        with self.database.reading() as session:
            roles = (ProjectRole.member.value, ProjectRole.owner.value)
            return list(
                session.scalars(
                    select(Project.name)
                    .join(Membership, Membership.project_id == Project.id)
                    .where(
                        Membership.user_id == person.user_id,
                        Membership.role.in_(roles),
                        Project.archived_at.is_(None),
                    )
                    .order_by(Project.name)
                )
            )

    def repositories(self, person: Person, project: str, kind: str) -> list[str]:
        with self.database.reading() as session:
            found, _ = access(session, _actor(session, person), project, ProjectRole.member)
            return list(
                session.scalars(
                    select(Repository.name)
                    .where(Repository.project_id == found.id, Repository.kind == kind)
                    .order_by(Repository.name)
                )
            )

    def check_project(self, person: Person, project: str) -> None:
        with self.database.reading() as session:
            access(session, _actor(session, person), project, ProjectRole.member)

    def repository(self, person: Person, project: str, kind: str, name: str) -> _Repository:
        """The repository with its latest version's files, if the person may write to it."""
        with self.database.reading() as session:
            actor = _actor(session, person)
            found = data.get_repository(session, actor, kind, project, name, ProjectRole.member)
            files: dict[str, Entry] = {}
            with contextlib.suppress(NotFound):
                latest = data.version_of(session, found, data.LATEST)
                mtime = int(latest.created_at.timestamp())
                files = {
                    f.path: Entry(f.sha256, f.size, mtime)
                    for f in data.files_of(session, latest.id)
                }
            return _Repository(found.id, found.project_id, project, kind, name, files)

    def create_repository(self, person: Person, project: str, kind: str, name: str) -> None:
        """As the console makes one (members may); the project is checked before the name."""
        with self.database.writing() as session:
            actor = _actor(session, person)
            access(session, actor, project, ProjectRole.member)
            spec = RepositoryCreate(project=project, name=name)
            data.create_repository(session, actor, kind, spec)

    def room(self, project_id: int) -> int | None:
        """Bytes the project may still store (None: no limit); refused if it is archived."""
        with self.database.reading() as session:
            project = session.get(Project, project_id)
            if project is None:
                raise NotFound("ssh.sftp.not_found")
            writable(project)
            return data.room_left(session, project)

    def finish(self, project_id: int, staging: Path, sha256: str | None) -> Entry:
        """A closed upload into the store, held by the project, if its storage still has the
        room (checked again: other sessions may have written meanwhile)."""
        if sha256 is None:
            sha256, size = hash_file(staging)
        else:
            size = staging.stat().st_size
        with self.database.writing() as session:
            project = session.get(Project, project_id)
            if project is None:
                raise NotFound("error.project_not_found", name=str(project_id))
            if session.get(ProjectBlob, (project_id, sha256)) is None:
                data.check_room(session, project, size, "size")
            self.store.add(staging, sha256)
            data.hold(session, project_id, sha256, size)
            session.commit()
        return Entry(sha256, size, int(utcnow().timestamp()))

    def commit(self, person: Person, repository: _Repository) -> int:
        """One new version: the latest one now plus what was uploaded. Its number. The person
        must still be allowed to write there (a membership may end during a session)."""
        files = [
            ManifestEntry(path=path, sha256=entry.sha256, size=entry.size)
            for path, entry in sorted(repository.staged.items())
        ]
        message = f"SFTP upload by {person.name}"
        for attempt in range(COMMIT_TRIES):
            with self.database.writing() as session:
                actor = _actor(session, person)
                found = data.get_repository(
                    session,
                    actor,
                    repository.kind,
                    repository.project,
                    repository.name,
                    ProjectRole.member,
                )
                if found.id != repository.id:  # deleted, and another made with its name
                    raise NotFound("ssh.sftp.not_found")
                base = None
                with contextlib.suppress(NotFound):
                    base = data.version_of(session, found, data.LATEST).number
                body = VersionCreate(message=message, files=files, base=base)
                try:
                    version = data.create_version(
                        session, actor, self.store, found, body, source="sftp"
                    )
                except Conflict as error:
                    if error.key != "error.version_raced" or attempt + 1 == COMMIT_TRIES:
                        raise
                    continue
                return version.number
        raise AssertionError("unreachable")  # pragma: no cover


def _actor(session: Session, person: Person) -> Actor:
    user = session.get(User, person.user_id)
    if user is None or user.is_disabled:
        raise Forbidden("error.role_required", role=ProjectRole.member.value)
    return Actor(user, person.address)


# --- the SFTP server ------------------------------------------------------------------------


class _Upload:
    """A file being written: bytes gathered in memory, written from a worker thread to a
    staging file, hashed in order as they go (a client writing out of order gets its file
    hashed once closed instead)."""

    def __init__(self, repository: _Repository, path: str, staging: Path, limit: int | None):
        self.repository = repository
        self.path = path
        self.staging = staging
        self.limit = limit  # bytes the file may reach (None: no quota)
        self.fd = -1
        self.size = 0
        self.buffer = bytearray()
        self.start = 0  # where the buffer goes in the file
        self.hasher: Any = hashlib.sha256()
        self.hashed = 0
        self.failed = ""  # why the upload was refused: it will not be committed

    def open(self, existing: Path | None) -> None:
        """The staging file; with the content of `existing` when the client continues a file
        (an open without truncation)."""
        self.fd = os.open(self.staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        if existing is None:
            return
        with existing.open("rb") as source:
            while chunk := source.read(BUFFER):
                os.write(self.fd, chunk)
                self.hasher.update(chunk)
                self.hashed += len(chunk)
        self.size = self.start = self.hashed

    def flush(self) -> None:
        if not self.buffer:
            return
        os.pwrite(self.fd, self.buffer, self.start)
        if self.hasher is not None and self.start == self.hashed:
            self.hasher.update(self.buffer)
            self.hashed += len(self.buffer)
        else:
            self.hasher = None
        self.start += len(self.buffer)
        self.buffer = bytearray()

    def write_at(self, offset: int, chunk: bytes) -> None:
        """Bytes out of order: written where they go; the file is hashed when closed."""
        self.flush()
        os.pwrite(self.fd, chunk, offset)
        self.hasher = None
        self.start = offset + len(chunk)

    def truncate(self, size: int) -> None:
        self.flush()
        os.ftruncate(self.fd, size)
        if size != self.hashed:
            self.hasher = None
        self.size = self.start = size

    def read(self, offset: int, length: int) -> bytes:
        self.flush()
        return os.pread(self.fd, length, offset)

    def end(self) -> str | None:
        """Closes the staging file; its sha256 when every byte was hashed in order."""
        self.flush()
        os.close(self.fd)
        self.fd = -1
        if self.hasher is not None and self.hashed == self.size:
            return str(self.hasher.hexdigest())
        return None

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            self.staging.unlink()


@dataclass
class _Download:
    fd: int
    entry: Entry


class DataServer(asyncssh.SFTPServer):
    """One SFTP session's view of the person's datasets and models (see the module)."""

    def __init__(self, chan: asyncssh.SSHServerChannel, files: DataFiles, person: Person):
        super().__init__(chan)
        self.files = files
        self.person = person
        self.repositories: dict[tuple[str, str, str], _Repository] = {}
        self.uploads: set[_Upload] = set()
        self.ending = False  # the session ends: handles closed now were never closed by the client
        self.committed = False

    # -- paths ---------------------------------------------------------------------------

    def say(self, key: str, **params: Any) -> str:
        return translate(key, self.person.language, **params)

    def parts(self, path: bytes) -> list[str]:
        """The path's parts from the root; `..` is refused, not followed."""
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError:
            raise asyncssh.SFTPFailure(self.say("validation.data_path.character")) from None
        parts = [part for part in text.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise asyncssh.SFTPPermissionDenied(self.say("validation.data_path.component"))
        return parts

    async def repository(self, parts: list[str]) -> tuple[_Repository, str]:
        """The repository a path of 3 parts or more is in, and the path inside it."""
        project, plural, name, *rest = parts
        kind = KINDS.get(plural)
        if kind is None:
            raise asyncssh.SFTPNoSuchFile(self.say("ssh.sftp.not_found"))
        key = (project, kind, name)
        if key not in self.repositories:
            self.repositories[key] = await self.call(
                self.files.repository, self.person, project, kind, name
            )
        return self.repositories[key], "/".join(rest)

    def inside(self, path: str) -> str:
        """A path inside a repository, checked as a version's paths are."""
        try:
            return paths.check(path)
        except paths.BadPath as error:
            raise asyncssh.SFTPFailure(self.say(error.key)) from None

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """A blocking call in a thread; the service's refusals as SFTP errors, in the
        person's language."""
        try:
            return await asyncio.to_thread(function, *args)
        except NotFound as error:
            raise asyncssh.SFTPNoSuchFile(self.say(error.key, **error.params)) from None
        except Forbidden as error:
            raise asyncssh.SFTPPermissionDenied(self.say(error.key, **error.params)) from None
        except SuanliError as error:
            raise asyncssh.SFTPFailure(self.say(error.key, **error.params)) from None
        except ValidationError:
            raise asyncssh.SFTPFailure(self.say("ssh.sftp.bad_name")) from None

    # -- looking -------------------------------------------------------------------------

    def map_path(self, path: bytes) -> bytes:
        """Never a path on the server's disk: asyncssh's defaults for what this class does not
        serve (and any it adds later) reach the disk through here, and so are refused."""
        raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.not_found"))

    def realpath(self, path: bytes) -> bytes:
        """Lexically, from the root: `cd ..` works, and nothing is above the root."""
        return posixpath.normpath(posixpath.join(b"/", path)).replace(b"//", b"/")

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        parts = self.parts(path)
        if len(parts) == 0:
            return _folder(open_to_writes=False)
        if len(parts) == 1:
            await self.call(self.files.check_project, self.person, parts[0])
            return _folder(open_to_writes=False)
        if len(parts) == 2:
            if parts[1] not in KINDS:
                raise asyncssh.SFTPNoSuchFile(self.say("ssh.sftp.not_found"))
            await self.call(self.files.check_project, self.person, parts[0])
            return _folder(open_to_writes=False)
        repository, inside = await self.repository(parts)
        entry = repository.file(inside)
        if entry is not None:
            return _file(entry, staged=inside in repository.staged)
        if inside in repository.folders:
            return _folder(open_to_writes=True)
        raise asyncssh.SFTPNoSuchFile(self.say("ssh.sftp.not_found"))

    lstat = stat  # there are no links

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        parts = self.parts(path)
        yield asyncssh.SFTPName(b".", attrs=await self.stat(path))
        yield asyncssh.SFTPName(b"..", attrs=_folder(open_to_writes=False))
        if len(parts) < 3:
            for name in await self.names(parts):
                writable_folder = len(parts) == 2
                yield asyncssh.SFTPName(
                    name.encode(), attrs=_folder(open_to_writes=writable_folder)
                )
            return
        repository, inside = await self.repository(parts)
        if inside not in repository.folders:
            raise asyncssh.SFTPNotADirectory(self.say("ssh.sftp.not_found"))
        for name, entry in sorted(repository.children(inside).items()):
            child = f"{inside}/{name}" if inside else name
            attrs = (
                _folder(open_to_writes=True)
                if entry is None
                else _file(entry, staged=child in repository.staged)
            )
            yield asyncssh.SFTPName(name.encode(), attrs=attrs)

    async def names(self, parts: list[str]) -> list[str]:
        """What the levels above repositories hold: projects, the two kinds, repositories."""
        if not parts:
            return list(await self.call(self.files.projects, self.person))
        if len(parts) == 1:
            await self.call(self.files.check_project, self.person, parts[0])
            return list(KINDS)
        kind = KINDS.get(parts[1])
        if kind is None:
            raise asyncssh.SFTPNoSuchFile(self.say("ssh.sftp.not_found"))
        return list(await self.call(self.files.repositories, self.person, parts[0], kind))

    # -- files ---------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        parts = self.parts(path)
        if len(parts) < 4:
            if pflags & asyncssh.FXF_WRITE:
                raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.not_in_repository"))
            raise asyncssh.SFTPNoSuchFile(self.say("ssh.sftp.not_found"))
        repository, inside = await self.repository(parts)
        inside = self.inside(inside)
        if pflags & asyncssh.FXF_WRITE:
            return await self.upload(repository, inside, pflags)
        entry = repository.file(inside)
        if entry is None:
            raise asyncssh.SFTPNoSuchFile(self.say("ssh.sftp.not_found"))
        fd = await asyncio.to_thread(os.open, self.files.store.path_of(entry.sha256), os.O_RDONLY)
        return _Download(fd, entry)

    async def upload(self, repository: _Repository, inside: str, pflags: int) -> _Upload:
        if pflags & asyncssh.FXF_APPEND:
            raise asyncssh.SFTPOpUnsupported(self.say("ssh.sftp.append"))
        existing = repository.file(inside)
        if existing is not None and pflags & asyncssh.FXF_EXCL:
            raise asyncssh.SFTPFileAlreadyExists(self.say("ssh.sftp.exists"))
        if inside in repository.folders:
            raise asyncssh.SFTPFailure(self.say("ssh.sftp.is_folder"))
        parents = inside.split("/")[:-1]
        for end in range(1, len(parents) + 1):
            if repository.file("/".join(parents[:end])) is not None:
                raise asyncssh.SFTPFailure(self.say("ssh.sftp.is_file"))
        if len(repository.staged) >= MAX_FILES and inside not in repository.staged:
            raise asyncssh.SFTPFailure(self.say("ssh.sftp.too_many", max=MAX_FILES))
        room = await self.call(self.files.room, repository.project_id)
        if room is not None:
            writing = (u for u in self.uploads if u.repository.project_id == repository.project_id)
            room = max(0, room - sum(u.size for u in writing))
        staging = self.files.store.new_incoming(".sftp")
        upload = _Upload(repository, inside, staging, room)
        keep = existing is not None and not pflags & asyncssh.FXF_TRUNC
        source = self.files.store.path_of(existing.sha256) if keep and existing else None
        try:
            await asyncio.to_thread(upload.open, source)
        except OSError:
            await asyncio.to_thread(upload.discard)
            raise
        self.uploads.add(upload)
        return upload

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, _Upload):
            raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.immutable"))
        upload = file_obj
        if upload.failed:
            raise asyncssh.SFTPFailure(upload.failed)
        end = offset + len(data)
        if upload.limit is not None and end > upload.limit:
            upload.failed = self.say("error.storage_quota", wanted=end, left=upload.limit)
            raise asyncssh.SFTPFailure(upload.failed)
        if offset == upload.start + len(upload.buffer):
            upload.buffer += data
            if len(upload.buffer) >= BUFFER:
                await asyncio.to_thread(upload.flush)
        else:
            await asyncio.to_thread(upload.write_at, offset, data)
        upload.size = max(upload.size, end)
        return len(data)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, _Upload):
            return await asyncio.to_thread(file_obj.read, offset, size)
        assert isinstance(file_obj, _Download)  # noqa: S101 - open returns one of the two
        return await asyncio.to_thread(os.pread, file_obj.fd, size, offset)

    async def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        if isinstance(file_obj, _Upload):
            now = int(utcnow().timestamp())
            return _file(Entry("", file_obj.size, now), staged=True)
        assert isinstance(file_obj, _Download)  # noqa: S101 - open returns one of the two
        return _file(file_obj.entry, staged=False)

    async def close(self, file_obj: object) -> None:
        if isinstance(file_obj, _Download):
            os.close(file_obj.fd)
            return
        assert isinstance(file_obj, _Upload)  # noqa: S101 - open returns one of the two
        upload = file_obj
        self.uploads.discard(upload)
        if self.ending or upload.failed:
            # Never closed by the client (the session dropped), or refused: not committed.
            await asyncio.to_thread(upload.discard)
            if upload.failed and not self.ending:
                raise asyncssh.SFTPFailure(upload.failed)
            return
        try:
            sha256 = await asyncio.to_thread(upload.end)
            entry = await self.call(
                self.files.finish, upload.repository.project_id, upload.staging, sha256
            )
        except BaseException:
            await asyncio.to_thread(upload.discard)
            raise
        upload.repository.stage(upload.path, entry)

    async def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """Times and modes are not kept; accepted (clients set them after an upload)."""
        await self.stat(path)

    lsetstat = setstat

    async def fsync(self, file_obj: object) -> None:
        if isinstance(file_obj, _Upload):
            await asyncio.to_thread(file_obj.flush)

    def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported(self.say("ssh.sftp.no_statvfs"))

    def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported(self.say("ssh.sftp.no_statvfs"))

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        """As setstat; but a file being uploaded takes a new size (scp truncates to what it
        wrote)."""
        if isinstance(file_obj, _Upload) and attrs.size is not None:
            if file_obj.limit is not None and attrs.size > file_obj.limit:
                raise asyncssh.SFTPFailure(
                    self.say("error.storage_quota", wanted=attrs.size, left=file_obj.limit)
                )
            await asyncio.to_thread(file_obj.truncate, attrs.size)

    # -- folders, and what versions do not allow -----------------------------------------

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        parts = self.parts(path)
        if len(parts) < 3:
            raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.not_in_repository"))
        if len(parts) == 3:
            kind = KINDS.get(parts[1])
            if kind is None:
                raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.not_in_repository"))
            await self.call(self.files.create_repository, self.person, parts[0], kind, parts[2])
            return
        repository, inside = await self.repository(parts)
        inside = self.inside(inside)
        if repository.file(inside) is not None or inside in repository.folders:
            raise asyncssh.SFTPFileAlreadyExists(self.say("ssh.sftp.exists"))
        repository.folders.add(inside)
        repository.note_folders(inside)

    async def remove(self, path: bytes) -> None:
        """Only a file this session uploaded (not committed yet) may go."""
        repository, inside = await self.staged(path)
        del repository.staged[inside]

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        """Only a file this session uploaded, within its repository (WinSCP uploads to a
        temporary name, then renames); an existing file of that name is replaced."""
        repository, old = await self.staged(oldpath)
        parts = self.parts(newpath)
        if len(parts) < 4:
            raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.immutable"))
        target, new = await self.repository(parts)
        new = self.inside(new)
        if target is not repository or new in repository.folders:
            raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.immutable"))
        repository.stage(new, repository.staged.pop(old))

    posix_rename = rename

    async def staged(self, path: bytes) -> tuple[_Repository, str]:
        parts = self.parts(path)
        if len(parts) < 4:
            raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.immutable"))
        repository, inside = await self.repository(parts)
        if inside not in repository.staged:
            raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.immutable"))
        return repository, inside

    def rmdir(self, path: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.immutable"))

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPNoSuchFile(self.say("ssh.sftp.no_links"))

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.no_links"))

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied(self.say("ssh.sftp.no_links"))

    # -- the end -------------------------------------------------------------------------

    async def exit(self) -> None:
        """One version per repository that received files, then the exit status (OpenSSH's
        scp counts a session without one as failed). The client, which waits for it, is
        told on stderr what was made, or why not."""
        if self.committed:
            return
        self.committed = True
        failed = False
        for repository in self.repositories.values():
            if repository.staged:
                failed |= not await self.commit(repository)
        with contextlib.suppress(OSError, asyncssh.Error):
            self.channel.exit(1 if failed else 0)

    async def commit(self, repository: _Repository) -> bool:
        count = len(repository.staged)
        try:
            number = await asyncio.to_thread(self.files.commit, self.person, repository)
        except (SuanliError, ValidationError, OSError) as error:
            log.warning(
                "sftp: %s's upload to %s not committed: %s",
                self.person.name,
                repository.where,
                error,
            )
            reason = (
                self.say(error.key, **error.params)
                if isinstance(error, SuanliError)
                else str(error)
            )
            self.tell("ssh.sftp.not_committed", where=repository.where, reason=reason)
            return False
        log.info("sftp: %s made version %s of %s", self.person.name, number, repository.where)
        self.tell("ssh.sftp.committed", where=repository.where, version=number, count=count)
        return True

    def tell(self, key: str, **params: Any) -> None:
        """A line on the client's stderr (sftp and scp show it), if it still listens."""
        with contextlib.suppress(OSError, asyncssh.Error):
            self.channel.write_stderr((self.say(key, **params) + "\r\n").encode())


def _folder(*, open_to_writes: bool) -> asyncssh.SFTPAttrs:
    mode = 0o755 if open_to_writes else 0o555
    return asyncssh.SFTPAttrs(
        type=asyncssh.FILEXFER_TYPE_DIRECTORY, size=0, permissions=stat.S_IFDIR | mode
    )


def _file(entry: Entry, *, staged: bool) -> asyncssh.SFTPAttrs:
    mode = 0o644 if staged else 0o444  # a version's files never change
    return asyncssh.SFTPAttrs(
        type=asyncssh.FILEXFER_TYPE_REGULAR,
        size=entry.size,
        permissions=stat.S_IFREG | mode,
        atime=entry.mtime,
        mtime=entry.mtime,
    )


# --- the session ----------------------------------------------------------------------------


class _Handler(SFTPServerHandler):
    """asyncssh's SFTP packet handler, which on the session's end closes the handles the
    client left open: the server is told first, so that those files are not committed."""

    async def _cleanup(self, exc: Exception | None) -> None:
        server = self._server
        if isinstance(server, DataServer):
            server.ending = True
        await super()._cleanup(exc)


class DataSession(SSHServerStreamSession):
    """A session of the `data` login: the SFTP subsystem, and for anything else (a shell, a
    command, legacy scp) a line saying how to connect."""

    def __init__(self, files: DataFiles, person: Person) -> None:
        super().__init__(self._only_sftp, self._server, SFTP_VERSION)
        self.files = files
        self.person = person
        self.task: asyncio.Task[None] | None = None

    def _server(self, chan: asyncssh.SSHServerChannel) -> DataServer:
        return DataServer(chan, self.files, self.person)

    def session_started(self) -> None:
        chan = self._chan
        if chan is None or chan.get_subsystem() != "sftp":
            super().session_started()
            return
        reader: asyncssh.SSHReader[bytes] = asyncssh.SSHReader(self, chan)
        writer: asyncssh.SSHWriter[bytes] = asyncssh.SSHWriter(self, chan)
        handler = _Handler(self._server(chan), reader, writer, SFTP_VERSION)
        self.task = asyncio.get_running_loop().create_task(handler.run())

    def _only_sftp(
        self,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> None:
        message = translate("ssh.sftp_only", self.person.language, login=LOGIN)
        stderr.write((message + "\r\n").encode())
        stdout.channel.exit(1)

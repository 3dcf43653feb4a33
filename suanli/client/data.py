"""Datasets and models from the SDK: repositories, versions, tags, and moving their files.

`push` sends a folder as a new version: it hashes every file, asks the server which contents the
project lacks, and uploads only those, over tus (resumable uploads, 1.0.0), in parallel and in
chunks (one PATCH per chunk: a cut connection costs at most one chunk). An interrupted push
resumes where it stopped, in a later run too: the upload of each file is remembered in a small
JSON file under the user's cache folder. `pull` downloads a version into a folder, resuming
partial files with Range requests, and checks every file's sha256 against the manifest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx

from suanli.client.client import ApiError, _error, _given, _Group
from suanli.data import paths
from suanli.i18n import translate
from suanli.schemas.data import (
    FileOut,
    ImportOut,
    RepositoryOut,
    StorageOut,
    UserOfOut,
    VerifyOut,
    VersionDetailOut,
    VersionOut,
)
from suanli.schemas.system import FieldProblem, Problem

if TYPE_CHECKING:
    from suanli.client.client import Client

T = TypeVar("T")
R = TypeVar("R")
# Bytes per PATCH: fewer requests, and a cut one loses nothing (the server keeps what came).
CHUNK = 32 << 20
READ = 1 << 20  # bytes per read while hashing or downloading
RETRIES = 3  # a chunk or a download cut by the network is tried again this many times
MISSING_BATCH = 10_000  # hashes asked per request
STATE_KEPT = 7 * 86400  # seconds an unfinished upload is remembered (the server drops it sooner)
PART = ".suanli-part"  # a file being downloaded, beside where it goes
TUS = {"Tus-Resumable": "1.0.0"}
Callback = Callable[["Progress"], None]


@dataclass(frozen=True)
class Progress:
    """Where a push or pull stands, given to the `progress` callback after every chunk.

    `stage` is "hash" (reading the folder), "upload" (sending what the project lacks) or
    "download". The totals are the stage's; `resumed_bytes` are those an earlier, interrupted
    run had already moved (counted in `done_bytes` too). Callbacks run in worker threads, one
    at a time; one that raises stops the transfer (what was sent stays resumable)."""

    stage: str
    path: str
    done_bytes: int
    total_bytes: int
    done_files: int
    total_files: int
    resumed_bytes: int = 0


@dataclass(frozen=True)
class LocalFile:
    """A file of a folder being pushed: its path in the version, and where its bytes are."""

    path: str
    source: Path
    size: int
    mtime_ns: int
    # With size and mtime, what tells a file changed since it was last hashed (as git's index
    # does): the inode and the change time, which no tool can set back.
    inode: int = 0
    ctime_ns: int = 0


class _Stopped(Exception):
    """Another worker failed or the user interrupted: this one stops at its next chunk."""


class Uploads(_Group):
    """Resumable uploads (tus 1.0.0) into a project; `Repositories.push` does all of this for
    a folder. An upload is named by its id (the last part of its tus URL)."""

    def create(self, project: str, length: int, filename: str = "") -> str:
        """Start an upload of `length` bytes; the server refuses it (413) before a byte is
        sent when the project's storage has no room."""
        meta = {"project": project, "filename": filename}
        header = ",".join(
            f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in meta.items()
        )
        response = _send(
            self._client,
            "POST",
            "uploads",
            headers={"Upload-Length": str(length), "Upload-Metadata": header},
        )
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def offset(self, upload_id: str) -> int:
        """How many bytes arrived: send the rest from there (404 once it expired)."""
        return int(_send(self._client, "HEAD", f"uploads/{upload_id}").headers["Upload-Offset"])

    def send(self, upload_id: str, offset: int, data: bytes) -> tuple[int, str | None]:
        """Append `data` at `offset` (409 if the upload ends elsewhere). Returns the new offset
        and, after the last byte, the sha256 the server computed."""
        headers = {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        response = _send(
            self._client, "PATCH", f"uploads/{upload_id}", headers=headers, content=data
        )
        return int(response.headers["Upload-Offset"]), response.headers.get("Upload-Sha256")

    def discard(self, upload_id: str) -> None:
        _send(self._client, "DELETE", f"uploads/{upload_id}")

    def missing(self, project: str, sha256: Iterable[str]) -> list[str]:
        """Which of these contents the project does not hold yet (send only those)."""
        wanted = list(dict.fromkeys(sha256))
        lacking: list[str] = []
        for start in range(0, len(wanted), MISSING_BATCH):
            body = {"sha256": wanted[start : start + MISSING_BATCH]}
            where = f"projects/{quote(project, safe='')}/contents/missing"
            lacking += self._client.request("POST", where, json=body)
        return lacking


class Imports(_Group):
    """Imports by id: follow, cancel, retry."""

    def get(self, import_id: int) -> ImportOut:
        return self._client.get(f"imports/{import_id}", ImportOut)

    def cancel(self, import_id: int) -> ImportOut:
        return ImportOut.model_validate(self._client.request("POST", f"imports/{import_id}/cancel"))

    def retry(self, import_id: int) -> ImportOut:
        return ImportOut.model_validate(self._client.request("POST", f"imports/{import_id}/retry"))


class Repositories(_Group):
    """Datasets (`plural="datasets"`) or models (`plural="models"`): repositories named
    `{project}/{name}`, their immutable versions (by number or tag: `latest`, `prod`) and
    files."""

    def __init__(self, client: Client, plural: str):
        super().__init__(client)
        self._plural = plural

    def _path(self, project: str, name: str, *rest: str) -> str:
        # Each part quoted whole: a name can never reach another route.
        return "/".join(quote(part, safe="") for part in (self._plural, project, name, *rest))

    def create(
        self, project: str, name: str, description: str = "", visibility: str = "project"
    ) -> RepositoryOut:
        body = {
            "project": project,
            "name": name,
            "description": description,
            "visibility": visibility,
        }
        return RepositoryOut.model_validate(self._client.request("POST", self._plural, json=body))

    def list(
        self, project: str | None = None, catalogue: bool = False, limit: int = 200
    ) -> list[RepositoryOut]:
        """Newest first: your projects' and the public ones (`catalogue`: only those the
        administrators curated)."""
        params = {"project": project, "catalogue": "true" if catalogue else None, "limit": limit}
        return self._client.get(self._plural, list[RepositoryOut], **params)

    def get(self, project: str, name: str) -> RepositoryOut:
        return self._client.get(self._path(project, name), RepositoryOut)

    def update(
        self,
        project: str,
        name: str,
        *,
        description: str | None = None,
        visibility: str | None = None,
        catalogue: bool | None = None,
    ) -> RepositoryOut:
        """Description and visibility ("project" or "public"); `catalogue` (administrators)."""
        body = _given(description=description, visibility=visibility, catalogue=catalogue)
        data = self._client.request("PATCH", self._path(project, name), json=body)
        return RepositoryOut.model_validate(data)

    def delete(self, project: str, name: str, force: bool = False) -> None:
        """Delete it with every version (owners); refused while live workloads read it,
        unless `force` (see `users`)."""
        params = {"force": "true"} if force else None
        self._client.request("DELETE", self._path(project, name), params=params)

    def versions(self, project: str, name: str) -> list[VersionOut]:
        """Newest first, with their tags."""
        return self._client.get(self._path(project, name, "versions"), list[VersionOut])

    def version(
        self, project: str, name: str, ref: str, prefix: str = "", after: str = ""
    ) -> VersionDetailOut:
        """A version by number or tag, with a page of its manifest (1000 files in path order
        under `prefix`, from the one `after` that path; `files_total` counts them all)."""
        path = self._path(project, name, "versions", str(ref))
        return self._client.get(path, VersionDetailOut, prefix=prefix or None, after=after or None)

    def manifest(self, project: str, name: str, ref: str) -> VersionDetailOut:
        """A version with every file of its manifest, read page after page."""
        version = self.version(project, name, ref)
        files = list(version.files)
        while files and len(files) < version.files_total:
            page = self.version(project, name, str(version.number), after=files[-1].path)
            if not page.files:
                break
            files += page.files
        return version.model_copy(update={"files": files})

    def delete_version(self, project: str, name: str, ref: str, force: bool = False) -> None:
        params = {"force": "true"} if force else None
        self._client.request(
            "DELETE", self._path(project, name, "versions", str(ref)), params=params
        )

    def users(self, project: str, name: str, ref: str) -> list[UserOfOut]:
        """The live workloads that read this version: what deleting it would affect."""
        path = self._path(project, name, "versions", str(ref), "users")
        return self._client.get(path, list[UserOfOut])

    def tag(
        self, project: str, name: str, tag: str, version: int, expected: int | None = None
    ) -> RepositoryOut:
        """Point `tag` at `version`; with `expected`, only if it still points there (409 when
        someone moved it meanwhile)."""
        body = _given(version=version, expected=expected)
        data = self._client.request("PUT", self._path(project, name, "tags", tag), json=body)
        return RepositoryOut.model_validate(data)

    def untag(self, project: str, name: str, tag: str) -> None:
        self._client.request("DELETE", self._path(project, name, "tags", tag))

    def verify(self, project: str, name: str, ref: str) -> VerifyOut:
        """The server hashes every file of the version again and compares with the manifest."""
        path = self._path(project, name, "versions", str(ref), "verify")
        return VerifyOut.model_validate(self._client.request("POST", path))

    def storage(self, project: str) -> StorageOut:
        """The project's bytes held (each content once), reserved by unfinished uploads, and
        its limit."""
        return self._client.get(f"projects/{quote(project, safe='')}/storage", StorageOut)

    def commit(
        self,
        project: str,
        name: str,
        files: Iterable[FileOut | dict[str, Any]],
        message: str = "",
        base: int | None = None,
        remove: Sequence[str] = (),
        tags: Sequence[str] = (),
    ) -> VersionDetailOut:
        """A new version (it becomes `latest`): `files` (path, sha256, size of contents the
        project holds) on top of version `base` (none: start empty), less `remove`."""
        entries = [f.model_dump() if isinstance(f, FileOut) else dict(f) for f in files]
        body: dict[str, Any] = {
            "message": message,
            "files": entries,
            "remove": list(remove),
            "tags": list(tags),
        }
        if base is not None:
            body["base"] = base
        data = self._client.request("POST", self._path(project, name, "versions"), json=body)
        return VersionDetailOut.model_validate(data)

    def commit_output(
        self, project: str, name: str, job: int, path: str, message: str = ""
    ) -> VersionDetailOut:
        """Workload `job`'s folder `path` (inside its own folder) as a new version, with its
        lineage: the workload and the versions it read."""
        body = {"job": job, "path": path, "message": message}
        data = self._client.request("POST", self._path(project, name, "commit"), json=body)
        return VersionDetailOut.model_validate(data)

    def start_import(
        self, project: str, name: str, source: dict[str, Any], message: str = ""
    ) -> ImportOut:
        """Fetch `source` (kind, url, and what the kind needs; see ImportSource) into a new
        version in the background; follow it with `client.imports.get(id)`."""
        body = {"source": source, "message": message}
        data = self._client.request("POST", self._path(project, name, "imports"), json=body)
        return ImportOut.model_validate(data)

    def imports(self, project: str, name: str) -> list[ImportOut]:
        """The repository's imports, newest first."""
        return self._client.get(self._path(project, name, "imports"), list[ImportOut])

    def download(
        self, project: str, name: str, ref: str, path: str, to: Path, resume: bool = True
    ) -> Path:
        """One file of a version into `to` (a file, or a folder to put it in), resuming a
        partial download with a Range request; its sha256 is checked against the manifest.
        Returns where it went."""
        version = self.version(project, name, ref, prefix=path)
        entry = next((f for f in version.files if f.path == path), None)
        if entry is None:
            raise _local(
                self._client, 404, "not-found", "error.pull_no_such_file", "path", path=path
            )
        to = Path(to)
        target = to / path.rsplit("/", 1)[-1] if to.is_dir() else to
        tally = _Tally("download", entry.size, 1, None)
        self._fetch(project, name, version.number, entry, target, tally, threading.Event(), resume)
        return target

    def push(
        self,
        project: str,
        name: str,
        directory: Path | str,
        message: str = "",
        *,
        tags: Sequence[str] = (),
        workers: int = 4,
        progress: Callback | None = None,
        chunk_size: int = CHUNK,
        state_file: Path | None = None,
    ) -> VersionDetailOut:
        """Send a folder as a new version of an existing repository (the folder's whole
        content: files no longer in it are not in the new version).

        Only regular files are sent; sockets, pipes and devices are skipped. A symbolic link
        to a file inside the folder is sent as that file's content under the link's path, a
        link to a folder inside it is not walked (its files are sent from where they are), and
        a link that leads outside the folder (or nowhere) is an error (ApiError 422) before
        anything is sent: following it would publish what the folder does not hold, skipping
        it would make a version silently short of a file.

        Contents the project already holds are not sent again. Each upload is remembered in
        `state_file` (default: uploads.json in the user's cache folder) by server, project,
        absolute path, size and modification time, so that a push interrupted (Ctrl-C, a lost
        connection, a failed `progress` callback) continues in the next run from the offset
        the server has, not from 0."""
        self.get(project, name)  # fails before reading a byte when it does not exist
        files = scan(Path(directory), self._client)
        stop = threading.Event()
        state = UploadState(state_file or default_state_file())
        hashes = self._hash_all(files, workers, progress, stop, state)
        lacking = set(self._client.uploads.missing(project, hashes))
        sending: dict[str, LocalFile] = {}
        for file, sha in zip(files, hashes, strict=True):
            if sha in lacking:
                sending.setdefault(sha, file)  # the same content twice is sent once
        tally = _Tally("upload", sum(f.size for f in sending.values()), len(sending), progress)
        _run_all(
            workers,
            lambda item: self._upload(project, item[1], item[0], state, tally, stop, chunk_size),
            list(sending.items()),
            stop,
        )
        manifest = [
            {"path": f.path, "sha256": sha, "size": f.size}
            for f, sha in zip(files, hashes, strict=True)
        ]
        return self.commit(project, name, manifest, message, tags=tags)

    def pull(
        self,
        project: str,
        name: str,
        ref: str,
        directory: Path | str,
        *,
        workers: int = 4,
        progress: Callback | None = None,
    ) -> VersionDetailOut:
        """Download every file of a version into `directory` (made if missing), each checked
        against its sha256. Files already there with the right content are kept; partial files
        of an interrupted pull (`name.suanli-part`) are resumed; other files of the folder are
        left alone. The tag is resolved once: a `latest` moved meanwhile does not mix two
        versions."""
        version = self.manifest(project, name, ref)
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        targets = [(entry, _inside(root, entry.path, self._client)) for entry in version.files]
        tally = _Tally("download", version.size_bytes, len(targets), progress)
        stop = threading.Event()
        _run_all(
            workers,
            lambda item: self._fetch(project, name, version.number, item[0], item[1], tally, stop),
            targets,
            stop,
        )
        return version

    # --- the work of one file ---------------------------------------------------------------

    def _hash_all(
        self,
        files: list[LocalFile],
        workers: int,
        progress: Callback | None,
        stop: threading.Event,
        state: UploadState,
    ) -> list[str]:
        """Each file's sha256: remembered from an earlier push while the file is unchanged
        (same inode, size, modification and change time), else read and hashed."""
        tally = _Tally("hash", sum(f.size for f in files), len(files), progress)
        known = state.hashes()
        found: dict[str, str] = {}

        def one(file: LocalFile) -> str:
            key = state.hash_key(file)
            if key in known:
                tally.add(file.path, file.size, files=1, resumed=file.size)
                return known[key]
            digest = hashlib.sha256()
            with file.source.open("rb") as stream:
                while block := stream.read(READ):
                    if stop.is_set():
                        raise _Stopped
                    digest.update(block)
                    tally.add(file.path, len(block))
            tally.add(file.path, files=1)
            found[key] = digest.hexdigest()
            return found[key]

        hashes = _run_all(workers, one, files, stop)
        state.remember_hashes(found)
        return hashes

    def _upload(
        self,
        project: str,
        file: LocalFile,
        sha256: str,
        state: UploadState,
        tally: _Tally,
        stop: threading.Event,
        chunk_size: int,
    ) -> None:
        """Send one file, from where an earlier run left its upload when the server still
        has it; chunks cut by the network are sent again from the offset the server says."""
        uploads = self._client.uploads
        key = state.key(str(self._client._http.base_url), project, file)
        upload_id, offset = state.get(key), 0
        if upload_id:
            try:
                offset = uploads.offset(upload_id)
                tally.add(file.path, offset, resumed=offset)
            except ApiError as error:
                if error.status != 404:
                    raise
                upload_id = None  # expired or discarded: start again
        if not upload_id:
            upload_id = uploads.create(project, file.size, file.path)
            state.put(key, upload_id)
        got, failures = None, 0
        if file.size == 0:  # complete once created: the server sends no PATCH for nothing
            got = hashlib.sha256(b"").hexdigest()
        with file.source.open("rb") as stream:
            while got is None:
                if stop.is_set():
                    raise _Stopped
                stream.seek(offset)
                body = stream.read(min(chunk_size, file.size - offset))
                if len(body) != min(chunk_size, file.size - offset):
                    raise self._changed(file, state, key)
                try:
                    reached, got = uploads.send(upload_id, offset, body)
                except (httpx.TransportError, ApiError) as error:
                    failures += 1
                    if failures > RETRIES or not _retryable(error):
                        raise
                    time.sleep(failures)
                    reached = uploads.offset(upload_id)
                else:
                    failures = 0
                tally.add(file.path, reached - offset)
                offset = reached
        state.forget(key)
        if got != sha256:
            raise self._changed(file, state, key)
        tally.add(file.path, files=1)

    def _changed(self, file: LocalFile, state: UploadState, key: str) -> ApiError:
        state.forget(key)
        return _local(
            self._client, 409, "conflict", "error.push_changed", "directory", path=file.path
        )

    def _fetch(
        self,
        project: str,
        name: str,
        number: int,
        entry: FileOut,
        target: Path,
        tally: _Tally,
        stop: threading.Event,
        resume: bool = True,
    ) -> None:
        """One file into `target`, through `target.suanli-part` (kept when cut, resumed with a
        Range request), moved into place only once its sha256 is right."""
        same_size = target.is_file() and target.stat().st_size == entry.size
        if same_size and _hash_file(target) == entry.sha256:
            tally.add(entry.path, entry.size, files=1, resumed=entry.size)
            return
        part = target.with_name(target.name + PART)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not resume or (part.exists() and part.stat().st_size > entry.size):
            part.unlink(missing_ok=True)
        url = self._path(project, name, "versions", str(number), "files") + "/"
        url += quote(entry.path, safe="/")
        digest = hashlib.sha256()
        have = 0
        if part.exists():
            digest, have = _hash_with_size(part)
            tally.add(entry.path, have, resumed=have)
        failures = 0
        while have < entry.size:
            try:
                digest, have = self._receive(url, part, have, digest, tally, entry.path, stop)
            except httpx.TransportError:
                failures += 1
                if failures > RETRIES:
                    raise
                time.sleep(failures)
                digest, have = _hash_with_size(part)  # what reached the disk
        part.touch()
        if digest.hexdigest() != entry.sha256:
            part.unlink(missing_ok=True)
            raise _local(
                self._client, 409, "conflict", "error.pull_corrupt", "path", path=entry.path
            )
        os.replace(part, target)
        tally.add(entry.path, files=1)

    def _receive(
        self,
        url: str,
        part: Path,
        have: int,
        digest: Any,
        tally: _Tally,
        path: str,
        stop: threading.Event,
    ) -> tuple[Any, int]:
        """One GET from `have` on, appended to `part`; returns the hash and the size of what
        it now holds."""
        headers = {"Range": f"bytes={have}-"} if have else {}
        with _stream(self._client, url, headers) as response:
            if have and response.status_code == 200:  # the server ignored the Range
                tally.add(path, -have)
                digest, have = hashlib.sha256(), 0
            with part.open("r+b" if have else "wb") as out:
                out.seek(have)
                out.truncate()
                for block in response.iter_bytes(READ):
                    if stop.is_set():
                        raise _Stopped
                    out.write(block)
                    digest.update(block)
                    have += len(block)
                    tally.add(path, len(block))
        return digest, have


class UploadState:
    """Where each file's upload stands, across runs: a small JSON file (mode 600) of upload ids,
    keyed by server, project, absolute path, size and modification time (a file changed since
    is a new upload), and of files' sha256 (a re-push of a large folder reads only what
    changed). Entries go when their upload ends, or after STATE_KEPT. Threads of one
    push share it through a lock; two pushes at once may lose each other's entries, which costs
    only a restart from 0 of those files."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    @staticmethod
    def key(server: str, project: str, file: LocalFile) -> str:
        return json.dumps([server, project, str(file.source), file.size, file.mtime_ns])

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._read().get(key)
        return entry.get("upload") if isinstance(entry, dict) else None

    def put(self, key: str, upload_id: str) -> None:
        with self._lock:
            entries = self._read()
            entries[key] = {"upload": upload_id, "at": time.time()}
            self._write(entries)

    @staticmethod
    def hash_key(file: LocalFile) -> str:
        identity = [str(file.source), file.inode, file.size, file.mtime_ns, file.ctime_ns]
        return json.dumps(["sha256", *identity])

    def hashes(self) -> dict[str, str]:
        """The sha256 earlier pushes found, by `hash_key` (one read for a whole push)."""
        with self._lock:
            entries = self._read()
        return {
            key: entry["sha256"]
            for key, entry in entries.items()
            if isinstance(entry.get("sha256"), str)
        }

    def remember_hashes(self, found: dict[str, str]) -> None:
        """Keep what a push hashed (one write for all of it)."""
        if not found:
            return
        with self._lock:
            entries = self._read()
            now = time.time()
            entries.update({key: {"sha256": sha, "at": now} for key, sha in found.items()})
            self._write(entries)

    def forget(self, key: str) -> None:
        with self._lock:
            entries = self._read()
            if entries.pop(key, None) is not None:
                self._write(entries)

    def _read(self) -> dict[str, Any]:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(entries, dict):
            return {}
        oldest = time.time() - STATE_KEPT
        return {
            key: entry
            for key, entry in entries.items()
            if isinstance(entry, dict)
            and isinstance(entry.get("at"), int | float)
            and entry["at"] > oldest
        }

    def _write(self, entries: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(entries, out, ensure_ascii=False)
        os.replace(temporary, self.path)


def default_state_file() -> Path:
    """uploads.json in $XDG_CACHE_HOME/suanli (by default ~/.cache/suanli)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "suanli" / "uploads.json"


def scan(directory: Path, client: Client) -> list[LocalFile]:
    """The files a push sends, sorted by path (see `Repositories.push` for links and other
    kinds of files). Each path is checked against the server's rule for paths in a version
    here, before a byte is read."""
    if not directory.is_dir():
        raise _local(
            client,
            422,
            "validation-error",
            "error.push_not_a_folder",
            "directory",
            path=str(directory),
        )
    root = directory.resolve()
    found: list[LocalFile] = []

    def refuse(error: OSError) -> None:
        raise error

    for folder, folders, names in os.walk(root, onerror=refuse):
        here = Path(folder)
        for entry in [*folders, *names]:
            where = here / entry
            relative = where.relative_to(root).as_posix()
            if where.is_symlink():
                target = where.resolve()
                if not target.is_relative_to(root) or not target.exists():
                    raise _local(
                        client,
                        422,
                        "validation-error",
                        "error.push_link_outside",
                        "directory",
                        path=relative,
                        target=os.readlink(where),
                    )
                where = target
            if entry in folders:
                continue  # walked by os.walk, or a link to a folder inside: not again
            info = where.stat()
            if not stat.S_ISREG(info.st_mode):
                continue
            try:
                paths.check(relative)
            except paths.BadPath as error:
                reason = translate(error.key, _language(client))
                raise _local(
                    client,
                    422,
                    "validation-error",
                    "error.push_bad_path",
                    "directory",
                    path=relative,
                    reason=reason,
                ) from None
            found.append(
                LocalFile(
                    relative, where, info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns
                )
            )
    return sorted(found, key=lambda f: f.path)


class _Tally:
    """The progress of one stage, counted from many threads; the callback sees every change,
    one at a time."""

    def __init__(self, stage: str, total_bytes: int, total_files: int, callback: Callback | None):
        self.stage, self.total_bytes, self.total_files = stage, total_bytes, total_files
        self.callback = callback
        self.done_bytes = self.done_files = self.resumed_bytes = 0
        self._lock = threading.Lock()
        self.add("")

    def add(self, path: str, size: int = 0, *, files: int = 0, resumed: int = 0) -> None:
        with self._lock:
            self.done_bytes += size
            self.done_files += files
            self.resumed_bytes += resumed
            if self.callback is not None:
                self.callback(
                    Progress(
                        self.stage,
                        path,
                        self.done_bytes,
                        self.total_bytes,
                        self.done_files,
                        self.total_files,
                        self.resumed_bytes,
                    )
                )


def _run_all(
    workers: int, task: Callable[[T], R], items: Sequence[T], stop: threading.Event
) -> list[R]:
    """`task` on every item in a pool of `workers` threads; results in order. The first failure
    (or Ctrl-C) stops the rest: queued items never start, running ones stop at their next
    chunk; that failure is raised."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(task, item) for item in items]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            return [f.result() for f in futures]
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise


def _retryable(error: Exception) -> bool:
    """A cut connection, a server restarting, or an offset that moved under a cut PATCH."""
    if isinstance(error, ApiError):
        return error.status in (409, 500, 502, 503, 504)
    return True


def _inside(root: Path, path: str, client: Client) -> Path:
    """Where a manifest's file goes: never outside `root`, whatever the server says."""
    try:
        paths.check(path)
    except paths.BadPath:
        raise _local(
            client, 422, "validation-error", "error.pull_bad_path", "path", path=path
        ) from None
    target = root / path
    if not target.resolve().is_relative_to(root.resolve()):
        raise _local(client, 422, "validation-error", "error.pull_bad_path", "path", path=path)
    return target


def _hash_file(path: Path) -> str:
    return _hash_with_size(path)[0].hexdigest()


def _hash_with_size(path: Path) -> tuple[Any, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while block := stream.read(READ):
            digest.update(block)
            size += len(block)
    return digest, size


def _headers(client: Client, extra: dict[str, str] | None = None) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {client.token}"} if client.token else {}
    return {**auth, **TUS, **(extra or {})}


def _send(
    client: Client,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """A tus request (its answers are headers, not JSON); ApiError when refused."""
    response = client._http.request(method, url, headers=_headers(client, headers), content=content)
    if not response.is_success:
        raise _error(response)
    return response


@contextmanager
def _stream(client: Client, url: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
    """A streamed GET that raises ApiError when refused, as the client's requests do."""
    with client._http.stream("GET", url, headers=_headers(client, headers)) as response:
        if not response.is_success:
            response.read()
            raise _error(response)
        yield response


def _language(client: Client) -> str:
    return client._http.headers.get("Accept-Language") or "en"


def _local(client: Client, status: int, kind: str, key: str, field: str, **params: Any) -> ApiError:
    """An error found on this side (a bad folder, a file changed while it was sent), as the
    server would answer it: the CLI shows both the same way."""
    language = _language(client)
    detail = translate(key, language, **params)
    problem = Problem(
        type=f"urn:suanli:problem:{kind}",
        title=translate(f"title.{kind}", language),
        status=status,
        detail=detail,
        errors=[FieldProblem(field=field, message=detail, type=key.rsplit(".", 1)[-1])],
    )
    return ApiError(status, problem)

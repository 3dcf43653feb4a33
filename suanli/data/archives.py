"""Unpacking imported archives (.zip, .tar, .tar.gz, .tgz) without trusting them.

An archive is someone else's file: its names may climb out of the target ('../', absolute
paths), its links may point anywhere, its headers may lie about sizes, and a few kilobytes may
expand to terabytes. So every name is checked, links and device files are refused, and the
bytes actually written are counted against the quota and against the archive's own size.
Nothing is half-unpacked on failure: entries go to a temporary sibling folder that is renamed
into place at the end.

The errors of imports live here (the lowest module of `suanli.data`'s fetchers) so that
`sources` and `archives` share them without an import cycle; `sources` re-exports them.
"""

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from suanli.data import paths

CHUNK = 1 << 20
# Small archives are measured as if they weighed this much: a 1 KiB archive of a repetitive
# text may rightly expand 1000 times; the ratio is for archives that would fill the disk.
MIN_RATIO_BASE = 64 * 1024
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# Where fetchers keep unfinished downloads under the target folder; no remote name may use it.
PARTIAL_DIR = ".suanli-partial"
UNIX = 3  # a zip entry's "made by" system whose external attributes hold a Unix mode


class ImportFailed(Exception):
    """An import failed for a reason the user can act on: `key` is the message (i18n) and
    `params` its placeholders."""

    def __init__(self, key: str, **params: Any):
        self.key = key
        self.params = params
        super().__init__(key, params)


class Cancelled(Exception):
    """The user cancelled the import; the fetcher stopped at the next chunk or file."""


def safe_path(name: str, *, key: str = "error.import.unsafe_path") -> str:
    """`name` (a remote path or an archive entry, '/'-separated) as the path of a version's
    file (`paths.check`), which stays inside the folder it is joined to; ImportFailed(key,
    path=name) when it is not one. Empty and '.' components ("./a//b") are dropped: archives
    made with `tar -C folder .` name every entry so."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    relative = "/".join(parts)
    if not name.startswith("/") and parts and parts[0] != PARTIAL_DIR:
        with contextlib.suppress(paths.BadPath):
            return paths.check(relative)
    raise ImportFailed(key, path=name[:300])


def archive_name(path: Path) -> str | None:
    """The name of the folder an archive unpacks to (data.tar.gz: data), or None when `path`
    is not an archive by its name."""
    lower = path.name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def unpack(
    archive: Path,
    into: Path,
    *,
    limit_bytes: int | None,
    max_files: int = 100_000,
    max_ratio: int = 100,
    cancelled: Callable[[], bool] | None = None,
) -> list[str]:
    """Unpack `archive` (zip or tar, maybe gzipped) into the new folder `into`; the relative
    paths of the files written. ImportFailed when an entry is unsafe, the archive is corrupt
    or too big (more than `limit_bytes` or `max_ratio` times its own size written, more than
    `max_files` entries); then `into` is not created."""
    if into.exists():
        raise ImportFailed("error.import.archive_conflict", path=into.name)
    budget = _Budget(archive, limit_bytes, max_files, max_ratio, cancelled)
    work = Path(tempfile.mkdtemp(prefix=f".{into.name}.", dir=into.parent))
    try:
        unpacker = _unpack_zip if _is_zip(archive) else _unpack_tar
        written = unpacker(archive, work, budget)
        work.rename(into)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as error:
        raise ImportFailed("error.import.archive_invalid", name=archive.name) from error
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return written


def _is_zip(archive: Path) -> bool:
    return archive.name.lower().endswith(".zip")


class _Budget:
    """What an archive may still write: bytes (quota and ratio) and entries."""

    def __init__(
        self,
        archive: Path,
        limit_bytes: int | None,
        max_files: int,
        max_ratio: int,
        cancelled: Callable[[], bool] | None,
    ):
        self.name = archive.name
        self.limit = limit_bytes
        self.max_files = max_files
        self.ratio_limit = max_ratio * max(archive.stat().st_size, MIN_RATIO_BASE)
        self.cancelled = cancelled or (lambda: False)
        self.written = 0
        self.entries = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.max_files:
            raise ImportFailed("error.import.archive_files", name=self.name, limit=self.max_files)
        if self.cancelled():
            raise Cancelled

    def wrote(self, count: int) -> None:
        self.written += count
        if self.limit is not None and self.written > self.limit:
            raise ImportFailed("error.import.too_large", size=self.written, limit=self.limit)
        if self.written > self.ratio_limit:
            raise ImportFailed("error.import.archive_bomb", name=self.name)


def _copy(source: IO[bytes], target: Path, budget: _Budget) -> None:
    with open(target, "xb") as out:
        for chunk in _chunks(source):
            budget.wrote(len(chunk))
            out.write(chunk)
            if budget.cancelled():
                raise Cancelled


def _chunks(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk


def _target(work: Path, name: str) -> tuple[str, Path]:
    relative = safe_path(name, key="error.import.archive_traversal")
    return relative, work / relative


def _unpack_zip(archive: Path, work: Path, budget: _Budget) -> list[str]:
    written = []
    with zipfile.ZipFile(archive) as zipped:
        entries = zipped.infolist()
        if len(entries) > budget.max_files:
            raise ImportFailed(
                "error.import.archive_files", name=budget.name, limit=budget.max_files
            )
        for info in entries:
            budget.entry()
            relative, target = _target(work, info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == UNIX else 0
            if kind == stat.S_IFLNK:
                raise ImportFailed("error.import.archive_link", path=relative)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: only permissions were written
                raise ImportFailed("error.import.archive_special", path=relative)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source:
                _copy(source, target, budget)
            written.append(relative)
    return written


def _unpack_tar(archive: Path, work: Path, budget: _Budget) -> list[str]:
    written = []
    with tarfile.open(archive, "r:*") as tarred:
        for member in tarred:
            budget.entry()
            relative, target = _target(work, member.name)
            if member.issym() or member.islnk():
                raise ImportFailed("error.import.archive_link", path=relative)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isreg():
                raise ImportFailed("error.import.archive_special", path=relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tarred.extractfile(member)
            if source is None:
                raise ImportFailed("error.import.archive_special", path=relative)
            with source:
                _copy(source, target, budget)
            written.append(relative)
    return written


def tree_size(root: Path) -> int:
    """The bytes of the regular files under `root` (links are not followed)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total

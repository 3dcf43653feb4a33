"""A workload's output folder into the store, read as its untrusted owner left it.

The folder belongs to the workload's account, which may have filled it with links to the
server's secrets, pipes, or files it keeps changing. So it is walked through directory
descriptors, opening every name without following links (O_NOFOLLOW) from the folder the walk
came from: a symbolic link, a device or a pipe anywhere is refused with its path, never
read. Each regular file is copied into the store's incoming/ folder while it is hashed: what
is stored is exactly what was read.
"""

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from suanli.data import paths
from suanli.data.store import CHUNK, BlobStore

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MAX_FILES = 100_000


class HarvestError(Exception):
    """The output cannot be taken as it is; `key` and `params` say why, for its owner."""

    def __init__(self, key: str, **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass(frozen=True)
class Harvested:
    path: str  # inside the version
    sha256: str
    size: int


def collect(
    folder: Path,
    relative: str,
    store: BlobStore,
    room: int | None,
    hold: Callable[[str, int], None],
    skip: Callable[[str], bool] | None = None,
) -> list[Harvested]:
    """Every regular file under `folder/relative` into the store (`hold` records each blob
    for the project as it lands). `room`: bytes the project may still write. `skip`: paths
    (files or folders, relative to `relative`) left out, folders not walked."""
    stack: list[tuple[int, str]] = [(_open_folder(folder, relative), "")]
    found: list[Harvested] = []
    written = 0
    try:
        while stack:
            fd, prefix = stack.pop()
            try:
                for entry in sorted(os.listdir(fd)):
                    path = paths.check(f"{prefix}{entry}")
                    if skip is not None and skip(path):
                        continue
                    info = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        stack.append((os.open(entry, _DIRECTORY, dir_fd=fd), path + "/"))
                        continue
                    if not stat.S_ISREG(info.st_mode):
                        raise HarvestError("error.output_not_regular", path=path)
                    if len(found) >= MAX_FILES:
                        raise HarvestError("error.output_too_many", limit=MAX_FILES)
                    sha256, size = _copy(fd, entry, path, store)
                    written += size
                    if room is not None and written > room:
                        raise HarvestError("error.storage_quota", wanted=written, left=room)
                    hold(sha256, size)
                    found.append(Harvested(path, sha256, size))
            finally:
                os.close(fd)
    except paths.BadPath as error:
        raise HarvestError("error.output_bad_name", reason=error.key) from None
    finally:
        for fd, _ in stack:  # folders pushed but not walked, when the walk stopped early
            os.close(fd)
    return found


def _open_folder(folder: Path, relative: str) -> int:
    """`relative` under `folder`, one name at a time, never through a link."""
    fd = os.open(folder, _DIRECTORY)
    for name in [part for part in relative.split("/") if part]:
        try:
            child = os.open(name, _DIRECTORY, dir_fd=fd)
        except OSError:
            raise HarvestError("error.output_not_folder", path=relative) from None
        finally:
            os.close(fd)
        fd = child
    return fd


def _copy(parent: int, name: str, path: str, store: BlobStore) -> tuple[str, int]:
    try:
        source = os.open(name, _FILE, dir_fd=parent)
    except OSError:
        raise HarvestError("error.output_not_regular", path=path) from None
    target = store.new_incoming()
    digest = hashlib.sha256()
    size = 0
    try:
        if not stat.S_ISREG(os.fstat(source).st_mode):
            raise HarvestError("error.output_not_regular", path=path)
        with open(target, "wb") as out:
            while chunk := os.read(source, CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        os.close(source)
    sha256, _ = store.add(target, digest.hexdigest())
    return sha256, size

"""The workloads' own folders: `<work_dir>/<job id>/`, one per workload, owned by its Unix
account (mode 0700) and kept outside the data directory, which no workload reaches.

The server, as root, writes into folders that their users own and may have filled with links
to its secrets or with pipes. So it never follows a link there: folders are made and checked
without following, files are written to a new name (exclusive create) and renamed into place,
ownership is given through the open file, and removals go through the folder's descriptor.
"""

import contextlib
import os
import pwd
import secrets
import stat
from pathlib import Path

from suanli.config import Settings
from suanli.services.jobs import work_folder


class FolderError(OSError):
    """A workload's folder is not what the server made (its user replaced it)."""


def prepare(
    settings: Settings, job_id: int, account: pwd.struct_passwd | None, *, first: bool
) -> Path:
    """The workload's folder, made if missing and given to its account. On its `first`
    attempt a workload's folder must not exist yet: one that does was left by another server
    or an earlier installation with the same work directory, and belongs to someone else."""
    root = settings.effective_work_dir
    root.mkdir(parents=True, exist_ok=True)
    if root.stat().st_uid == os.geteuid():
        root.chmod(0o711)  # reachable by each workload's account, listable by none
    folder = work_folder(settings, job_id)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        if first:
            raise FolderError(
                f"{folder} already exists: another server or an earlier installation with the "
                "same work_dir left it (each server needs a work_dir of its own)"
            ) from None
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise FolderError(f"{folder} is not a folder")
    if account is not None and (info.st_uid, info.st_gid) != (account.pw_uid, account.pw_gid):
        os.lchown(folder, account.pw_uid, account.pw_gid)
    return folder


def write(folder: Path, name: str, text: str, account: pwd.struct_passwd | None) -> Path:
    """Put `text` at `folder/name` for the account to read, never through a link."""
    temporary = folder / f".{name}.{secrets.token_hex(6)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        if account is not None:
            os.fchown(handle.fileno(), account.pw_uid, account.pw_gid)
    os.replace(temporary, folder / name)
    return folder / name


def remove(folder: Path, name: str) -> None:
    """Remove `folder/name` if it is there (a link itself, never what it points to)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def read(folder: Path, relative: str, limit: int) -> bytes | None:
    """The bytes of `folder/relative` as its workload wrote them, if that is a regular file
    of at most `limit` bytes reached without following a link (the folder is its user's: a
    link to the platform's secrets, a pipe or a giant is not read)."""
    data = _read(folder, relative, limit, tail=False)
    return data if data is not None and len(data) <= limit else None


def read_tail(folder: Path, relative: str, limit: int) -> bytes | None:
    """The last `limit` bytes (at most) of `folder/relative`, reached as `read` reaches it: a
    log that grows without bound is followed at the cost of its end."""
    return _read(folder, relative, limit, tail=True)


def _read(folder: Path, relative: str, limit: int, *, tail: bool) -> bytes | None:
    parts = [part for part in relative.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(folder, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        with os.fdopen(file_fd, "rb") as handle:
            info = os.fstat(file_fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            if tail and info.st_size > limit:
                handle.seek(info.st_size - limit)
                return handle.read(limit)
            return handle.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)

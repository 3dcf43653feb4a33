"""Datasets and models as files in the workload's own folder, where they cannot be mounted
(Slurm, whose nodes share the work directory; a local server that is not root).

A version's tree is made again at `<folder>/<group>/<name>` (group: `datasets` or `models`)
as hard links to the same blobs: the same inodes, so the same mode (0444) and the same owner
(the server). The workload's account reads the bytes and can change none of them. Where the
store and the work directory are on different filesystems (a link fails with EXDEV), each
file is copied instead, the copy owned by the server and made read-only (0444).

The folders made here belong to the server and are sealed (0555): the workload can add
nothing to them and remove nothing from them. It owns the folder that holds them, so all it
can do is rename `datasets` (or `models`) as a whole inside its own folder (Linux lets the
owner of a folder rename a sub-folder within it, never move it elsewhere without write access
to it): that breaks only its own paths and touches nothing of anyone else.

The workload's folder is its account's, which may have planted links there before a retry
(`datasets` → /etc). So, as in `suanli.services.workfolders`, nothing there is followed: the
walk goes through directory descriptors opened O_NOFOLLOW | O_DIRECTORY, everything is made
and removed relative to them (mkdirat, linkat, openat, unlinkat), and anything at a group's
or a tree's name that the server did not make is refused with the path named. The store's
own tree (under the data directory, which no workload reaches) is read by path.

A tree is built under a scratch name (`.<name>.<random>`, which no repository name can be) and
renamed into place: it is whole or absent. A retry (the same folder) keeps a tree that still
matches its version, and removes and rebuilds one that does not.
"""

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
SEALED = 0o555  # folders: read and traverse, nothing added or removed
READ_ONLY = 0o444  # files: the blobs' own mode, and the copies'
_OPEN = 0o700  # a folder of ours while it is filled (the server alone)
_CHUNK = 1 << 20


class LinkError(OSError):
    """A dataset or model that cannot be put in the workload's folder; the message is the
    sentence its owner reads (the attempt fails as a launch error)."""


def place(folder: Path, group: str, name: str, tree: Path) -> Path:
    """The stored `tree` of a version at `folder/group/name`, for the workload to read: kept
    if a retry finds it already there and unchanged, else built. Returns that path."""
    for part in (group, name):
        _check_name(part)
    where = folder / group / name
    try:
        source = os.stat(tree)
    except FileNotFoundError:
        raise LinkError(f"cannot give {where}: the stored files ({tree}) are missing") from None
    if not stat.S_ISDIR(source.st_mode):
        raise LinkError(f"cannot give {where}: {tree} is not a folder")
    with _closing(_open_folder(folder)) as top, _closing(_group(top, folder / group)) as parent:
        if _kept(parent, name, where, tree):
            return where
        with _writable(parent):
            _sweep(parent)
            _build(parent, name, where, tree)
    return where


def _check_name(part: str) -> None:
    """One name of ours: neither a path nor a scratch name."""
    if not part or "/" in part or "\0" in part or part.startswith("."):
        raise LinkError(f"{part!r} cannot name a folder of datasets or models")


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _open_folder(folder: Path) -> int:
    try:
        return os.open(folder, _DIRECTORY)
    except OSError as error:
        raise LinkError(f"cannot open {folder}: {_what(error)}") from None


def _group(top: int, path: Path) -> int:
    """`datasets` or `models` in the workload's folder: made (the server's, sealed) if
    missing; refused if it is anything but a folder the server made."""
    name = path.name
    try:
        os.mkdir(name, SEALED, dir_fd=top)
    except FileExistsError:
        pass
    except OSError as error:
        raise LinkError(f"cannot make {path}: {error.strerror}") from None
    return _ours(top, name, path)


def _ours(parent: int, name: str, path: Path) -> int:
    """`name` in `parent`, opened without following a link, if it is a folder of the
    server's; LinkError naming `path` otherwise."""
    try:
        fd = os.open(name, _DIRECTORY, dir_fd=parent)
    except OSError as error:
        raise LinkError(f"cannot use {path}: {_found(parent, name, error)}") from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        os.close(fd)
        raise LinkError(
            f"cannot use {path}: it was not made by the server (owner uid {info.st_uid}); "
            "remove or rename it and run the workload again"
        )
    return fd


def _found(parent: int, name: str, error: OSError) -> str:
    """Why `name` could not be opened as a folder, in words."""
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        return _what(error)
    if stat.S_ISLNK(mode):
        return "it is a symbolic link, which is never followed"
    if not stat.S_ISDIR(mode):
        return "it is not a folder"
    return _what(error)


def _what(error: OSError) -> str:
    return error.strerror or str(error)


@contextlib.contextmanager
def _writable(fd: int) -> Iterator[None]:
    """A sealed folder of ours opened for the server alone while it changes (a server that is
    not root cannot write into 0555), sealed again after."""
    os.fchmod(fd, _OPEN)
    try:
        yield
    finally:
        os.fchmod(fd, SEALED)


def _kept(parent: int, name: str, where: Path, tree: Path) -> bool:
    """A retry's tree, kept when it still matches the store's; removed when it does not."""
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    with _closing(_ours(parent, name, where)) as fd:
        if _matches(tree, fd):
            return True
    with _writable(parent):
        _remove(parent, name)
    return False


def _matches(source: Path, fd: int) -> bool:
    """The folder `fd` holds what `source` holds: the same names, its folders sealed and the
    server's, its files the same inodes or (across filesystems) read-only copies of the
    same size, the server's: nobody else could have written them."""
    here = os.fstat(fd)
    if here.st_uid != os.geteuid() or stat.S_IMODE(here.st_mode) != SEALED:
        return False
    names = sorted(os.listdir(source))
    if names != sorted(os.listdir(fd)):
        return False
    for name in names:
        wanted = os.lstat(source / name)
        found = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(wanted.st_mode) and stat.S_ISDIR(found.st_mode):
            with _closing(os.open(name, _DIRECTORY, dir_fd=fd)) as sub:
                if not _matches(source / name, sub):
                    return False
        elif not (stat.S_ISREG(wanted.st_mode) and _same_file(wanted, found)):
            return False
    return True


def _same_file(wanted: os.stat_result, found: os.stat_result) -> bool:
    if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid():
        return False
    if stat.S_IMODE(found.st_mode) != READ_ONLY:
        return False
    same = (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino)
    return same or found.st_size == wanted.st_size


def _sweep(parent: int) -> None:
    """Scratch trees an interrupted build left (only the server writes in `parent`)."""
    for name in os.listdir(parent):
        if name.startswith("."):
            _remove(parent, name)


def _build(parent: int, name: str, where: Path, tree: Path) -> None:
    scratch = f".{name}.{secrets.token_hex(6)}"
    try:
        os.mkdir(scratch, _OPEN, dir_fd=parent)
        with _closing(os.open(scratch, _DIRECTORY, dir_fd=parent)) as fd:
            _fill(tree, fd, where)
            os.fchmod(fd, SEALED)
        os.rename(scratch, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            _remove(parent, scratch)
        if isinstance(error, OSError) and not isinstance(error, LinkError):
            raise LinkError(f"cannot give {where}: {_what(error)}") from error
        raise


def _fill(source: Path, fd: int, where: Path) -> None:
    """The folder `fd` (new, ours) given what `source` holds: folders made and sealed, files
    linked (or copied)."""
    with os.scandir(source) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                os.mkdir(entry.name, _OPEN, dir_fd=fd)
                with _closing(os.open(entry.name, _DIRECTORY, dir_fd=fd)) as sub:
                    _fill(Path(entry.path), sub, where / entry.name)
                    os.fchmod(sub, SEALED)
            elif entry.is_file(follow_symlinks=False):
                _link(Path(entry.path), entry.name, fd)
            else:
                raise LinkError(f"cannot give {where}: {entry.path} is neither file nor folder")


def _link(source: Path, name: str, fd: int) -> None:
    """A hard link to the stored file; a read-only copy where it is on another filesystem."""
    try:
        os.link(source, name, dst_dir_fd=fd, follow_symlinks=False)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        _copy(source, name, fd)


def _copy(source: Path, name: str, fd: int) -> None:
    with (
        open(os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as reading,
        open(os.open(name, _NEW_FILE, 0o600, dir_fd=fd), "wb") as writing,
    ):
        shutil.copyfileobj(reading, writing, _CHUNK)
        os.fchmod(writing.fileno(), READ_ONLY)


def _remove(parent: int, name: str) -> None:
    """`name` in `parent` and all it holds, never following a link: a link is removed
    itself, a folder emptied through its own descriptor first."""
    try:
        fd = os.open(name, _DIRECTORY, dir_fd=parent)
    except OSError as error:
        if error.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=parent)
        return
    with _closing(fd):
        os.fchmod(fd, _OPEN)
        for entry in os.listdir(fd):
            _remove(fd, entry)
    os.rmdir(name, dir_fd=parent)

"""Read-only bind mounts in a job's own mount namespace, made by the wrapper's child as root.

The job's process leaves the host's mount namespace (unshare CLONE_NEWNS) and makes every
mount in its copy private, so nothing it mounts propagates back: the host never sees the
job's mounts, and they vanish with the job's last process. Each source is then bound at its
target (one mount, not recursive: a submount of the source would stay writable) and the bind
is remounted read-only, nosuid and nodev.

Targets are walked one component at a time without following symbolic links, missing
directories made on the way (mode 0755), and the bind is made onto the opened target
(`/proc/self/fd/N`): a symbolic link anywhere in a target is refused, so nobody who can write
along a target's path (a job's account in its own folder) can steer a mount elsewhere on the
host, e.g. over /etc. Python 3.11 has no os.unshare and no os.mount: libc through ctypes.
"""

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a job has mounts: every wrapper would pay for it
    import ctypes

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_READ_ONLY = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class MountError(Exception):
    """A mount that cannot be made; the message is the sentence the job's owner reads."""


def apply(mounts: Iterable[Mapping[str, str]]) -> None:
    """Give this process a mount namespace of its own with `mounts` ({"source", "target"})
    bound read-only. Nothing happens without mounts. Raises MountError."""
    wanted = [(str(m["source"]), str(m["target"])) for m in mounts]
    if not wanted:
        return
    for source, target in wanted:
        _check(source, target)
    libc = _libc()
    _call(libc.unshare(CLONE_NEWNS), "cannot give the job a mount namespace of its own")
    _call(
        libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
        "cannot make the job's mounts private",
    )
    for source, target in wanted:
        try:
            _bind(libc, source, target)
        except OSError as error:  # what the checks of _bind do not put in words
            raise MountError(f"cannot mount {source} at {target}: {error.strerror}") from None


def _check(source: str, target: str) -> None:
    for role, path in (("source", source), ("target", target)):
        if not os.path.isabs(path):
            raise MountError(f"the mount {role} {path!r} is not an absolute path")
    if ".." in target.split("/"):
        raise MountError(f"the mount target {target!r} must not contain '..'")
    if not [part for part in target.split("/") if part]:
        raise MountError("a mount cannot cover the root directory /")


def _libc() -> "ctypes.CDLL":
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    )
    libc.unshare.argtypes = (ctypes.c_int,)
    return libc


def _call(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        number = ctypes.get_errno()
        raise MountError(f"{what}: {os.strerror(number)}")


def _bind(libc: "ctypes.CDLL", source: str, target: str) -> None:
    cannot = f"cannot mount {source} at {target}"
    name = [part for part in target.split("/") if part][-1]
    with contextlib.ExitStack() as opened:
        source_fd = opened.enter_context(_closing(_open_source(source)))
        directory = stat.S_ISDIR(os.fstat(source_fd).st_mode)
        parent = opened.enter_context(_closing(_open_parent(target)))
        target_fd = opened.enter_context(
            _closing(_open_target(parent, name, target, directory=directory, create=True))
        )
        _call(libc.mount(_fd_path(source_fd), _fd_path(target_fd), None, MS_BIND, None), cannot)
        # Opened again by name from its parent, the target is now the bind's root.
        bound = opened.enter_context(
            _closing(_open_target(parent, name, target, directory=directory, create=False))
        )
        _call(libc.mount(None, _fd_path(bound), None, _READ_ONLY, None), cannot)
        if not os.fstatvfs(bound).f_flag & os.ST_RDONLY:
            raise MountError(f"{cannot}: it could not be made read-only")


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _open_source(source: str) -> int:
    """The source, opened as a path (links followed: the administrator chose it)."""
    try:
        fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MountError(f"the mount source {source} does not exist") from None
    except OSError as error:
        raise MountError(f"cannot open the mount source {source}: {error.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        os.close(fd)
        raise MountError(f"the mount source {source} is neither a directory nor a file")
    return fd


def _open_parent(target: str) -> int:
    """The directory that holds the target, walked from / one name at a time."""
    parent = os.open("/", _PATH | os.O_DIRECTORY)
    for name in [part for part in target.split("/") if part][:-1]:
        try:
            child = _open_target(parent, name, target, directory=True, create=True)
        finally:
            os.close(parent)
        parent = child
    return parent


def _open_target(parent: int, name: str, target: str, *, directory: bool, create: bool) -> int:
    """`name` in the directory `parent`, made if missing, never through a symbolic link."""
    try:
        try:
            fd = os.open(name, _PATH, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            _make(parent, name, target, directory=directory)
            fd = os.open(name, _PATH, dir_fd=parent)
    except OSError as error:
        raise MountError(f"cannot open the mount target {target}: {error.strerror}") from None
    mode = os.fstat(fd).st_mode
    problem = ""
    if stat.S_ISLNK(mode):
        problem = f"the mount target {target} goes through a symbolic link ({name})"
    elif directory and not stat.S_ISDIR(mode):
        problem = f"the mount target {target} is not a directory ({name})"
    elif not directory and not stat.S_ISREG(mode):
        problem = f"the mount target {target} is not a file, as its source is"
    if problem:
        os.close(fd)
        raise MountError(problem)
    return fd


def _make(parent: int, name: str, target: str, *, directory: bool) -> None:
    """Make a missing `name`: a directory (0755), or an empty file (0644) to bind a file on."""
    umask = os.umask(0o022)
    try:
        if directory:
            os.mkdir(name, 0o755, dir_fd=parent)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(name, flags, 0o644, dir_fd=parent))
    except FileExistsError:
        pass
    except OSError as error:
        raise MountError(f"cannot make the mount target {target}: {error.strerror}") from None
    finally:
        os.umask(umask)


def _fd_path(fd: int) -> bytes:
    return f"/proc/self/fd/{fd}".encode()

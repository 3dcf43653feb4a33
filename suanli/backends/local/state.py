"""The files a job's state directory holds, and the process facts both sides read.

The backend (in the server) and the wrapper (one process per job, in its own session) talk
only through these files and signals, so a server started later understands a wrapper started
by an earlier one:

    job.json       the launch plan, written by the backend before the wrapper starts
    handle.json    the handle, written by the backend once the wrapper runs
    ready          the wrapper handles SIGTERM from now on (see `LocalBackend.stop`)
    process.json   the job's process group and start time, and its cgroups (wrapper)
    warnings.json  limits that could not be applied, in plain words (wrapper)
    stop.json      why and how to stop: reason, detail, grace (backend, before SIGTERM)
    status.json    how the job ended (wrapper, last, atomically); its presence means "ended"
    wrapper.log    the wrapper's own errors, for an administrator

Every file is written whole to a temporary name and renamed, so a reader never sees half of
one, even across a crash.
"""

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

JOB = "job.json"
HANDLE = "handle.json"
READY = "ready"
PROCESS = "process.json"
WARNINGS = "warnings.json"
STOP = "stop.json"
STATUS = "status.json"
WRAPPER_LOG = "wrapper.log"


def write_json(path: Path, data: Any) -> None:
    """Atomically: a reader sees the old file, no file, or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(data, file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def open_log(path: str | Path) -> int:
    """The job's log, opened for appending (created if missing). It lies in the workload's
    own folder, whose user may have put a link to the platform's files or a pipe there:
    neither is followed or waited on (OSError instead)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, 0o640)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def proc_stat(pid: int, proc: Path = Path("/proc")) -> list[str] | None:
    """Fields of /proc/<pid>/stat, 1-based as in proc(5) (index 0 is a placeholder), or None
    when there is no such process."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses.
    head, _, tail = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    return ["", pid_text, comm, *tail.split()]


def start_time(pid: int, proc: Path = Path("/proc")) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot.
    With the pid it names one process for the life of the machine (pids are reused)."""
    fields = proc_stat(pid, proc)
    if fields is None or len(fields) <= 22:
        return None
    return int(fields[22])


def is_running(pid: int, started: int | None, proc: Path = Path("/proc")) -> bool:
    """Whether the process `pid` that started at `started` still runs (a zombie does not)."""
    if pid <= 0:
        return False
    fields = proc_stat(pid, proc)
    if fields is None or len(fields) <= 22:
        return False
    if fields[3] in ("Z", "X"):
        return False
    return started is None or int(fields[22]) == started

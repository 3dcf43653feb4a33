"""Shells for the web terminal and the SSH server: the user's login shell on a pseudo-terminal
(interactive) or on pipes (commands, as `ssh host cmd` runs them), in the environment's
working directory, with the environment's variables (GPUs, limits and user are inherited:
the agent already runs inside them).
"""

import asyncio
import contextlib
import fcntl
import os
import pwd
import signal
import struct
import termios
from collections.abc import Mapping


def login_shell() -> str:
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    return shell if shell and os.path.exists(shell) else "/bin/bash"


def shell_argv(command: str | None) -> list[str]:
    """A login shell, or the shell running one command line (the SSH way: the client sends a
    string, and the user's own shell parses it, as sshd does)."""
    shell = login_shell()
    return [shell, "-l"] if command is None else [shell, "-c", command]


def set_size(fd: int, rows: int, cols: int) -> None:
    rows, cols = max(1, min(rows, 1000)), max(1, min(cols, 1000))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child, after setsid: make the pseudo-terminal its controlling terminal, so that
    job control and Ctrl-C work."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def spawn_on_pty(
    argv: list[str], workdir: str, env: Mapping[str, str], rows: int, cols: int
) -> tuple[asyncio.subprocess.Process, int]:
    """The process and the master side of its terminal (the caller closes it)."""
    master, slave = os.openpty()
    set_size(master, rows, cols)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=workdir,
            env=dict(env),
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return process, master


async def spawn_on_pipes(
    argv: list[str], workdir: str, env: Mapping[str, str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=workdir,
        env=dict(env),
        start_new_session=True,
    )


class Pty:
    """The master side of a pseudo-terminal, read without blocking the event loop."""

    def __init__(self, master: int) -> None:
        self.master = master
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every process holding the terminal has ended
            data = b""
        if not data:
            self._loop.remove_reader(self.master)
        self._chunks.put_nowait(data)

    async def read(self) -> bytes:
        """The next output; b"" once the terminal is closed."""
        return await self._chunks.get()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                continue
            except OSError:
                return

    def resize(self, rows: int, cols: int) -> None:
        set_size(self.master, rows, cols)

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        os.close(self.master)


def hang_up(process: asyncio.subprocess.Process) -> None:
    """The other side went away: SIGHUP to the shell's process group, as a terminal does."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGHUP)

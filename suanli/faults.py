"""Fault injection for the crash tests: the server kills itself at a chosen step.

`SUANLI_FAULT_KILL_AT="launch.launched_one:3"` makes the process SIGKILL itself the third time
it passes `faults.point("launch.launched_one")`. A variable of the server's own environment,
read once; unset (always, outside tests) a point costs one dictionary lookup. The tests use it
to prove that a server killed at any step of a launch restarts into a consistent state
(tests/hardening/test_crash_launch.py).
"""

import os
import signal

VARIABLE = "SUANLI_FAULT_KILL_AT"


def _target() -> tuple[str, int] | None:
    name, _, count = os.environ.get(VARIABLE, "").partition(":")
    return (name, int(count or 1)) if name else None


_TARGET = _target()
_passed: dict[str, int] = {}


def point(name: str) -> None:
    if _TARGET is None or _TARGET[0] != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] >= _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)

"""Waiting in tests for what the server does in the background."""

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 20, what: str = "") -> object:
    """The predicate's first true value, asked every 0.1 s; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}")

"""Waiting in tests for what the server does in the background."""

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], object], timeout: float = 20, what: str = "") -> object:
    """The predicate's first true value, asked every 0.1 s; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def attempt(action: Callable[[], Any], errors: tuple[type[Exception], ...]) -> Any:
    """The action's result, or None while it fails with one of `errors` (not ready yet):
    for wait_for over something that refuses until it is up."""
    try:
        return action()
    except errors:
        return None

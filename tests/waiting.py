"""Waiting in tests for what the server does in the background, and running a coroutine."""

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
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


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run in a thread of its own: once the console tests' Playwright (sync API) has
    started, an event loop runs in the main thread for the rest of the session."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()

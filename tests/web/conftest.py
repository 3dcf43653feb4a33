"""Fixtures of the console tests: one Chromium for the session, a fresh browser context (no
cookies) per test, and an administrator's API client on the module's server."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browsing import ADMIN_PASSWORD, CHROMIUM, CHROMIUM_ARGS, new_context
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright

from suanli.client import Client

if TYPE_CHECKING:  # the root conftest's; not importable by name from here
    from tests.conftest import RunningServer

# Pages refresh what moves every few seconds; give assertions on them time to see it.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def admin_api(console: "RunningServer") -> Iterator[Client]:
    client = console.client()
    client.login("admin", ADMIN_PASSWORD)
    yield client
    client.close()


@pytest.fixture
def context(browser: Browser, console: "RunningServer") -> Iterator[BrowserContext]:
    ctx = new_context(browser, console)
    yield ctx
    ctx.close()

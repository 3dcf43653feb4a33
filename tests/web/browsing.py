"""Fixtures and helpers of the console tests: a real Chromium (Debian's /usr/bin/chromium)
driven by Playwright, against a real server with simulated GPUs.

Nothing downloads a browser: `scripts/test` installs Debian's chromium (and a CJK font, so
that Chinese pages render as text in the screenshots). Screenshots of the main pages are
written to `test-artifacts/screenshots/` (or $SUANLI_ARTIFACTS) for people to look at.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from suanli.client import Client

if TYPE_CHECKING:
    from conftest import RunningServer

ADMIN_PASSWORD = "admin-test-password"  # as tests/conftest.py starts its servers

CHROMIUM = os.environ.get("SUANLI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(os.environ.get("SUANLI_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"


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


def new_context(
    browser: Browser, console: "RunningServer", locale: str = "en-US"
) -> BrowserContext:
    context = browser.new_context(
        base_url=console.url, locale=locale, viewport={"width": 1440, "height": 900}
    )
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def context(browser: Browser, console: "RunningServer") -> Iterator[BrowserContext]:
    ctx = new_context(browser, console)
    yield ctx
    ctx.close()


def log_in(page: Page, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: not url.endswith("/login") and "/login?" not in url)


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

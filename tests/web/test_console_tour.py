"""A tour of the main pages with a busy cluster, in English and Chinese: each page is checked
for its main content and saved as a screenshot (test-artifacts/screenshots/) to look at."""

import secrets
from collections.abc import Iterator

import pytest
from browsing import ADMIN_PASSWORD, log_in, new_context, screenshot
from playwright.sync_api import Browser, expect

from suanli.client import Client

# Small enough that this 2-core machine's node takes all of them at once.
SMALL = {"cpus": 0.25, "memory": "1Gi"}


@pytest.fixture(scope="module")
def busy(console, admin_api: Client) -> Iterator[dict[str, str]]:
    """Two projects at work: whole GPUs, two fractions of a shared GPU, a job that waits."""
    suffix = secrets.token_hex(2)
    vision, nlp, lin = f"vision-{suffix}", f"nlp-{suffix}", f"lin-{suffix}"
    admin_api.users.create(lin, "lin-password", display_name="林晓")
    for project, display in ((vision, "视觉组"), (nlp, "NLP team")):
        admin_api.projects.create(project, display_name=display)
        admin_api.projects.add_member(project, lin, "member")
    admin_api.projects.set_quota(vision, guaranteed_gpus=1, max_gpus=2, memory_bytes=256 * 2**30)
    gpus = admin_api.nodes.list()[0].gpus
    admin_api.nodes.update_gpu(gpus[3].uuid, shared=True)
    api = Client(console.url)
    api.login(lin, "lin-password")
    sleep = ["sleep", "600"]
    jobs = [
        api.jobs.submit(
            {
                "project": vision,
                "name": "resnet50-baseline",
                "command": sleep,
                "resources": {"gpus": 2, **SMALL},
            }
        ),
        api.jobs.submit(
            {
                "project": vision,
                "name": "vit-large-sweep",
                "command": sleep,
                "resources": {"gpus": 1, **SMALL},
            }
        ),
        api.jobs.submit(
            {
                "project": nlp,
                "name": "bert-finetune",
                "command": sleep,
                "resources": {"gpus": 1, **SMALL},
                "priority": "high",
            }
        ),
        api.jobs.submit(
            {
                "project": nlp,
                "name": "notebook-infer",
                "command": sleep,
                "resources": {"gpu_memory": "20Gi", "gpu_compute_percent": 30, **SMALL},
            }
        ),
        api.jobs.submit(
            {
                "project": nlp,
                "name": "tokenizer-eval",
                "command": sleep,
                "resources": {"gpu_memory": "10Gi", "gpu_compute_percent": 20, **SMALL},
            }
        ),
    ]
    yield {
        "vision": vision,
        "nlp": nlp,
        "lin": lin,
        "job": str(jobs[0].id),
        "waiting": str(jobs[1].id),
    }
    for job in jobs:
        api.jobs.cancel(job.id)
    api.close()
    admin_api.nodes.update_gpu(gpus[3].uuid, shared=False)


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_tour_of_the_main_pages(
    browser: Browser, console, busy: dict[str, str], language: str
) -> None:
    context = new_context(browser, console, locale="zh-CN" if language == "zh-CN" else "en-US")
    page = context.new_page()
    log_in(page, "admin", ADMIN_PASSWORD)
    expect(page.locator("html")).to_have_attribute("lang", language)
    expect(page.locator("[data-test=gpus-in-use]")).to_have_text("4")
    page.goto("/")  # the admin's overview lists every project's quota and queue
    expect(page.locator("#overview")).to_contain_text(busy["vision"])
    screenshot(page, f"overview-{language}")
    page.goto("/jobs")
    expect(page.locator("[data-state=pending]").first).to_be_visible()
    screenshot(page, f"jobs-{language}")
    page.goto(f"/jobs/{busy['waiting']}")
    expect(page.locator("[data-test=pending-reason]")).to_be_visible()
    screenshot(page, f"job-pending-{language}")
    page.goto(f"/jobs/{busy['job']}")
    expect(page.locator("[data-test=placement]")).to_contain_text("GPU-")
    screenshot(page, f"job-running-{language}")
    page.goto(f"/jobs/new?project={busy['vision']}")
    screenshot(page, f"submit-{language}")
    page.goto("/nodes")
    expect(page.locator(".gpu.shared_in_use")).to_have_count(1)
    screenshot(page, f"nodes-{language}")
    page.goto("/projects")
    screenshot(page, f"projects-{language}")
    page.goto(f"/projects/{busy['vision']}")
    screenshot(page, f"project-{language}")
    page.goto("/admin/users")
    screenshot(page, f"users-{language}")
    page.goto("/admin/audit")
    screenshot(page, f"audit-{language}")
    page.goto("/account")
    screenshot(page, f"account-{language}")
    context.close()
    # The user whose jobs these are sees them on the overview, with project and user.
    lin = new_context(browser, console, locale="zh-CN" if language == "zh-CN" else "en-US")
    page = lin.new_page()
    log_in(page, busy["lin"], "lin-password")
    mine = page.locator("#overview table.jobs")
    expect(mine).to_contain_text(busy["vision"])
    expect(mine).to_contain_text(busy["lin"])
    expect(mine).not_to_contain_text("object at")
    lin.close()

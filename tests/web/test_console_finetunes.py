"""Fine-tuning in the console, in a real Chromium against a real server with the real
LLaMA-Factory registered (tests/finetune/helpers.py): a LoRA run created through the form,
its memory estimated first, followed live on its page until it succeeds (the loss chart fills
in), the model it registered shown with a link that deploys it; a bad value explained at its
field without creating a run; the pages in Chinese; a stranger to the project sees nothing."""

import functools
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from browsing import log_in, new_context, screenshot
from playwright.sync_api import Browser as Chromium
from playwright.sync_api import BrowserContext, Page, expect
from test_console_http import Browser

from suanli.client import Client
from tests.finetune.helpers import (
    ALPACA,
    finetune_server,
    model_dir,
    push_dataset,
    push_model,
)

# The QUICK settings of tests/finetune/helpers.py, as a person types them into the form.
QUICK_FIELDS = {
    "training.epochs": "1",
    "training.batch_size": "2",
    "training.gradient_accumulation": "1",
    "training.cutoff_len": "64",
    "training.logging_steps": "1",
    "training.save_steps": "5",
    "training.learning_rate": "0.001",
    "training.warmup_ratio": "0",
    "lora.rank": "4",
    "resources.gpus": "0",
    "resources.cpus": "1",
    "resources.memory": "3Gi",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., Any]
) -> Iterator[Any]:
    """This module's server: the trainer registered, its watch loop quick."""
    base = tmp_path_factory.mktemp("finetunes")
    running = finetune_server(functools.partial(launch_server, base))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def people(
    console: Any, admin_api: Client, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """alice owns `mine` with the tiny model and an alpaca dataset; bob owns `theirs` and is
    a stranger to `mine`."""
    alice, bob = unique("alice"), unique("bob")
    mine, theirs = unique("mine"), unique("theirs")
    for name in (alice, bob):
        admin_api.users.create(name, f"{name}-password")
    admin_api.projects.create(mine, owner=alice)
    admin_api.projects.create(theirs, owner=bob)
    base = tmp_path_factory.mktemp("finetune-data")
    push_model(admin_api, mine, "tiny", model_dir(base))
    push_dataset(admin_api, mine, "chat", ALPACA, base)
    api = Client(console.url)
    api.login(alice, f"{alice}-password")
    token = api.token
    api.close()
    return {"alice": alice, "bob": bob, "mine": mine, "theirs": theirs, "token": token}


def alice_api(console: Any, people: dict[str, Any]) -> httpx.Client:
    return httpx.Client(
        base_url=f"{console.url}/api/v1/",
        headers={"authorization": f"Bearer {people['token']}"},
        timeout=60,
    )


def runs_of(console: Any, people: dict[str, Any]) -> list[int]:
    """The ids of the runs of alice's project, as her list page shows them."""
    alice = Browser(console.url)
    alice.log_in(people["alice"], f"{people['alice']}-password")
    page = alice.page(f"/finetunes?project={people['mine']}")
    alice.http.close()
    return [int(found) for found in re.findall(r'data-run="(\d+)"', page)]


def a_run(console: Any, people: dict[str, Any]) -> int:
    """A run of alice's: the one the form made, or (run alone) one made through the API."""
    found = runs_of(console, people)
    if found:
        return found[0]
    body = {
        "project": people["mine"],
        "model": "tiny",
        "datasets": ["chat"],
        "template": "qwen",
        "training": {"epochs": 1.0, "cutoff_len": 64, "compute_type": "fp32"},
        "resources": {"cpus": 1.0, "memory": "3Gi"},
    }
    with alice_api(console, people) as http:
        answer = http.post("finetunes", json=body)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def signed_in(context: BrowserContext, user: str) -> Page:
    page = context.new_page()
    log_in(page, user, f"{user}-password")
    return page


def fill_form(page: Page, people: dict[str, Any], fields: dict[str, str]) -> None:
    """The tiny model, the alpaca dataset, the qwen template, fp32 and `fields`."""
    mine = people["mine"]
    page.goto(f"/finetunes/new?project={mine}")
    page.select_option("select[name=model]", f"{mine}/tiny@1")
    page.check(f"input[name=datasets][value='{mine}/chat@1']")
    page.select_option("select[name=template]", "qwen")
    page.select_option("select[name='training.compute_type']", "fp32")
    for name, value in fields.items():
        page.fill(f"input[name='{name}']", value)


def test_bad_values_are_explained_at_their_fields_and_create_nothing(
    console: Any, context: BrowserContext, people: dict[str, Any]
) -> None:
    before = len(runs_of(console, people))
    page = signed_in(context, people["alice"])
    fill_form(page, people, {**QUICK_FIELDS, "training.learning_rate": "5"})
    # The check beside the form already says so as you type.
    expect(page.locator("[data-test=check-errors]")).to_contain_text("training.learning_rate")
    page.click("[data-test=create-finetune]")
    expect(page.locator("#err-training-learning_rate")).to_have_text("Must be at most 1.0.")
    expect(page.locator("input[name='training.learning_rate']")).to_have_value("5")
    expect(page.locator("input[name='training.learning_rate']")).to_have_attribute(
        "aria-invalid", "true"
    )
    # What was typed and ticked is kept.
    expect(page.locator(f"input[name=datasets][value='{people['mine']}/chat@1']")).to_be_checked()
    expect(page.locator("input[name='training.cutoff_len']")).to_have_value("64")
    # Memory the run would not have: the estimate says so, and so does the refusal to create.
    page.fill("input[name='training.learning_rate']", "0.001")
    page.fill("input[name='resources.memory']", "256Mi")
    page.click("[data-test=estimate-memory]")
    expect(page.locator("[data-test=estimate]")).to_have_attribute("data-fits", "no")
    expect(page.locator("[data-test=estimate-warning]")).to_contain_text("run out of memory")
    page.click("[data-test=create-finetune]")
    expect(page.locator("#err-resources-memory")).to_contain_text("GiB per device")
    expect(page.locator("input[name='resources.memory']")).to_have_value("256Mi")
    # The YAML tab starts from what the fields say, and is refused the same way.
    page.fill("input[name='training.learning_rate']", "5")
    expect(page.locator("[data-test=yaml-preview]")).to_contain_text("learning_rate: 5")
    page.click("input[name=mode][value=yaml] + span")
    editor = page.locator("[data-test=yaml-editor]")
    expect(editor).to_have_value(re.compile(r"learning_rate: 5\n"))
    page.click("[data-test=create-finetune]")
    expect(page.locator("[data-test=yaml-errors]")).to_contain_text("training.learning_rate")
    expect(page.locator("[data-test=yaml-errors]")).to_contain_text("Must be at most 1.0.")
    assert len(runs_of(console, people)) == before


def test_a_lora_run_from_the_form_followed_live_until_its_model_is_registered(
    console: Any, context: BrowserContext, people: dict[str, Any]
) -> None:
    mine = people["mine"]
    page = signed_in(context, people["alice"])
    fill_form(page, people, QUICK_FIELDS)
    # The YAML beside the form follows the fields.
    preview = page.locator("[data-test=yaml-preview]")
    expect(preview).to_contain_text("cutoff_len: 64")
    expect(preview).to_contain_text(f"model: {mine}/tiny@1")
    expect(preview).to_contain_text("compute_type: fp32")
    # Identity's fields show only while its dataset is ticked.
    identity = page.locator("[data-identity]")
    expect(identity).to_be_hidden()
    page.check("input[name=builtin_datasets][value=identity]")
    expect(identity).to_be_visible()
    page.uncheck("input[name=builtin_datasets][value=identity]")
    expect(identity).to_be_hidden()
    # The memory estimate, before anything is created: on CPUs, against the memory asked for.
    page.click("[data-test=estimate-memory]")
    estimate = page.locator("[data-test=estimate]")
    expect(estimate).to_have_attribute("data-fits", "yes")
    expect(estimate.locator("[data-test=estimate-total]")).to_contain_text("per device")
    expect(estimate.locator("[data-test=estimate-parts]")).to_contain_text("optimiser states")
    screenshot(page, "finetune-new")
    page.click("[data-test=create-finetune]")
    page.wait_for_url(re.compile(r"/finetunes/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#flash")).to_contain_text("Fine-tuning run created")
    expect(page.locator("[data-test=stop-finetune]")).to_be_visible()  # while it moves
    status = page.locator("#finetune-status")
    expect(status).to_have_attribute("data-state", "succeeded", timeout=240_000)
    # The charts filled in from the metrics while it ran (a point every step).
    loss = page.locator("[data-test=chart-loss]")
    expect(loss).to_have_attribute("data-state", "drawn")
    assert int(loss.get_attribute("data-points") or 0) > 0
    expect(page.locator("[data-test=chart-lr]")).to_have_attribute("data-state", "drawn")
    expect(page.locator("[data-test=progress-text]")).to_contain_text("step")
    # The result registered as a model version, and a link to deploy it.
    output = page.locator("[data-test=output-card] [data-test=output]")
    expect(output).to_have_text(re.compile(rf"^{mine}/.+@1$"), timeout=60_000)
    ref = output.inner_text().strip()
    deploy = page.locator("[data-test=deploy-output]")
    href = deploy.get_attribute("href") or ""
    link = urlsplit(href)
    assert link.path == "/services/new", href
    assert parse_qs(link.query) == {"project": [mine], "model": [ref]}, href
    expect(page.locator("[data-test=training-yaml]")).to_contain_text("finetuning_type: lora")
    expect(page.locator("[data-test=log]")).not_to_have_text("")
    expect(page.locator("[data-test=final-metrics]")).to_contain_text("train_loss")
    expect(page.locator("[data-test=timeline] [data-state=succeeded]")).to_have_count(1)
    expect(page.locator("[data-test=stop-finetune]")).to_have_count(0)
    # The same prompts, the base and the tuned model side by side.
    page.fill("textarea[name=prompts]", "say jobs\nsay 模型")
    page.click("[data-test=start-compare]")
    expect(page.locator("#flash")).to_contain_text("Comparison started")
    answers = page.locator("[data-test=compare-answers] tbody tr")
    expect(answers).to_have_count(2, timeout=180_000)
    expect(answers.first.locator("td").first).to_have_text("say jobs")
    screenshot(page, "finetune")
    # The list shows it with its output model.
    page.goto(f"/finetunes?project={mine}")
    row = page.locator(f"tr[data-run='{run_id}']")
    expect(row.locator("[data-state]")).to_have_attribute("data-state", "succeeded")
    expect(row.locator("[data-test=output]")).to_have_text(ref)
    page.goto(href)
    expect(page.locator("h1")).to_contain_text("Deploy a service")
    expect(page.locator("input[name=model]")).to_have_value(ref)


def test_the_pages_in_chinese(browser: Chromium, console: Any, people: dict[str, Any]) -> None:
    run_id = a_run(console, people)
    context = new_context(browser, console, locale="zh-CN")
    try:
        page = signed_in(context, people["alice"])
        page.goto(f"/finetunes?project={people['mine']}")
        expect(page.locator("h1")).to_have_text("模型微调")
        page.goto(f"/finetunes/new?project={people['mine']}")
        expect(page.locator("h1")).to_contain_text("新建微调任务")
        label = page.locator("label.field:has(input[name='training.learning_rate']) .label")
        expect(label).to_have_text("学习率")
        expect(page.locator("[data-test=estimate-memory]")).to_have_text("估算显存")
        page.goto(f"/finetunes/{run_id}")
        expect(page.locator("[data-test=chart-loss] figcaption")).to_have_text("损失与验证损失")
        expect(page.locator("[data-test=output-card] h2")).to_have_text("产出模型")
        screenshot(page, "finetune-zh-CN")
    finally:
        context.close()


def test_a_stranger_gets_404_everywhere(console: Any, people: dict[str, Any]) -> None:
    run_id = a_run(console, people)
    bob = Browser(console.url)
    bob.log_in(people["bob"], f"{people['bob']}-password")
    assert f'data-run="{run_id}"' not in bob.page("/finetunes")
    bob.page(f"/finetunes/{run_id}", status=404)
    assert bob.http.get(f"/finetunes/{run_id}/metrics").status_code == 404
    assert bob.http.get(f"/finetunes/{run_id}/log.txt").status_code == 404
    assert bob.http.get(f"/finetunes/{run_id}/log").status_code == 404
    assert bob.post(f"/finetunes/{run_id}/stop").status_code == 404
    assert bob.post(f"/finetunes/{run_id}/resume").status_code == 404
    assert bob.post(f"/finetunes/{run_id}/compare", {"prompts": "hi"}).status_code == 404
    # Nor may he train on alice's model from his own project.
    form = {"mode": "form", "project": people["theirs"], "model": f"{people['mine']}/tiny@1"}
    answer = bob.post("/finetunes/new", {**form, "builtin_datasets": "alpaca_en_demo"})
    assert answer.status_code in (404, 422), answer.text[:300]
    bob.http.close()

"""Model services in the console, in a real Chromium against a real server whose engines
include the fake OpenAI-shaped one (tests/serving/upstream.py): deploy from the form and see
the service become ready, its endpoint and replicas; bad input explained on its field in the
reader's language; an API key shown once, then revoked (and refused by the gateway); the
playground streaming an answer through the gateway with its token counts, two services
compared, a prompt template with a variable saved and used; a stranger to the project sees
none of it."""

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsing import accept_dialogs, log_in, new_context, screenshot
from playwright.sync_api import Browser as Chromium
from playwright.sync_api import BrowserContext, Page, expect
from test_console_http import Browser

from suanli.client import Client
from tests.serving.helpers import FAKE_ENGINE

ENGINES = {"fake": FAKE_ENGINE}


# A replica's share of a test machine of a few CPUs.
SMALL = {"cpus": 0.25, "memory": "512Mi"}


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def console(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    launch_server: Callable[..., Any],
) -> Iterator[Any]:
    """This module's server: simulated GPUs and the fake engine registered."""
    root = request.config.pluginmanager.get_plugin(str(Path(__file__).parents[1] / "conftest.py"))
    base = tmp_path_factory.mktemp("services")
    env = {
        "SUANLI_SIMULATED_GPUS": root.SIMULATED_A100S,
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
        "SUANLI_ENGINES": json.dumps(ENGINES),
    }
    running = launch_server(base, env)
    yield running
    running.stop()


def _deploy(console: Any, token: str, spec: dict[str, Any]) -> int:
    answer = httpx.post(
        f"{console.url}/api/v1/services",
        json={**spec, "resources": SMALL},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def _wait_ready(console: Any, token: str, service_id: int) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        found = httpx.get(
            f"{console.url}/api/v1/services/{service_id}",
            headers={"authorization": f"Bearer {token}"},
        ).json()
        if found["ready"]:
            return
        time.sleep(0.3)
    raise AssertionError(f"service {service_id} not ready: {found}")


@pytest.fixture(scope="module")
def people(console: Any, admin_api: Client) -> dict[str, Any]:
    """alice owns `mine` with two services (`chat` streams a token every 150 ms, `echo` at
    once); bob owns `theirs` and is a stranger to `mine`."""
    alice, bob = unique("alice"), unique("bob")
    mine, theirs = unique("mine"), unique("theirs")
    for name in (alice, bob):
        admin_api.users.create(name, f"{name}-password")
    admin_api.projects.create(mine, owner=alice)
    admin_api.projects.create(theirs, owner=bob)
    api = Client(console.url)
    api.login(alice, f"{alice}-password")
    assert api.token
    chat = _deploy(
        console,
        api.token,
        {"project": mine, "name": "chat", "engine": "fake", "args": ["--delay-ms", "150"]},
    )
    echo = _deploy(console, api.token, {"project": mine, "name": "echo", "engine": "fake"})
    for service_id in (chat, echo):
        _wait_ready(console, api.token, service_id)
    people = {
        "alice": alice,
        "bob": bob,
        "mine": mine,
        "theirs": theirs,
        "chat": chat,
        "token": api.token,
    }
    api.close()
    return people


def signed_in(context: BrowserContext, user: str) -> Page:
    page = context.new_page()
    log_in(page, user, f"{user}-password")
    return page


def test_deploy_from_the_form_and_watch_it_become_ready(
    context: BrowserContext, people: dict[str, Any]
) -> None:
    page = signed_in(context, people["alice"])
    page.goto(f"/services/new?project={people['mine']}")
    page.fill("input[name=name]", "formed")
    # The YAML beside the form follows what is typed.
    preview = page.locator("[data-test=yaml-preview]")
    expect(preview).to_contain_text("name: formed")
    expect(preview).to_contain_text("engine: fake")
    page.click("input[name=gpu_kind][value=none] + span")
    page.fill("input[name=replicas]", "1")
    page.fill("input[name='resources.cpus']", "0.25")  # the machine's few CPUs are shared
    page.fill("input[name='resources.memory']", "512Mi")
    page.fill("input[name=args]", "--tokens 4")
    page.click("[data-test=deploy-service]")
    page.wait_for_url(re.compile(r"/services/\d+$"))
    expect(page.locator("#flash")).to_contain_text("Service deployed")
    status = page.locator("#service-status")
    expect(status).to_have_attribute("data-health", "ready", timeout=40_000)
    expect(status.locator("[data-ready=yes]")).to_have_count(1)
    expect(page.locator("[data-test=base-url]")).to_have_text(re.compile(r"^http://.+/v1$"))
    expect(page.locator("[data-test=model-name]")).to_have_text(f"{people['mine']}/formed")
    expect(page.locator("[data-test=snippet-python]")).to_contain_text(
        f'model="{people["mine"]}/formed"'
    )
    expect(page.locator("[data-test=snippet-curl]")).to_contain_text("/v1/chat/completions")
    screenshot(page, "service")
    # Its usage downloads as CSV with the session (the API's CSV wants a bearer token).
    csv = page.request.get(page.url + "/usage.csv")
    assert csv.ok and csv.text().startswith("period,model,user,key,requests"), csv.text()
    assert page.request.get(page.url.rsplit("/", 1)[0] + "/999999/usage.csv").status == 404
    # The replica's page follows its log (the engine's own output) live.
    page.locator("[data-test=replica-log]").first.click()
    page.wait_for_url(re.compile(r"/services/\d+/replicas/\d+$"))
    expect(page.locator("h1")).to_contain_text("Replica #")
    expect(page.locator("[data-test=log][data-started]")).to_have_count(1)
    expect(page.locator("#log-status")).to_have_text("following live")
    # The list shows it ready, 1 of 1, with its engine.
    page.goto(f"/services?project={people['mine']}")
    row = page.locator("tr[data-name=formed]")
    expect(row.locator("[data-health]")).to_have_attribute("data-health", "ready")
    expect(row.locator("[data-test=ready]")).to_have_text("1/1")
    expect(row).to_contain_text("fake")


def test_bad_input_is_explained_on_its_field(
    context: BrowserContext, people: dict[str, Any]
) -> None:
    page = signed_in(context, people["alice"])
    page.goto(f"/services/new?project={people['mine']}")
    page.fill("input[name=name]", "bad")
    page.fill("input[name=replicas]", "5..2")
    page.click("[data-test=deploy-service]")
    expect(page.locator("#err-replicas")).to_have_text(
        "the maximum must be at least the minimum, and at least 1"
    )
    expect(page.locator("input[name=replicas]")).to_have_value("5..2")
    # The YAML way: an engine no one registered.
    page.click("input[name=mode][value=yaml] + span")
    page.fill("textarea[name=yaml]", f"project: {people['mine']}\nname: bad\nengine: nope\n")
    page.click("[data-test=deploy-service]")
    expect(page.locator("[data-test=yaml-errors]")).to_contain_text(
        "No engine named nope is registered here (engines: fake)."
    )


def test_bad_input_in_chinese_is_a_422_not_a_500(console: Any, people: dict[str, Any]) -> None:
    browser = Browser(console.url, "zh-CN")
    browser.log_in(people["alice"], f"{people['alice']}-password")
    browser.page("/services/new")
    form = {"mode": "form", "project": people["mine"], "name": "x", "engine": "fake"}
    answer = browser.post("/services/new", {**form, "replicas": "5..2"})
    assert answer.status_code == 422
    assert 'id="err-replicas">最大值不能小于最小值，且至少为 1<' in answer.text
    answer = browser.post("/services/new", {**form, "replicas": "1", "engine": "nope"})
    assert answer.status_code == 422
    assert 'id="err-engine">这里没有注册名为 nope 的引擎' in answer.text
    browser.http.close()


def test_a_key_is_shown_once_then_revoked(
    console: Any, context: BrowserContext, people: dict[str, Any]
) -> None:
    page = signed_in(context, people["alice"])
    asked = accept_dialogs(page)
    page.goto(f"/keys?project={people['mine']}")
    form = page.locator("[data-test=key-form]")
    form.locator("input[name=name]").fill("ci-bot")
    form.locator("input[name=models][value=echo]").check()
    form.locator("input[name=token_budget]").fill("1000")
    form.locator("[data-test=create-key]").click()
    secret = page.locator("[data-test=key-secret]").inner_text().strip()
    assert secret.startswith("sk-suanli-")
    row = page.locator("tr[data-name=ci-bot]")
    expect(row.locator("[data-test=key-state]")).to_have_text("active")
    expect(row).to_contain_text(secret[:16])
    expect(row.locator("[data-test=key-used]")).to_contain_text("0 of 1000 tokens this month")
    # The key calls the service it names through the gateway.
    call = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"authorization": f"Bearer {secret}"}
    assert httpx.post(f"{console.url}/v1/chat/completions", json=call, headers=headers).is_success
    # Shown once: not on the next visit.
    page.goto(f"/keys?project={people['mine']}")
    assert secret not in page.content()
    page.locator("tr[data-name=ci-bot] [data-test=revoke-key]").click()
    expect(page.locator("tr[data-name=ci-bot] [data-test=key-state]")).to_have_text("revoked")
    assert asked and "ci-bot" in asked[0]
    refused = httpx.post(f"{console.url}/v1/chat/completions", json=call, headers=headers)
    assert refused.status_code == 401, refused.text


def test_the_playground_streams_an_answer_and_compares_two(
    context: BrowserContext, people: dict[str, Any]
) -> None:
    page = signed_in(context, people["alice"])
    page.goto(f"/playground?model={people['mine']}/chat")
    page.fill("[data-test=pg-system]", "Be brief.")
    page.fill("[data-test=pg-max-tokens]", "6")
    page.fill("[data-test=pg-input]", "Say something")
    page.click("[data-test=pg-send]")
    log = page.locator("[data-test=pg-log-a]")
    # Token by token: a part of the answer shows while the rest is on its way.
    streaming = log.locator(".pg-msg.assistant.streaming")
    expect(streaming).to_contain_text("tok1")
    expect(streaming).not_to_contain_text("tok5")
    answer = log.locator(".pg-msg.assistant").last
    expect(answer.locator(".pg-text")).to_have_text("tok0 tok1 tok2 tok3 tok4 tok5")
    stats = answer.locator("[data-test=pg-stats]")
    expect(stats).to_contain_text("+ 6 completion tokens")
    expect(stats).to_contain_text(re.compile(r"first token \d+ ms · total \d+ ms"))
    # Compare: both services answer the same prompt side by side.
    page.check("[data-test=pg-compare]")
    page.select_option("[data-test=pg-model-b]", f"{people['mine']}/echo")
    page.fill("[data-test=pg-max-tokens]", "3")
    page.fill("[data-test=pg-input]", "Again")
    page.click("[data-test=pg-send]")
    for column in ("a", "b"):
        side = page.locator(f"[data-test=pg-log-{column}]")
        expect(side.locator(".pg-msg.user").last).to_have_text("Again")
        last = side.locator(".pg-msg.assistant").last
        expect(last.locator(".pg-text")).to_have_text("tok0 tok1 tok2")
        expect(last.locator("[data-test=pg-stats]")).to_contain_text("+ 3 completion tokens")
    expect(page.locator("[data-test=pg-title-b]")).to_have_text(f"{people['mine']}/echo")
    screenshot(page, "playground")


def test_a_prompt_template_is_saved_and_used(
    context: BrowserContext, people: dict[str, Any]
) -> None:
    page = signed_in(context, people["alice"])
    page.goto(f"/playground?model={people['mine']}/echo")
    page.fill("[data-test=pg-input]", "Say hello to {who}")
    page.fill("[data-test=pg-save-name]", "greet")
    page.click("[data-test=pg-save]")
    expect(page.locator("[data-test=pg-save-note]")).to_have_text("Saved greet, version 1.")
    page.fill("[data-test=pg-input]", "")
    page.select_option("[data-test=pg-template]", "greet")
    page.locator("[data-test=pg-vars] input[data-variable=who]").fill("Ada")
    page.click("[data-test=pg-use]")
    expect(page.locator("[data-test=pg-input]")).to_have_value("Say hello to Ada")
    page.fill("[data-test=pg-max-tokens]", "2")
    page.click("[data-test=pg-send]")
    log = page.locator("[data-test=pg-log-a]")
    expect(log.locator(".pg-msg.user")).to_have_text("Say hello to Ada")
    expect(log.locator(".pg-msg.assistant .pg-text")).to_have_text("tok0 tok1")
    # A second save is a new version.
    page.fill("[data-test=pg-input]", "Say goodbye to {who}")
    page.click("[data-test=pg-save]")
    expect(page.locator("[data-test=pg-save-note]")).to_have_text("Saved greet, version 2.")
    expect(page.locator("[data-test=pg-template] option[value=greet]")).to_have_text("greet · v2")


def test_the_pages_in_chinese(browser: Chromium, console: Any, people: dict[str, Any]) -> None:
    context = new_context(browser, console, locale="zh-CN")
    try:
        page = signed_in(context, people["alice"])
        page.goto(f"/services?project={people['mine']}")
        expect(page.locator("h1")).to_have_text("模型服务")
        expect(page.locator("tr[data-name=chat] [data-health]")).to_have_text("就绪")
        page.goto(f"/services/{people['chat']}")
        expect(page.locator("[data-test=endpoint] h2")).to_have_text("调用方式")
        expect(page.locator("[data-test=ready-of]")).to_have_text("1 个副本中 1 个就绪")
        expect(page.locator("[data-test=usage-chart] figcaption")).to_have_text(
            "每小时请求数与 token 数"
        )
        screenshot(page, "service-zh-CN")
    finally:
        context.close()


def test_a_stranger_sees_neither_the_services_nor_the_keys(
    console: Any, people: dict[str, Any]
) -> None:
    bob = Browser(console.url)
    bob.log_in(people["bob"], f"{people['bob']}-password")
    service = people["chat"]
    assert "chat" not in bob.page("/services")
    assert people["mine"] not in bob.page("/playground")
    bob.page(f"/services/{service}", status=404)
    bob.page(f"/services/{service}/replicas/{service}", status=404)
    bob.page(f"/keys?project={people['mine']}", status=404)
    assert bob.http.get(f"/playground/prompts?project={people['mine']}").status_code == 404
    assert bob.post(f"/services/{service}/stop").status_code == 404
    assert bob.post(f"/services/{service}/update", {"update.replicas": "3"}).status_code == 404
    assert bob.http.get(f"/services/{service}/usage.csv").status_code == 404
    sweep = {"sweep.max_concurrency": "2"}
    assert bob.post(f"/services/{service}/sweeps", sweep).status_code == 404
    bob.page(f"/services/{service}?rps=10&ttft=100", status=404)
    # Alice's keys: none of them can be revoked by him either.
    api = httpx.Client(
        base_url=f"{console.url}/api/v1", headers={"authorization": f"Bearer {people['token']}"}
    )
    keys = api.get("/service-keys", params={"project": people["mine"]}).json()
    made = api.post("/service-keys", json={"project": people["mine"], "name": "private"}).json()
    api.close()
    for key in [*keys, made]:
        assert bob.post(f"/keys/{key['id']}/revoke").status_code == 404
    # Nor call the service through the gateway with his session.
    call = {"model": f"{people['mine']}/chat", "messages": [{"role": "user", "content": "hi"}]}
    answer = bob.http.post("/v1/chat/completions", json=call, headers={"x-csrf-token": bob.csrf})
    assert answer.status_code in (403, 404), answer.text
    bob.http.close()

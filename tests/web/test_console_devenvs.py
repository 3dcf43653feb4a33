"""Dev environments in the console: the create form explains every bad field at once (in both
languages) and saves nothing then; SSH keys on My account; strangers see nothing; forms need
their CSRF token; the project's settings for environments survive the quota form. And once,
in a real Chromium: create an environment through the form, open its web terminal and run a
command in it."""

import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from browsing import ADMIN_PASSWORD, accept_dialogs, log_in, screenshot
from playwright.sync_api import BrowserContext, expect
from test_console_http import CATALOGUE_KEY, Browser, hold_cpus

from suanli.client import Client


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def api(console: Any, user: str) -> httpx.Client:
    """The REST API as `user` (the SDK's dev environment calls are not needed here)."""
    client = Client(console.url)
    client.login(user, f"{user}-password")
    token = client.token
    client.close()
    return httpx.Client(
        base_url=f"{console.url}/api/v1", headers={"Authorization": f"Bearer {token}"}
    )


@pytest.fixture(scope="module")
def people(console: Any, admin_api: Client) -> dict[str, str]:
    """alice owns `mine` and `idle` (its CPU held: what is created there waits, cheaply); bob
    is a stranger to both, with a project of his own."""
    alice, bob = unique("alice"), unique("bob")
    mine, idle, theirs = unique("mine"), unique("idle"), unique("theirs")
    for name in (alice, bob):
        admin_api.users.create(name, f"{name}-password")
    admin_api.projects.create(mine, owner=alice)
    admin_api.projects.create(idle, owner=alice)
    admin_api.projects.create(theirs, owner=bob)
    admin_api.projects.set_quota(idle, cpus=1)
    hold_cpus(admin_api, idle)
    return {"alice": alice, "bob": bob, "mine": mine, "idle": idle, "theirs": theirs}


@pytest.fixture
def alice(console: Any, people: dict[str, str]) -> Iterator[Browser]:
    browser = Browser(console.url)
    browser.log_in(people["alice"], f"{people['alice']}-password")
    yield browser
    browser.http.close()


def waiting_env(console: Any, people: dict[str, str], **spec: Any) -> int:
    """An environment of alice's that waits for CPUs (project `idle`), made through the API."""
    with api(console, people["alice"]) as client:
        body = {"project": people["idle"], "name": unique("env"), "tools": ["terminal", "ssh"]}
        response = client.post("/devenvs", json={**body, **spec})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])


def eventually(browser: Browser, path: str, marker: str, seconds: float = 15) -> str:
    """The page once it shows `marker` (the scheduler decides within a cycle or two)."""
    deadline = time.monotonic() + seconds
    while marker not in (text := browser.page(path)):
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.3)
    return text


def env_form(project: str, **changes: str) -> dict[str, str]:
    return {
        "project": project,
        "name": unique("nb"),
        "gpu_kind": "none",
        "resources.cpus": "1",
        "resources.memory": "1Gi",
        "environment": "",
        "workdir": "",
        "idle_timeout": "",
        "max_duration": "",
        **changes,
    }


def errors_of(text: str) -> dict[str, str]:
    return dict(re.findall(r'class="field-error" id="err-([a-z_-]+)">([^<]+)<', text))


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_the_form_explains_every_bad_field_at_once_and_saves_nothing(
    console: Any, people: dict[str, str], language: str
) -> None:
    browser = Browser(console.url, language)
    browser.log_in(people["alice"], f"{people['alice']}-password")
    form = browser.page(f"/devenvs/new?project={people['idle']}")
    assert f'<option value="{people["idle"]}" selected>' in form
    bad = env_form(
        people["idle"],
        name="Not A Name",
        gpu_kind="whole",
        **{"resources.gpus": "-1", "resources.memory": "lots"},
        idle_timeout="soon",
    )
    refused = browser.http.post("/devenvs/new", data={"csrf_token": browser.csrf, **bad})
    assert refused.status_code == 422
    errors = errors_of(refused.text)
    # No tool ticked, a bad name, GPUs, memory and idle timeout: all five at once.
    assert set(errors) == {"name", "tools", "resources-gpus", "resources-memory", "idle_timeout"}
    if language == "zh-CN":
        assert all(re.search(r"[\u4e00-\u9fff]", message) for message in errors.values())
    assert 'value="Not A Name"' in refused.text and 'value="lots"' in refused.text
    # Unknown environment, then a name already taken: the service's refusals, on their field.
    unknown = browser.http.post(
        "/devenvs/new",
        data={"csrf_token": browser.csrf, **env_form(people["idle"], environment="nope")}
        | {"tools": "terminal"},
    )
    assert unknown.status_code == 422 and set(errors_of(unknown.text)) == {"environment"}
    assert "nope" in errors_of(unknown.text)["environment"]
    with api(console, people["alice"]) as client:
        assert client.get("/devenvs", params={"project": people["idle"]}).json() == []


def test_a_name_is_taken_once_and_vscode_needs_code_server(
    alice: Browser, console: Any, people: dict[str, str]
) -> None:
    form = alice.page("/devenvs/new")
    vscode = re.search(r'<input type="checkbox" name="tools" value="vscode"[^>]*>', form).group(0)
    # The server inherits the tests' environment: it has code-server where they see one.
    offered = bool(os.environ.get("SUANLI_CODE_SERVER") or shutil.which("code-server"))
    assert ("disabled" in vscode) is not offered
    assert ('data-test="no-vscode"' in form) is not offered
    # The other tools are ticked by default.
    for tool in ("jupyter", "terminal", "ssh"):
        assert re.search(rf'name="tools" value="{tool}" checked', form), tool
    values = env_form(people["idle"], name=unique("twice"))
    first = alice.http.post(
        "/devenvs/new", data={"csrf_token": alice.csrf, **values, "tools": "terminal"}
    )
    assert first.status_code == 303 and re.fullmatch(r"/devenvs/\d+", first.headers["location"])
    again = alice.http.post(
        "/devenvs/new", data={"csrf_token": alice.csrf, **values, "tools": "terminal"}
    )
    assert again.status_code == 409
    assert values["name"] in errors_of(again.text)["name"]
    if not offered:  # a form posted with VS Code anyway is refused on the field
        forged = alice.http.post(
            "/devenvs/new",
            data={"csrf_token": alice.csrf, **env_form(people["idle"]), "tools": "vscode"},
        )
        assert forged.status_code == 422 and "code-server" in errors_of(forged.text)["tools"]


def test_ssh_keys_are_added_listed_refused_and_removed(alice: Browser) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="alice@laptop")
    public = key.export_public_key().decode().strip()
    alice.page("/account")
    added = alice.post("/account/ssh-keys", {"public_key": public, "name": ""})
    assert added.status_code == 303 and added.headers["location"] == "/account#ssh-keys"
    page = alice.page("/account")
    fingerprint = key.get_fingerprint("sha256")
    assert fingerprint in page and "alice@laptop" in page and "ssh-ed25519" in page
    again = alice.post("/account/ssh-keys", {"public_key": public})
    assert again.status_code == 409 and fingerprint in errors_of(again.text)["ssh_key-public_key"]
    nonsense = alice.post(
        "/account/ssh-keys", {"public_key": "ssh-ed25519 not-base64", "name": "x"}
    )
    assert nonsense.status_code == 422 and "ssh_key-public_key" in errors_of(nonsense.text)
    assert "not-base64" in nonsense.text  # kept in the field, to be mended
    private = key.export_private_key().decode()
    refused = alice.post("/account/ssh-keys", {"public_key": private})
    assert refused.status_code == 422
    assert "private key" in errors_of(refused.text)["ssh_key-public_key"]
    assert "PRIVATE KEY" not in refused.text  # never echoed back
    key_id = re.search(r'action="/account/ssh-keys/(\d+)/remove"', page).group(1)
    assert alice.http.post(f"/account/ssh-keys/{key_id}/remove").status_code == 403  # no CSRF
    assert alice.post(f"/account/ssh-keys/{key_id}/remove").status_code == 303
    assert fingerprint not in alice.page("/account")
    assert alice.post(f"/account/ssh-keys/{key_id}/remove").status_code == 404


def test_an_environment_page_shows_ssh_access_and_strangers_see_nothing(
    alice: Browser, console: Any, people: dict[str, str]
) -> None:
    env_id = waiting_env(console, people)
    page = eventually(alice, f"/devenvs/{env_id}", 'data-test="pending-reason"')
    assert "CPUs" in page  # it waits for the project's CPUs, and says so
    assert 'hx-trigger="every 2s"' in page
    config = re.search(r'data-test="ssh-config">([^<]+)<', page).group(1)
    assert re.search(r"Host suanli-env-\w+\n    HostName \S+\n    Port \d+\n    User env-", config)
    assert 'data-test="no-ssh-key"' in page  # alice has no SSH key here (any more)
    assert f'href="/devenvs/{env_id}"' in alice.page("/devenvs")
    bob = Browser(console.url)
    bob.log_in(people["bob"], f"{people['bob']}-password")
    for path in (f"/devenvs/{env_id}", f"/devenvs/{env_id}/terminal", f"/devenvs/{env_id}/log"):
        bob.page(path, status=404)
    assert f'href="/devenvs/{env_id}"' not in bob.page("/devenvs")
    for action in ("stop", "restart", "remove"):
        assert bob.post(f"/devenvs/{env_id}/{action}").status_code == 404
    # Without the CSRF token nothing happens, even for its owner.
    assert alice.http.post(f"/devenvs/{env_id}/stop").status_code == 403
    assert alice.http.post("/devenvs/new", data=env_form(people["idle"])).status_code == 403
    # Stop (from the list: back to the list), then remove.
    stopped = alice.post(f"/devenvs/{env_id}/stop", {"next": "/devenvs?state=finished"})
    assert stopped.status_code == 303 and stopped.headers["location"] == "/devenvs?state=finished"
    listing = alice.page("/devenvs?state=finished")
    assert f'action="/devenvs/{env_id}/restart"' in listing
    assert f'action="/devenvs/{env_id}/remove"' in listing
    assert 'hx-trigger="every' not in alice.page(f"/devenvs/{env_id}")  # nothing moves now
    assert alice.post(f"/devenvs/{env_id}/remove").headers["location"] == "/devenvs"
    alice.page(f"/devenvs/{env_id}", status=404)


def test_quota_form_keeps_the_environments_lifetime_and_owners_choose_access(
    console: Any, people: dict[str, str], admin_api: Client
) -> None:
    project = people["mine"]
    admin = Browser(console.url)
    admin.log_in("admin", ADMIN_PASSWORD)
    admin.page(f"/projects/{project}")
    quota = {
        "guaranteed_gpus": "0",
        "max_gpus": "",
        "max_gpus_per_user": "",
        "cpus": "",
        "memory_bytes": "",
        "storage_bytes": "",
    }
    bad = admin.post(f"/projects/{project}/quota", {**quota, "devenv_max_lifetime_seconds": "ever"})
    assert bad.status_code == 422 and "quota-devenv_max_lifetime_seconds" in errors_of(bad.text)
    saved = admin.post(f"/projects/{project}/quota", {**quota, "devenv_max_lifetime_seconds": "8h"})
    assert saved.status_code == 303
    assert admin_api.projects.get(project).quota.devenv_max_lifetime_seconds == 8 * 3600
    page = admin.page(f"/projects/{project}")
    assert 'name="devenv_max_lifetime_seconds" value="8h"' in page
    # Saving the form as shown, another limit changed, keeps the lifetime.
    shown = dict(re.findall(r'<input type="text" name="([a-z_]+)" value="([^"]*)"', page))
    assert shown["devenv_max_lifetime_seconds"] == "8h"
    assert admin.post(f"/projects/{project}/quota", {**shown, "max_gpus": "3"}).status_code == 303
    after = admin_api.projects.get(project).quota
    assert after.max_gpus == 3 and after.devenv_max_lifetime_seconds == 8 * 3600
    emptied = {**shown, "max_gpus": "", "devenv_max_lifetime_seconds": ""}
    assert admin.post(f"/projects/{project}/quota", emptied).status_code == 303
    assert admin_api.projects.get(project).quota.devenv_max_lifetime_seconds is None
    # The owner lets owners open members' environments, and takes it back.
    owner = Browser(console.url)
    owner.log_in(people["alice"], f"{people['alice']}-password")
    assert 'data-test="owners-open-devenvs"' in owner.page(f"/projects/{project}")
    path = f"/projects/{project}/devenvs"
    assert owner.post(path, {"owners_open_devenvs": "on"}).status_code == 303
    assert admin_api.projects.get(project).owners_open_devenvs is True
    assert owner.post(path, {}).status_code == 303
    assert admin_api.projects.get(project).owners_open_devenvs is False
    bob = Browser(console.url)
    bob.log_in(people["bob"], f"{people['bob']}-password")
    bob.page(f"/projects/{people['theirs']}")
    assert bob.post(path, {"owners_open_devenvs": "on"}).status_code == 404


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_the_pages_are_complete_in_both_languages(
    console: Any, people: dict[str, str], language: str
) -> None:
    env_id = waiting_env(console, people)
    browser = Browser(console.url, language)
    browser.log_in(people["alice"], f"{people['alice']}-password")
    for path in (
        "/devenvs",
        "/devenvs/new",
        f"/devenvs/{env_id}",
        f"/devenvs/{env_id}/terminal",
        "/account",
        f"/projects/{people['idle']}",
    ):
        text = browser.page(path)
        assert not CATALOGUE_KEY.findall(re.sub(r"<[^>]+>", " ", text)), path
    if language == "zh-CN":
        assert "开发环境" in browser.page("/devenvs")


def test_create_an_environment_and_type_in_its_terminal(
    context: BrowserContext, people: dict[str, str], tmp_path: Path
) -> None:
    """The one real-browser test: the form, the page waiting until it runs, JupyterLab's
    button, and the terminal answering `echo $((6*7))` with 42."""
    page = context.new_page()
    asked = accept_dialogs(page)
    log_in(page, people["alice"], f"{people['alice']}-password")
    page.click("a.nav-link[href='/devenvs']")
    page.click("[data-test=new-devenv]")
    name = unique("term")
    page.select_option("select[name=project]", people["mine"])
    page.fill("input[name=name]", name)
    page.fill("input[name='resources.gpus']", "1")
    page.fill("input[name='resources.cpus']", "1")
    page.fill("input[name='resources.memory']", "1Gi")
    page.uncheck("input[name=tools][value=ssh]")
    page.check("input[name=tools][value=terminal]")
    page.check("input[name=tools][value=jupyter]")
    page.fill("input[name=workdir]", str(tmp_path))
    page.click("[data-test=create-devenv]")
    expect(page).to_have_url(re.compile(r"/devenvs/\d+$"))
    env_id = page.url.rsplit("/", 1)[1]
    # The page refreshes itself until it runs; then the tools' buttons appear. (A loaded
    # machine may take a while to start the environment's agent.)
    status = page.locator("#devenv-status")
    expect(status).to_have_attribute("data-state", "running", timeout=45_000)
    jupyter = page.locator("[data-test=open-jupyter]")
    expect(jupyter).to_have_attribute("href", f"/x/{env_id}/jupyter/lab")
    expect(jupyter).to_have_attribute("target", "_blank")
    terminal = page.locator("[data-test=open-terminal]")
    expect(terminal).to_have_attribute("href", f"/devenvs/{env_id}/terminal")
    screenshot(page, "devenv")
    page.goto(f"/devenvs/{env_id}/terminal")
    expect(page.locator("[data-test=terminal-status]")).to_have_attribute(
        "data-state", "connected", timeout=30_000
    )
    page.click("#terminal")
    page.keyboard.type("echo $((6*7))")
    page.keyboard.press("Enter")
    answer = page.locator(".xterm-rows > div").filter(has_text=re.compile(r"^\s*42\s*$"))
    expect(answer.first).to_be_visible()
    # The window resized: the terminal fits itself again (more rows), the shell still answers.
    rows = page.locator(".xterm-rows > div").count()
    page.set_viewport_size({"width": 1000, "height": 1100})
    expect(page.locator(".xterm-rows > div")).not_to_have_count(rows)
    screenshot(page, "devenv-terminal")
    # Stop it from its page; it ends stopped, and can be removed.
    page.goto(f"/devenvs/{env_id}")
    page.click("[data-test=stop-devenv]")
    expect(status).to_have_attribute("data-state", "cancelled", timeout=30_000)
    page.click("[data-test=remove-devenv]")
    expect(page).to_have_url(re.compile(r"/devenvs$"))
    expect(page.locator(f"a[href='/devenvs/{env_id}']")).to_have_count(0)
    assert len(asked) == 2 and name in asked[0]

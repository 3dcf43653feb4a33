"""Datasets and models in the console: the create form explains a bad field in the reader's
language; the console's tus endpoint refuses a request without its CSRF token before reading
its body; a stranger to the project gets 404 on a private repository's pages and files. And
once, in a real Chromium: create a dataset through the form, upload a folder through the
page (progress to 100%), commit it, and preview its JSON Lines and CSV files."""

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsing import ADMIN_PASSWORD, log_in, screenshot
from playwright.sync_api import BrowserContext, expect
from test_console_http import CATALOGUE_KEY, Browser

from suanli.client import Client

TRAIN = [
    {"instruction": "Say hello", "input": "", "output": "Hello!"},
    {"instruction": "Add 2 and 3", "input": "", "output": "5"},
]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def errors_of(text: str) -> dict[str, str]:
    return dict(re.findall(r'class="field-error" id="err-([a-z_-]+)">([^<]+)<', text))


@pytest.fixture(scope="module")
def people(console: Any, admin_api: Client) -> dict[str, str]:
    """alice owns `mine`; bob is a stranger to it, with a project of his own."""
    alice, bob = unique("alice"), unique("bob")
    mine, theirs = unique("mine"), unique("theirs")
    for name in (alice, bob):
        admin_api.users.create(name, f"{name}-password")
    admin_api.projects.create(mine, owner=alice)
    admin_api.projects.create(theirs, owner=bob)
    return {"alice": alice, "bob": bob, "mine": mine, "theirs": theirs}


def signed_in(console: Any, user: str, language: str = "en") -> Browser:
    browser = Browser(console.url, language)
    browser.log_in(user, f"{user}-password")
    return browser


@pytest.fixture
def alice(console: Any, people: dict[str, str]) -> Iterator[Browser]:
    browser = signed_in(console, people["alice"])
    yield browser
    browser.http.close()


def tus_headers(browser: Browser, **extra: str) -> dict[str, str]:
    return {"Tus-Resumable": "1.0.0", "X-CSRF-Token": browser.csrf, **extra}


def send(browser: Browser, project: str, content: bytes) -> str:
    """One file over the console's tus endpoint, as the page sends it; its sha256."""
    meta = ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}"
        for key, value in {"project": project, "filename": "f"}.items()
    )
    created = browser.http.post(
        "/data/uploads",
        headers=tus_headers(
            browser, **{"Upload-Length": str(len(content)), "Upload-Metadata": meta}
        ),
    )
    assert created.status_code == 201, created.text[:500]
    if not content:
        return created.headers["Upload-Sha256"]
    answer = browser.http.patch(
        created.headers["Location"],
        content=content,
        headers=tus_headers(
            browser, **{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        ),
    )
    assert answer.status_code == 204, answer.text[:500]
    return answer.headers["Upload-Sha256"]


def dataset_with_a_version(browser: Browser, project: str, files: dict[str, bytes]) -> str:
    """A private dataset made and committed through the console's forms; its address."""
    name = unique("set")
    browser.page(f"/datasets/new?project={project}")
    made = browser.post(
        "/datasets/new",
        {"project": project, "name": name, "description": "", "visibility": "project"},
    )
    assert made.status_code == 303, made.text[:500]
    home = f"/datasets/{project}/{name}"
    assert made.headers["location"] == home
    manifest = [
        {"path": path, "sha256": send(browser, project, body), "size": len(body)}
        for path, body in files.items()
    ]
    committed = browser.post(
        f"{home}/versions", {"message": "first", "manifest": json.dumps(manifest)}
    )
    assert committed.status_code == 303, committed.text[-2000:]
    assert committed.headers["location"] == f"{home}/versions/1"
    return home


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_the_form_explains_a_bad_or_taken_name_on_its_field(
    console: Any, people: dict[str, str], language: str
) -> None:
    browser = signed_in(console, people["alice"], language)
    listing = browser.page("/datasets")
    assert not CATALOGUE_KEY.findall(re.sub(r"<[^>]+>", " ", listing))
    form = browser.page(f"/models/new?project={people['mine']}")
    assert f'<option value="{people["mine"]}" selected>' in form
    values = {"project": people["mine"], "description": "", "visibility": "project"}
    bad = browser.post("/models/new", {**values, "name": "no spaces allowed"})
    assert bad.status_code == 422
    assert set(errors_of(bad.text)) == {"name"}
    assert 'value="no spaces allowed"' in bad.text  # kept, to be mended
    name = unique("qwen")
    assert browser.post("/models/new", {**values, "name": name}).status_code == 303
    taken = browser.post("/models/new", {**values, "name": name})
    assert taken.status_code == 409 and name in errors_of(taken.text)["name"]
    page = browser.page(f"/models/{people['mine']}/{name}")
    assert not CATALOGUE_KEY.findall(re.sub(r"<[^>]+>", " ", page))
    if language == "zh-CN":
        assert "新建数据集" in listing and "数据集广场" in listing
        assert re.search(r"[\u4e00-\u9fff]", errors_of(bad.text)["name"])
        assert "上传" in page and "提交为新版本" in page and "版本" in page
    else:
        assert "New dataset" in listing and "Commit as a new version" in page


def test_the_upload_endpoint_refuses_a_request_without_its_token_before_reading(
    alice: Browser, console: Any, people: dict[str, str]
) -> None:
    alice.page("/datasets")
    meta = "project " + base64.b64encode(people["mine"].encode()).decode()
    create = {"Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Metadata": meta}
    assert alice.http.post("/data/uploads", headers=create).status_code == 403
    created = alice.http.post("/data/uploads", headers={**create, "X-CSRF-Token": alice.csrf})
    assert created.status_code == 201
    location = created.headers["Location"]
    patch = {
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
    }
    # The session cookie alone (what a forged cross-site request carries) is refused; so is
    # a wrong token, and a multipart body that a form parser would read in.
    assert alice.http.patch(location, content=b"0123456789", headers=patch).status_code == 403
    wrong = {**patch, "X-CSRF-Token": "0" * 64}
    assert alice.http.patch(location, content=b"0123456789", headers=wrong).status_code == 403
    multipart = {"Tus-Resumable": "1.0.0", "Upload-Offset": "0"}
    forged = alice.http.patch(location, files={"csrf_token": (None, alice.csrf)}, headers=multipart)
    assert forged.status_code == 403
    head = alice.http.head(location, headers={"Tus-Resumable": "1.0.0"})
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "0"  # nothing written
    # Without her session, her token is worth nothing; without any, a HEAD goes to login.
    stranger = httpx.Client(base_url=console.url)
    refused = stranger.patch(
        location, content=b"0123456789", headers={**patch, "X-CSRF-Token": alice.csrf}
    )
    assert refused.status_code == 403
    anonymous = stranger.head(location, headers={"Tus-Resumable": "1.0.0"})
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    # With it, the bytes go in and the server names them.
    done = alice.http.patch(
        location, content=b"0123456789", headers={**patch, "X-CSRF-Token": alice.csrf}
    )
    assert done.status_code == 204
    assert done.headers["Upload-Sha256"] == hashlib.sha256(b"0123456789").hexdigest()


def test_a_stranger_gets_404_on_a_private_repository_and_its_files(
    alice: Browser, console: Any, people: dict[str, str]
) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (640).to_bytes(4, "big") * 2 + b"\x08\x02"
    files = {"notes/a.txt": b"secret", "e": b"", "cat.png": png}
    home = dataset_with_a_version(alice, people["mine"], files)
    version = alice.page(f"{home}/versions/1")
    assert 'data-file="notes/a.txt"' in version and 'data-file="e"' in version
    # Previews: text as text, an image as a thumbnail (its bytes inline, as an image), a file
    # of no known type with the reason.
    text = alice.page(f"{home}/versions/1?preview=notes/a.txt")
    assert re.search(r'data-test="preview-text">secret<', text)
    image = alice.page(f"{home}/versions/1?preview=cat.png")
    assert f'<img src="{home}/versions/1/files/cat.png"' in image and "640 × 640" in image
    thumbnail = alice.http.get(f"{home}/versions/1/files/cat.png")
    assert thumbnail.headers["content-type"] == "image/png"
    assert thumbnail.headers["content-disposition"].startswith("inline")
    assert 'data-test="preview-problem"' in alice.page(f"{home}/versions/1?preview=e")
    file_url = f"{home}/versions/1/files/notes/a.txt"
    got = alice.http.get(file_url, headers={"Range": "bytes=2-"})
    assert got.status_code == 206 and got.content == b"cret"
    assert got.headers["content-disposition"].startswith("attachment")
    bob = signed_in(console, people["bob"])
    for path in (home, f"{home}/versions/1", file_url, f"{home}/versions/1?preview=notes/a.txt"):
        assert "secret" not in bob.page(path, status=404)
    assert home not in bob.page("/datasets")
    for action in ("remove", "tags", "versions", "settings"):
        assert bob.post(f"{home}/{action}", {"tag": "x", "version": "1"}).status_code == 404
    # Made public, it reads (its files too), but only its members upload or delete.
    assert (
        alice.post(f"{home}/settings", {"description": "", "visibility": "public"}).status_code
        == 303
    )
    page = bob.page(home)
    assert 'data-test="upload-area"' not in page and 'data-test="danger"' not in page
    assert bob.http.get(file_url).content == b"secret"
    assert bob.post(f"{home}/remove").status_code == 404


def test_upload_a_folder_commit_and_preview_in_a_browser(
    context: BrowserContext, people: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "alpaca"
    (folder / "eval").mkdir(parents=True)
    (folder / "train.jsonl").write_text(
        "".join(json.dumps(record) + "\n" for record in TRAIN), encoding="utf-8"
    )
    (folder / "eval" / "scores.csv").write_text("model,score\nqwen,0.91\nllama,0.87\n")
    page = context.new_page()
    log_in(page, people["alice"], f"{people['alice']}-password")
    page.click("a.nav-link[href='/datasets']")
    page.click("[data-test=new-repository]")
    name = unique("alpaca")
    page.select_option("select[name=project]", people["mine"])
    page.fill("input[name=name]", name)
    page.fill("textarea[name=description]", "Two examples")
    page.click("[data-test=create-repository]")
    expect(page).to_have_url(re.compile(rf"/datasets/{people['mine']}/{name}$"))
    page.set_input_files("[data-test=pick-folder]", str(folder))
    expect(page.locator("[data-test=overall-percent]")).to_have_text("100%")
    expect(page.locator("tr[data-path='eval/scores.csv']")).to_have_attribute("data-state", "done")
    expect(page.locator("tr[data-path='train.jsonl']")).to_have_attribute("data-state", "done")
    screenshot(page, "dataset-upload")
    page.fill("input[name=message]", "first cut")
    page.click("[data-test=commit]")
    expect(page).to_have_url(re.compile(rf"/datasets/{people['mine']}/{name}/versions/1$"))
    expect(page.locator("[data-test=file-count]")).to_have_text("2")
    expect(page.locator("[data-test=format-ok]")).to_be_visible()  # alpaca, as LLaMA-Factory
    page.locator("tr[data-file='train.jsonl'] [data-test=preview-link]").click()
    table = page.locator("[data-test=preview-table]")
    expect(table.locator("th")).to_have_text(["instruction", "input", "output"])
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table).to_contain_text("Add 2 and 3")
    page.locator("tr[data-file='eval/scores.csv'] [data-test=preview-link]").click()
    expect(table.locator("th")).to_have_text(["model", "score"])
    expect(table.locator("tbody tr").first).to_contain_text("qwen")
    screenshot(page, "dataset-version")
    page.click("[data-test=verify]")
    expect(page.locator("#verify-result [data-ok=true]")).to_be_visible()
    # The repository lists the version, by whom and with what.
    page.goto(f"/datasets/{people['mine']}/{name}")
    row = page.locator("tr[data-version='1']")
    expect(row).to_contain_text("first cut")
    expect(row).to_contain_text(people["alice"])


def safetensors(shape: list[int]) -> bytes:
    """A safetensors file of one float16 tensor (zeros) of this shape."""
    size = 2 * shape[0] * shape[1]
    header = json.dumps({"w": {"dtype": "F16", "shape": shape, "data_offsets": [0, size]}})
    raw = header.encode()
    return len(raw).to_bytes(8, "little") + raw + bytes(size)


def test_a_model_shows_its_layout_and_the_plaza_shows_what_administrators_chose(
    alice: Browser, console: Any, people: dict[str, str]
) -> None:
    name = unique("tiny")
    values = {"project": people["mine"], "name": name, "description": "", "visibility": "project"}
    alice.page("/models/new")
    assert alice.post("/models/new", values).status_code == 303
    home = f"/models/{people['mine']}/{name}"
    config = {"architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": 32768}
    files = {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": safetensors([3, 4]),
        "tokenizer.json": b"{}",
    }
    manifest = [
        {"path": path, "sha256": send(alice, people["mine"], body), "size": len(body)}
        for path, body in files.items()
    ]
    committed = alice.post(f"{home}/versions", {"manifest": json.dumps(manifest)})
    assert committed.status_code == 303
    page = alice.page(f"{home}/versions/1")
    layout = page[page.index('data-test="model-layout"') :]
    assert "Qwen2ForCausalLM" in layout and "float16" in layout and "32,768" in layout
    assert re.search(r"<dd>12 \(", layout)  # 3 × 4 parameters
    assert 'data-test="model-format">Hugging Face' in layout
    # A member cannot put it in the catalogue; an administrator can, and then every user
    # finds it in the model plaza.
    assert alice.post(f"{home}/catalogue", {"catalogue": "on"}).status_code == 403
    bob = signed_in(console, people["bob"])
    assert home not in bob.page("/models?tab=catalogue")
    admin = Browser(console.url)
    admin.log_in("admin", ADMIN_PASSWORD)
    assert 'data-test="toggle-catalogue"' in admin.page(home)
    assert admin.post(f"{home}/catalogue", {"catalogue": "on"}).status_code == 303
    plaza = bob.page("/models?tab=catalogue")
    assert f'href="{home}"' in plaza and 'data-test="catalogue-badge"' in plaza
    assert f'href="{home}"' not in bob.page("/datasets?tab=catalogue")


def test_refused_forms_on_a_repository_page_show_their_errors(
    alice: Browser, people: dict[str, str]
) -> None:
    """A tag aimed at a version that does not exist, a tag moved meanwhile and a commit naming
    content never uploaded come back as the page, each error under its form, with the right
    status, and nothing changed."""
    home = dataset_with_a_version(alice, people["mine"], {"a.txt": b"a"})
    alice.page(home)
    missing = alice.post(f"{home}/tags", {"tag": "prod", "version": "9", "expected": ""})
    assert missing.status_code == 404 and "prod" not in errors_of(missing.text).get("tag", "")
    assert alice.post(f"{home}/tags", {"tag": "prod", "version": "1"}).status_code == 303
    moved = alice.post(f"{home}/tags", {"tag": "prod", "version": "1", "expected": "9"})
    assert moved.status_code in (404, 409), moved.text[-500:]
    never = [{"path": "b.txt", "sha256": "0" * 64, "size": 1}]
    refused = alice.post(f"{home}/versions", {"message": "", "manifest": json.dumps(never)})
    assert refused.status_code == 422
    assert re.search(r'data-test="commit-error">[^<]*b\.txt', refused.text), refused.text[-1000:]
    assert alice.http.get(f"{home}/versions/2").status_code == 404


def import_row(page: str, import_id: str) -> str:
    """The list's row of one import, as the page shows it."""
    found = re.search(rf'<tr data-import="{import_id}".*?</tr>', page, re.S)
    assert found, page[-3000:]
    return found.group(0)


def wait_for_import(api: Client, import_id: str, done: Any) -> None:
    deadline = time.monotonic() + 30
    while not done(api.imports.get(int(import_id))):
        assert time.monotonic() < deadline, api.imports.get(int(import_id))
        time.sleep(0.3)


def test_an_import_from_the_page_fails_on_a_private_address_and_is_retried(
    alice: Browser, console: Any, people: dict[str, str], admin_api: Client
) -> None:
    """The shared server does not let imports reach private addresses: an http URL on
    loopback fails with that reason, in the list, and Retry runs it again. The password
    typed is never shown."""
    home = dataset_with_a_version(alice, people["mine"], {"a.txt": b"a"})
    alice.page(home)
    url = "http://127.0.0.1:9/weights.bin"
    form = {"kind": "http", "url": url, "username": "me", "password": "hunter2-pw"}
    started = alice.post(f"{home}/imports", {**form, "message": "from loopback"})
    assert started.status_code == 303, started.text[-2000:]
    assert started.headers["location"] == f"{home}#imports"
    found = re.search(r'<tr data-import="(\d+)"', alice.page(home))
    assert found
    import_id = found.group(1)
    wait_for_import(admin_api, import_id, lambda row: row.state == "failed")
    page = alice.page(home)
    row = import_row(page, import_id)
    assert 'data-state="failed"' in row and 'class="badge tone-bad"' in row
    assert url in row and "private or special network" in row
    assert 'data-test="retry-import"' in row and 'data-test="cancel-import"' not in row
    assert "hx-trigger" not in page[page.index('id="imports"') :][:300]  # nothing to follow
    assert "hunter2" not in page
    # An ended import is not cancelled: the page says why; Retry queues it again.
    ended = alice.post(f"{home}/imports/{import_id}/cancel")
    assert ended.status_code == 409 and 'data-test="imports-error"' in ended.text
    retried = alice.post(f"{home}/imports/{import_id}/retry")
    assert retried.status_code == 303 and retried.headers["location"] == f"{home}#imports"
    wait_for_import(admin_api, import_id, lambda row: row.attempts == 2 and row.state == "failed")
    assert 'data-state="failed"' in import_row(alice.page(home), import_id)


def test_a_refused_import_form_shows_its_errors_and_never_its_secrets(
    alice: Browser, console: Any, people: dict[str, str]
) -> None:
    home = dataset_with_a_version(alice, people["mine"], {"a.txt": b"a"})
    alice.page(home)
    form = {
        "kind": "s3",
        "url": "https://s3.example.com",
        "prefix": "weights/",
        "access_key": "AKIA-visible-nowhere",
        "secret_key": "s3cr3t-visible-nowhere",
    }
    refused = alice.post(f"{home}/imports", form)
    assert refused.status_code == 422
    assert set(errors_of(refused.text)) == {"import-source-bucket"}
    assert "bucket" in errors_of(refused.text)["import-source-bucket"]
    assert 'value="https://s3.example.com"' in refused.text  # kept, to be mended
    assert "visible-nowhere" not in refused.text
    assert 'data-test="imports"' not in refused.text  # nothing was started
    # A stranger to the project: the same 404 as no repository at all.
    bob = signed_in(console, people["bob"])
    bob.page("/datasets")
    good = {"kind": "http", "url": "https://example.com/x.bin"}
    assert bob.post(f"{home}/imports", good).status_code == 404
    for action in ("cancel", "retry"):
        assert bob.post(f"{home}/imports/1/{action}").status_code == 404

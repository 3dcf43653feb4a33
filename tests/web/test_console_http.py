"""The console over plain HTTP on a real server: session cookies, CSRF, redirects, tenant
isolation, the live log stream, and pages complete in both languages."""

import json
import re
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from browsing import ADMIN_PASSWORD

from suanli.client import Client

CATALOGUE_KEY = re.compile(
    r"\b(?:web|label|error|validation|title|reason|exit|event)\.[a-z_]+\.?[a-z_]*"
)


JOB_LINK = re.compile(r'href="/jobs/(\d+)"')


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


class Browser:
    """A cookie-keeping HTTP client that logs in through the console's form, as a browser."""

    def __init__(self, url: str, language: str = "en"):
        self.http = httpx.Client(
            base_url=url, follow_redirects=False, headers={"Accept-Language": language}
        )
        self.csrf = ""

    def page(self, path: str, status: int = 200) -> str:
        response = self.http.get(path)
        assert response.status_code == status, (path, response.status_code, response.text[:500])
        found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        self.csrf = found.group(1) if found else self.csrf
        return response.text

    def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(path, data={"csrf_token": self.csrf, **(data or {})})

    def log_in(self, username: str, password: str) -> httpx.Response:
        self.page("/login")
        response = self.post("/login", {"username": username, "password": password})
        assert response.status_code == 303, response.text[:500]
        self.page("/")
        return response


@pytest.fixture(scope="module")
def people(console, admin_api: Client) -> dict[str, str]:
    """alice runs a job in her project; bob is in another project."""
    alice, bob = unique("alice"), unique("bob")
    mine, theirs = unique("mine"), unique("theirs")
    for name in (alice, bob):
        admin_api.users.create(name, f"{name}-password")
    admin_api.projects.create(mine, owner=alice)
    admin_api.projects.create(theirs, owner=bob)
    api = Client(console.url)
    api.login(alice, f"{alice}-password")
    job = api.jobs.submit(
        {"project": mine, "script": "echo first line; sleep 1; echo second line", "name": "two"}
    )
    api.close()
    return {"alice": alice, "bob": bob, "mine": mine, "theirs": theirs, "job": str(job.id)}


@pytest.fixture
def alice(console, people: dict[str, str]) -> Iterator[Browser]:
    browser = Browser(console.url)
    browser.log_in(people["alice"], f"{people['alice']}-password")
    yield browser
    browser.http.close()


def test_the_session_cookie_is_http_only_and_same_site(console, people) -> None:
    browser = Browser(console.url)
    response = browser.log_in(people["alice"], f"{people['alice']}-password")
    cookie = next(
        v
        for k, v in response.headers.multi_items()
        if k == "set-cookie" and v.startswith("suanli_session=")
    )
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    secret = cookie.split(";")[0].split("=", 1)[1]
    assert secret not in browser.page("/account")  # never echoed into a page
    # Logging out ends the session on the server, not only in this browser.
    assert browser.post("/logout").status_code == 303
    stolen = httpx.get(f"{console.url}/", cookies={"suanli_session": secret})
    assert stolen.status_code == 303 and stolen.headers["location"] == "/login"


def test_forms_need_the_csrf_token_and_our_origin(alice: Browser, people) -> None:
    path = f"/jobs/{people['job']}/resubmit"
    assert alice.http.post(path).status_code == 403
    assert alice.http.post(path, data={"csrf_token": "0" * 64}).status_code == 403
    foreign = alice.http.post(
        path, data={"csrf_token": alice.csrf}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert "expired or did not come from this site" in foreign.text
    # A forged request changed nothing: alice still has exactly one job.
    assert set(JOB_LINK.findall(alice.page("/jobs"))) == {people["job"]}


def test_login_goes_back_only_to_this_site(console, people) -> None:
    browser = Browser(console.url)
    browser.page("/login")
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        response = browser.post(
            "/login",
            {"username": people["bob"], "password": f"{people['bob']}-password", "next": target},
        )
        assert response.headers["location"] == "/", target
        browser.http.cookies.clear()
        browser.page("/login")


def test_a_stranger_to_the_project_sees_nothing_of_it(console, people) -> None:
    bob = Browser(console.url)
    bob.log_in(people["bob"], f"{people['bob']}-password")
    job = people["job"]
    for path in (f"/jobs/{job}", f"/jobs/{job}/log", f"/projects/{people['mine']}"):
        text = bob.page(path, status=404)
        assert "two" not in text or path.endswith("/log")
    assert not JOB_LINK.findall(bob.page("/jobs"))
    assert people["mine"] not in bob.page("/")
    assert not JOB_LINK.findall(bob.page(f"/jobs?project={people['mine']}"))
    for path in (f"/jobs/{job}/cancel", f"/jobs/{job}/resubmit"):
        assert bob.post(path).status_code == 404
    bob.page(f"/jobs/{job}/log", status=404)


def test_the_log_streams_as_server_sent_events_until_the_job_ends(alice: Browser, people) -> None:
    events: list[tuple[str, str]] = []
    with alice.http.stream("GET", f"/jobs/{people['job']}/log", timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, line[6:]))
                if kind == "end":
                    break
    text = "".join(json.loads(d)["text"] for k, d in events if k == "log")
    assert text == "first line\nsecond line\n"
    assert events[-1][0] == "end"
    # Resuming from an offset (Last-Event-ID) sends only what follows it.
    response = alice.http.get(
        f"/jobs/{people['job']}/log", headers={"Last-Event-ID": str(len("first line\n"))}
    )
    assert '"second line\\n"' in response.text and "first line" not in response.text


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_every_page_is_complete_in_both_languages(console, people, language: str) -> None:
    """No catalogue key shows through untranslated, on any page, in either language."""
    admin = Browser(console.url, language)
    admin.log_in("admin", ADMIN_PASSWORD)
    pages = [
        "/",
        "/jobs",
        "/jobs?state=pending",
        "/jobs/new",
        f"/jobs/new?like={people['job']}",
        f"/jobs/{people['job']}",
        "/nodes",
        "/projects",
        f"/projects/{people['mine']}",
        "/admin/users",
        "/admin/audit",
        "/account",
    ]
    for path in pages:
        text = admin.page(path)
        assert f'<html lang="{language}">' in text
        assert not CATALOGUE_KEY.findall(re.sub(r"<[^>]+>", " ", text)), path
    if language == "zh-CN":
        assert "总览" in admin.page("/")
    bad = admin.page("/jobs?state=sideways", status=422)
    message = re.search(r'id="err-state">([^<]+)<', bad)
    assert message and "pending" in message.group(1)


def test_a_disabled_user_is_signed_out_at_once(console, admin_api: Client) -> None:
    name = unique("carol")
    admin_api.users.create(name, f"{name}-password")
    carol = Browser(console.url)
    carol.log_in(name, f"{name}-password")
    admin_api.users.update(name, is_disabled=True)
    response = carol.http.get("/jobs")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_an_unknown_page_is_a_page_and_the_api_still_speaks_json(alice: Browser, console) -> None:
    text = alice.page("/no-such-page", status=404)
    assert "Error 404" in text and "<nav>" in text
    response = httpx.get(f"{console.url}/api/v1/no-such-thing")
    assert response.headers["content-type"] == "application/problem+json"


def test_owners_manage_members_and_others_cannot(console, people, admin_api: Client) -> None:
    owner = Browser(console.url)
    owner.log_in(people["alice"], f"{people['alice']}-password")
    project, bob = people["mine"], people["bob"]
    owner.page(f"/projects/{project}")
    unknown = owner.post(f"/projects/{project}/members", {"user": "nobody-here", "role": "member"})
    assert unknown.status_code == 404 and "nobody-here" in unknown.text
    added = owner.post(f"/projects/{project}/members", {"user": bob, "role": "viewer"})
    assert added.status_code == 303
    assert owner.post(f"/projects/{project}/members/{bob}", {"role": "member"}).status_code == 303
    assert {m.user: m.role for m in admin_api.projects.members(project)}[bob] == "member"
    # bob is a member now, not an owner: he sees the project but manages nothing.
    member = Browser(console.url)
    member.log_in(bob, f"{bob}-password")
    text = member.page(f"/projects/{project}")
    assert f'action="/projects/{project}/members"' not in text
    refused = member.post(f"/projects/{project}/members/{people['alice']}", {"role": "viewer"})
    assert refused.status_code == 403
    assert member.post(f"/projects/{project}/quota", {"max_gpus": "99"}).status_code == 403
    # The last owner cannot be removed; bob can.
    last = owner.post(f"/projects/{project}/members/{people['alice']}", {"role": "remove"})
    assert last.status_code == 409
    assert owner.post(f"/projects/{project}/members/{bob}", {"role": "remove"}).status_code == 303
    assert bob not in {m.user for m in admin_api.projects.members(project)}


def test_a_new_api_token_is_shown_once_and_works(alice: Browser, console) -> None:
    alice.page("/account")
    created = alice.post("/account/tokens", {"name": "ci-pipeline", "expires_in_days": "30"})
    token = re.search(r'id="new-token">([^<]+)<', created.text).group(1).strip()
    assert Client(console.url, token).whoami().name.startswith("alice-")
    listing = alice.page("/account")
    assert "ci-pipeline" in listing and token not in listing
    token_id = re.search(r'action="/account/tokens/(\d+)/revoke"', listing).group(1)
    assert alice.post(f"/account/tokens/{token_id}/revoke").status_code == 303
    bad = alice.post("/account/tokens", {"name": "", "expires_in_days": "0"})
    assert bad.status_code == 422 and bad.text.count('class="field-error" id="err-token') == 2


def test_an_administrator_creates_and_disables_users_with_reasons_for_bad_input(
    console, admin_api: Client
) -> None:
    admin = Browser(console.url)
    admin.log_in("admin", ADMIN_PASSWORD)
    admin.page("/admin/users")
    bad = admin.post("/admin/users", {"name": "Not Valid", "password": "short"})
    assert bad.status_code == 422
    errors = dict(re.findall(r'id="err-(name|password)">([^<]+)<', bad.text))
    assert set(errors) == {"name", "password"}
    assert 'value="Not Valid"' in bad.text and "short" not in bad.text  # password not echoed
    name = unique("dave")
    assert (
        admin.post("/admin/users", {"name": name, "password": "dave-password"}).status_code == 303
    )
    assert admin.post(f"/admin/users/{name}", {"action": "disable"}).status_code == 303
    assert admin_api.users.get(name).is_disabled
    events = admin.page(f"/admin/audit?target={name}")
    assert "user.create" in events and "user.update" in events


def test_the_whole_log_downloads_as_a_file_for_members_only(
    alice: Browser, console, people
) -> None:
    path = f"/jobs/{people['job']}/log.txt"
    deadline = time.monotonic() + 30
    while "second line" not in (response := alice.http.get(path)).text:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.5)
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.text == "first line\nsecond line\n"
    bob = Browser(console.url)
    bob.log_in(people["bob"], f"{people['bob']}-password")
    assert bob.http.get(path).status_code == 404


def hold_cpus(client: Client, project: str) -> int:
    """A job that runs (on a hundredth of a CPU) for as long as the module: with the
    project's quota at 1 CPU, whatever else asks for a CPU there waits, cheaply."""
    spec = {"project": project, "command": ["sleep", "3600"], "resources": {"cpus": 0.01}}
    holder = client.jobs.submit(spec).id
    deadline = time.monotonic() + 30
    while client.jobs.get(holder).state != "running":
        assert time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.2)
    return holder


def test_job_lists_page_through_more_than_a_hundred(console, admin_api: Client) -> None:
    project = unique("crowd")
    admin_api.projects.create(project)
    # Every job but the first waits for the project's CPUs, which the first holds: nothing
    # else runs here. (A quota no job fits in would refuse them at submit.)
    admin_api.projects.set_quota(project, cpus=1)
    holder = hold_cpus(admin_api, project)
    ids = [holder] + [
        admin_api.jobs.submit({"project": project, "command": ["true"], "name": f"n{i}"}).id
        for i in range(104)
    ]
    admin = Browser(console.url)
    admin.log_in("admin", ADMIN_PASSWORD)
    first = admin.page(f"/jobs?project={project}")
    assert [int(i) for i in dict.fromkeys(JOB_LINK.findall(first))] == ids[::-1][:100]
    older = re.search(r'data-test="older-jobs" href="([^"]+)"', first).group(1)
    rest = admin.page("/jobs" + older.replace("&amp;", "&"))
    assert [int(i) for i in dict.fromkeys(JOB_LINK.findall(rest))] == ids[::-1][100:]
    assert 'data-test="older-jobs"' not in rest
    assert [j.id for j in admin_api.jobs.list(project=project, before_id=ids[3])] == ids[2::-1]
    for job_id in ids:
        admin_api.jobs.cancel(job_id)


def job_form(project: str, **changes: str) -> dict[str, str]:
    """The submit form as a browser posts it, with `changes` on top."""
    return {
        "project": project,
        "mode": "command",
        "command": "true",
        "gpu_kind": "none",
        "resources.nodes": "1",
        "resources.cpus": "1",
        "resources.memory": "1Gi",
        "launcher": "none",
        "pool": "",
        "priority": "normal",
        "preemptible": "on",
        **changes,
    }


def test_the_submit_form_asks_for_nodes_a_launcher_and_a_pool(alice: Browser, people) -> None:
    form = alice.page("/jobs/new")
    assert re.search(r'name="resources.nodes" value="1"', form)
    launchers = re.search(r'<select name="launcher"[^>]*>(.*?)</select>', form, re.S).group(1)
    assert re.findall(r'<option value="([^"]*)"', launchers) == [
        "none",
        "torchrun",
        "deepspeed",
        "mpirun",
    ]
    assert re.search(r'<option value="none" selected>', launchers)
    assert "what one process runs" in form
    # This server has no pools: only the default to choose.
    pools = re.search(r'<select name="pool"[^>]*>(.*?)</select>', form, re.S).group(1)
    assert re.findall(r'<option value="([^"]*)"', pools) == [""]


def test_two_nodes_are_refused_on_one_server_and_nothing_typed_is_lost(
    alice: Browser, people
) -> None:
    alice.page("/jobs/new")
    values = job_form(people["mine"], **{"resources.nodes": "2", "launcher": "torchrun"})
    refused = alice.post("/jobs/new", values)
    assert refused.status_code == 422
    message = re.search(r'id="err-resources">([^<]+)<', refused.text).group(1)
    assert message == "2 nodes were asked for, but only 1 fit the request."
    assert 'name="resources.nodes" value="2"' in refused.text
    assert '<option value="torchrun" selected>' in refused.text
    # The check as you type says the same before any submit; the schema's own rule on the
    # field itself shows next to it.
    checked = alice.post("/jobs/check", values)
    assert "only 1 fit the request" in checked.text
    zero = alice.post("/jobs/new", job_form(people["mine"], **{"resources.nodes": "0"}))
    assert zero.status_code == 422
    assert re.search(r'id="err-resources-nodes">[^<]*1', zero.text)
    bogus = alice.post("/jobs/new", job_form(people["mine"], launcher="slurm-magic"))
    assert bogus.status_code == 422 and re.search(r'id="err-launcher">[^<]+torchrun', bogus.text)


def test_the_check_as_you_type_says_when_the_projects_quota_never_holds_it(
    alice: Browser, people, admin_api: Client
) -> None:
    """The same 422 as the submit, before any submit: two GPUs in a project capped at one."""
    project = unique("capped")
    admin_api.projects.create(project, owner=people["alice"])
    admin_api.projects.set_quota(project, max_gpus=1)
    alice.page(f"/jobs/new?project={project}")
    values = job_form(project, gpu_kind="whole", **{"resources.gpus": "2"})
    checked = alice.post("/jobs/check", values)
    assert checked.status_code == 422
    message = re.search(r"<code>resources.gpus</code>: ([^<]+)<", checked.text).group(1)
    assert "at most 1" in message and project in message
    assert alice.post("/jobs/check", job_form(project, gpu_kind="whole")).status_code == 200


def test_a_launcher_round_trips_through_yaml_and_edit_and_submit_again(
    alice: Browser, people, admin_api: Client
) -> None:
    project = unique("torch")  # a project of its own: the other tests count alice's jobs
    admin_api.projects.create(project, owner=people["alice"])
    alice.page(f"/jobs/new?project={project}")
    values = job_form(project, launcher="torchrun", name=unique("torch"))
    checked = alice.post("/jobs/check", values).text
    preview = re.search(r'data-test="yaml-preview">([^<]+)<', checked).group(1)
    assert "launcher: torchrun" in preview
    assert "nodes:" not in preview  # the default, left out as the CLI would
    submitted = alice.post("/jobs/new", values)
    assert submitted.status_code == 303, submitted.text[:2000]
    path = submitted.headers["location"]
    detail = alice.page(path)
    assert re.search(r'data-test="launcher">torchrun<', detail)
    assert re.search(r'data-test="nodes">1<', detail)
    again = alice.page(f"/jobs/new?like={path.rsplit('/', 1)[1]}")
    assert '<option value="torchrun" selected>' in again
    assert 'name="resources.nodes" value="1"' in again
    assert "launcher: torchrun" in re.search(r'data-test="yaml-preview">([^<]+)<', again).group(1)


def test_a_local_node_shows_no_cluster_engine_state(alice: Browser) -> None:
    text = alice.page("/nodes")
    assert "data-node=" in text
    assert 'data-test="engine-state"' not in text and 'data-test="pools"' not in text

"""Deployments end to end on a real server: replicas kept at N through scaling, a replica
killed from outside and replaced, a crashing template backed off, bad input, tenant
isolation, and the console and CLI on the same deployments."""

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import psutil
import pytest
from waiting import wait_for

from suanli.cli.main import main
from suanli.client import ApiError, Client
from suanli.schemas.deployments import DeploymentDetailOut
from tests.conftest import Person, RunningServer, unique

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
# A tenth of a CPU each: this machine has 2 cores and the scheduler counts them.
SMALL = {"cpus": 0.1, "memory": "64Mi"}
LIVE = ("pending", "admitted", "starting", "running")


def spec(project: str, name: str, replicas: int = 1, command: list[str] = SLEEP) -> dict:
    return {
        "project": project,
        "name": name,
        "replicas": replicas,
        "template": {"command": command, "resources": SMALL},
    }


@pytest.fixture
def made(admin: Client) -> Iterator[list[int]]:
    """Ids of the deployments a test creates: stopped at its end, whoever created them."""
    ids: list[int] = []
    yield ids
    for deployment_id in ids:
        with contextlib.suppress(ApiError):
            admin.deployments.stop(deployment_id)


def create(client: Client, made: list[int], body: dict) -> DeploymentDetailOut:
    created = client.deployments.create(body)
    made.append(created.id)
    return created


def in_state(client: Client, deployment_id: int, state: str) -> list[int]:
    return [w.id for w in client.deployments.get(deployment_id).workloads if w.state == state]


def wait_running(client: Client, deployment_id: int, count: int) -> DeploymentDetailOut:
    """Until exactly `count` replicas run and none other is on its way."""

    def settled() -> DeploymentDetailOut | None:
        found = client.deployments.get(deployment_id)
        live = [w for w in found.workloads if w.state in LIVE]
        ok = found.running == count and len(live) == count
        return found if ok else None

    return wait_for(settled, timeout=60, what=f"{count} replicas running")


def kill(replica_id: int) -> None:
    """SIGKILL a replica's own process, found as an outsider would: by its command line and
    the job id in its environment."""
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] != SLEEP:
            continue
        with contextlib.suppress(psutil.Error):
            if process.environ().get("SUANLI_JOB_ID") == str(replica_id):
                process.send_signal(signal.SIGKILL)
                return
    raise AssertionError(f"no process of replica {replica_id}")


def problem_fields(error: ApiError) -> list[str]:
    return [item.field for item in error.problem.errors]


def test_replicas_follow_scale_are_replaced_stop_and_go(
    server: RunningServer, admin: Client, made: list[int]
) -> None:
    project = unique("deploy")
    admin.projects.create(project)
    created = create(admin, made, spec(project, "web", replicas=2))
    assert created.replicas == 2 and created.state == "active"
    deployment_id = created.id
    first = wait_running(admin, deployment_id, 2)
    assert len(first.workloads) == 2

    admin.deployments.scale(deployment_id, 3)
    wait_running(admin, deployment_id, 3)

    admin.deployments.scale(deployment_id, 1)
    after = wait_running(admin, deployment_id, 1)
    stopped = [w for w in after.workloads if w.state not in LIVE]
    assert len(stopped) == 2
    assert {w.exit.reason for w in stopped if w.exit} == {"scaled_down"}
    assert all(w.exit for w in stopped)

    # Listed and shown with their counts.
    listed = {d.id: d for d in admin.deployments.list(project=project)}
    assert (listed[deployment_id].running, listed[deployment_id].replicas) == (1, 1)
    assert listed[deployment_id].failures == 0
    assert listed[deployment_id].health == "ready"

    # A replica killed from outside is replaced by a new one; the failure is counted.
    (survivor,) = in_state(admin, deployment_id, "running")
    kill(survivor)

    def replaced() -> DeploymentDetailOut | None:
        found = admin.deployments.get(deployment_id)
        fresh = [w for w in found.workloads if w.state == "running" and w.id != survivor]
        return found if fresh and found.failures == 1 else None

    found = wait_for(replaced, timeout=60, what="a replacement")
    killed = next(w for w in found.workloads if w.id == survivor)
    assert killed.state == "failed" and killed.exit.reason == "signal"
    assert max(w.id for w in found.workloads) > survivor

    # Stop: every replica ends; then the deployment can be removed.
    assert admin.deployments.stop(deployment_id).state == "stopped"
    wait_for(
        lambda: not any(w.state in LIVE for w in admin.deployments.get(deployment_id).workloads),
        timeout=60,
        what="all replicas ended",
    )
    assert admin.deployments.get(deployment_id).running == 0
    assert admin.deployments.get(deployment_id).health == "stopped"
    auth = {"Authorization": f"Bearer {admin.token}"}
    removed = httpx.delete(f"{server.url}/api/v1/deployments/{deployment_id}", headers=auth)
    assert removed.status_code == 204, removed.text
    with pytest.raises(ApiError) as gone:
        admin.deployments.get(deployment_id)
    assert gone.value.status == 404
    assert deployment_id not in {d.id for d in admin.deployments.list()}


def test_a_crashing_template_is_backed_off(admin: Client, made: list[int]) -> None:
    project = unique("deploy")
    admin.projects.create(project)
    deployment_id = create(admin, made, spec(project, "crash", command=["false"])).id
    started = time.monotonic()

    def waiting_to_retry() -> DeploymentDetailOut | None:
        found = admin.deployments.get(deployment_id)
        ahead = found.next_start_at and found.next_start_at > datetime.now(UTC)
        return found if found.failures >= 2 and ahead else None

    backing_off = wait_for(waiting_to_retry, timeout=40, what="a growing backoff")
    assert all(w.state == "failed" for w in backing_off.workloads if w.state not in LIVE)
    time.sleep(max(0.0, 12 - (time.monotonic() - started)))
    found = admin.deployments.get(deployment_id)
    # 5 s, then 10 s, then 20 s between attempts: never a tight loop.
    assert len(found.workloads) <= 4, [(w.id, w.state) for w in found.workloads]
    assert found.failures >= 2
    listed = next(d for d in admin.deployments.list(project=project) if d.id == deployment_id)
    assert listed.failures == found.failures


@pytest.mark.parametrize("replicas", [-1, 65, "2", 2.5, None])
def test_bad_replica_counts_are_refused(admin: Client, replicas: object) -> None:
    project = unique("deploy")
    admin.projects.create(project)
    body = {**spec(project, "bad"), "replicas": replicas}
    with pytest.raises(ApiError) as refused:
        admin.deployments.create(body)
    assert refused.value.status == 422
    assert "replicas" in problem_fields(refused.value)


def test_bad_deployments_are_refused(admin: Client, made: list[int]) -> None:
    project = unique("deploy")
    admin.projects.create(project)
    with pytest.raises(ApiError) as unknown:
        admin.deployments.create(spec(unique("nowhere"), "x"))
    assert unknown.value.status == 404

    create(admin, made, spec(project, "taken"))
    with pytest.raises(ApiError) as duplicate:
        admin.deployments.create(spec(project, "taken"))
    assert duplicate.value.status == 409
    assert "taken" in duplicate.value.problem.detail

    huge = spec(project, "huge")
    huge["template"]["resources"] = {**SMALL, "gpus": 64}
    with pytest.raises(ApiError) as infeasible:
        admin.deployments.create(huge)
    assert infeasible.value.status == 422
    assert any(f.endswith("resources") for f in problem_fields(infeasible.value))

    for template in ({"resources": SMALL}, {"command": [], "resources": SMALL}):
        with pytest.raises(ApiError) as nothing:
            admin.deployments.create({**spec(project, "empty"), "template": template})
        assert nothing.value.status == 422
        assert any(f.startswith("template") for f in problem_fields(nothing.value))

    # The scale's body is read by the same rules.
    taken = next(d for d in admin.deployments.list(project=project) if d.name == "taken")
    for replicas in (-1, 65, "2"):
        with pytest.raises(ApiError) as bad_scale:
            admin.request("POST", f"deployments/{taken.id}/scale", json={"replicas": replicas})
        assert bad_scale.value.status == 422
        assert "replicas" in problem_fields(bad_scale.value)
    assert admin.deployments.get(taken.id).replicas == 1


def test_other_projects_see_nothing_and_viewers_change_nothing(
    admin: Client, make_user, made: list[int]
) -> None:
    owner, stranger, viewer = make_user("owner"), make_user("stranger"), make_user("viewer")
    project = unique("deploy")
    admin.projects.create(project, owner=owner.name)
    admin.projects.add_member(project, viewer.name, "viewer")
    admin.projects.create(unique("elsewhere"), owner=stranger.name)
    mine = create(owner.client, made, spec(project, "mine")).id
    other = create(owner.client, made, spec(project, "other")).id
    replica_id = wait_for(lambda: owner.client.deployments.get(mine).workloads, what="a replica")[
        0
    ].id
    other_replica = wait_for(
        lambda: owner.client.deployments.get(other).workloads, what="a replica"
    )[0].id

    def status(person: Person, method: str, path: str, body: dict | None = None) -> int:
        try:
            person.client.request(method, path, json=body)
        except ApiError as error:
            return error.status
        return 200

    outsider_calls = [
        ("GET", f"deployments/{mine}", None),
        ("GET", f"deployments/{mine}/replicas/{replica_id}/logs", None),
        ("POST", f"deployments/{mine}/scale", {"replicas": 3}),
        ("POST", f"deployments/{mine}/stop", None),
        ("POST", f"deployments/{mine}/start", None),
        ("DELETE", f"deployments/{mine}", None),
    ]
    for method, path, body in outsider_calls:
        assert status(stranger, method, path, body) == 404, (method, path)
    assert mine not in {d.id for d in stranger.client.deployments.list()}
    # A replica of another deployment is not one of this one's.
    wrong = f"deployments/{mine}/replicas/{other_replica}/logs"
    assert status(owner, "GET", wrong) == 404
    assert status(owner, "GET", f"deployments/{mine}/replicas/{replica_id}/logs") == 200

    # A viewer of the project sees it and its logs, and changes nothing.
    assert viewer.client.deployments.get(mine).name == "mine"
    assert mine in {d.id for d in viewer.client.deployments.list()}
    assert status(viewer, "GET", f"deployments/{mine}/replicas/{replica_id}/logs") == 200
    for method, path, body in outsider_calls[2:]:
        assert status(viewer, method, path, body) == 403, (method, path)
    assert owner.client.deployments.get(mine).replicas == 1
    assert owner.client.deployments.get(mine).state == "active"


class Browser:
    """A cookie-keeping HTTP client that signs in through the console's form."""

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

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self.http.post(path, data={"csrf_token": self.csrf, **data})

    def log_in(self, person: Person) -> "Browser":
        self.page("/login")
        response = self.post("/login", {"username": person.name, "password": person.password})
        assert response.status_code == 303, response.text[:500]
        return self


def test_the_console_lists_shows_and_creates(
    server: RunningServer, admin: Client, make_user, made: list[int]
) -> None:
    owner, stranger, viewer = make_user("owner"), make_user("stranger"), make_user("viewer")
    project = unique("deploy")
    admin.projects.create(project, owner=owner.name)
    admin.projects.add_member(project, viewer.name, "viewer")
    name = unique("api")
    deployment_id = create(owner.client, made, spec(project, name)).id
    replica_id = wait_for(
        lambda: owner.client.deployments.get(deployment_id).workloads, what="a replica"
    )[0].id

    for language, word in (("en", "Deployments"), ("zh-CN", "部署")):
        browser = Browser(server.url, language).log_in(owner)
        listing = browser.page("/deployments")
        assert name in listing and word in listing
        assert 'href="/deployments"' in listing  # the navigation's entry
        detail = browser.page(f"/deployments/{deployment_id}")
        assert name in detail and f"/deployments/{deployment_id}/replicas/{replica_id}" in detail
        assert 'data-test="scale-deployment"' in detail  # its author may scale it
        assert browser.page(f"/deployments/{deployment_id}/replicas/{replica_id}")
        for page in (listing, detail):
            assert not re.search(r"\b(?:web|label|cli)\.[a-z_]+\.[a-z_.]+", page)
        browser.http.close()

    # A viewer of the project sees it, without its buttons, and changes nothing.
    looker = Browser(server.url).log_in(viewer)
    seen = looker.page(f"/deployments/{deployment_id}")
    assert name in seen and 'data-test="scale-deployment"' not in seen
    assert looker.post(f"/deployments/{deployment_id}/scale", {"replicas": "3"}).status_code == 403
    assert owner.client.deployments.get(deployment_id).replicas == 1

    outsider = Browser(server.url).log_in(stranger)
    assert name not in outsider.page("/deployments")
    outsider.page(f"/deployments/{deployment_id}", status=404)
    outsider.page(f"/deployments/{deployment_id}/replicas/{replica_id}", status=404)
    outsider.page(f"/deployments/{deployment_id}/replicas/{replica_id}/log.txt", status=404)
    refused = outsider.post(f"/deployments/{deployment_id}/stop", {})
    assert refused.status_code == 404
    assert owner.client.deployments.get(deployment_id).state == "active"

    # The create form: refused with the fields' reasons, then accepted.
    browser = Browser(server.url).log_in(owner)
    browser.page("/deployments/new")
    form = {
        "project": project,
        "name": unique("form"),
        "replicas": "65",
        "command": "",
        "gpu_kind": "none",
        "resources.cpus": "0.1",
        "resources.memory": "64Mi",
    }
    bad = browser.post("/deployments/new", form)
    assert bad.status_code == 422
    assert 'id="err-replicas">' in bad.text and 'id="err-command">' in bad.text
    form.update(replicas="1", command=" ".join(SLEEP[:2]) + " 'import time; time.sleep(600)'")
    good = browser.post("/deployments/new", form)
    assert good.status_code == 303, good.text[:2000]
    new_id = int(good.headers["location"].rsplit("/", 1)[1])
    made.append(new_id)
    shown = owner.client.deployments.get(new_id)
    assert shown.name == form["name"] and shown.template["command"] == SLEEP

    # Its buttons: scale, then stop.
    browser.page(f"/deployments/{new_id}")
    assert browser.post(f"/deployments/{new_id}/scale", {"replicas": "2"}).status_code == 303
    assert owner.client.deployments.get(new_id).replicas == 2
    assert browser.post(f"/deployments/{new_id}/scale", {"replicas": "-1"}).status_code == 422
    assert browser.post(f"/deployments/{new_id}/stop", {}).status_code == 303
    assert owner.client.deployments.get(new_id).state == "stopped"


def test_the_cli_manages_deployments(
    server: RunningServer, admin: Client, made: list[int], monkeypatch, capsys, tmp_path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SUANLI_URL", server.url)
    monkeypatch.setenv("SUANLI_TOKEN", admin.token or "")

    def cli(*args: str, language: str = "en") -> tuple[int, str, str]:
        monkeypatch.setenv("SUANLI_LANG", language)
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    project = unique("deploy")
    admin.projects.create(project)
    name = unique("cli")
    code, out, err = cli(
        "deployments",
        "create",
        "-p",
        project,
        "--name",
        name,
        "--replicas",
        "1",
        "--cpus",
        "0.1",
        "--memory",
        "64Mi",
        "--",
        *SLEEP,
    )
    assert code == 0, err
    deployment_id = next(d.id for d in admin.deployments.list(project=project) if d.name == name)
    made.append(deployment_id)
    wait_running(admin, deployment_id, 1)
    for language in ("en", "zh-CN"):
        code, out, err = cli("deployments", "list", "-p", project, language=language)
        assert code == 0 and name in out and "1/1" in out, err
        code, shown, err = cli("deployments", "show", str(deployment_id), language=language)
        assert code == 0 and name in shown and "time.sleep(600)" in shown, err
        for text in (out, shown):
            assert not re.search(r"\b(?:cli|label)\.[a-z_]+", text), text
    assert cli("deployments", "scale", str(deployment_id), "2")[0] == 0
    assert admin.deployments.get(deployment_id).replicas == 2
    replica_id = admin.deployments.get(deployment_id).workloads[-1].id
    assert cli("deployments", "logs", str(deployment_id), str(replica_id))[0] == 0
    code, _, err = cli("deployments", "scale", str(deployment_id), "65")
    assert code == 2 and "64" in err
    code, _, err = cli("deployments", "create", "-p", project, "--name", "nothing")
    assert code == 2 and "Traceback" not in err
    assert cli("deployments", "stop", str(deployment_id))[0] == 0
    assert admin.deployments.get(deployment_id).state == "stopped"
    wait_for(
        lambda: not any(w.state in LIVE for w in admin.deployments.get(deployment_id).workloads),
        timeout=60,
        what="all replicas ended",
    )
    code, out, _ = cli("deployments", "remove", str(deployment_id))
    assert code == 0 and str(deployment_id) in out

    # From a spec file, the options over it.
    file = tmp_path / "deployment.yaml"
    file.write_text(
        f"project: {project}\nname: from-file\nreplicas: 3\n"
        "template:\n  command: [sleep, '600']\n  resources: {cpus: 0.1, memory: 64Mi}\n"
    )
    code, out, err = cli("deployments", "create", "-f", str(file), "--replicas", "0", "--json")
    assert code == 0, err
    from_file = json.loads(out)
    made.append(from_file["id"])
    assert (from_file["name"], from_file["replicas"]) == ("from-file", 0)
    assert from_file["template"]["command"] == ["sleep", "600"]
    assert from_file["template"]["resources"]["memory"] == 64 * 2**20


def test_a_replica_still_waiting_ends_when_it_is_scaled_away(
    admin: Client, made: list[int]
) -> None:
    """Replicas that wait for capacity are surplus first on a scale-down, and end at once
    (they were once left waiting forever, their deployment unable to be removed)."""
    project = unique("wait")
    admin.projects.create(project)
    whole_host = {"command": SLEEP, "resources": {"cpus": float(os.cpu_count() or 1)}}
    body = {"project": project, "name": "big", "replicas": 2, "template": whole_host}
    created = create(admin, made, body)
    wait_for(lambda: in_state(admin, created.id, "pending"), 30, "a replica waiting")
    admin.deployments.scale(created.id, 0)

    def ended() -> bool:
        found = admin.deployments.get(created.id)
        return found.running + found.starting == 0 and bool(found.workloads)

    wait_for(ended, 30, "every replica ended")
    waited = [w for w in admin.deployments.get(created.id).workloads if w.started_at is None]
    assert waited and all(w.state == "cancelled" for w in waited)
    admin.deployments.stop(created.id)
    admin.deployments.remove(created.id)

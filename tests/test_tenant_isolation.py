"""Tenants do not see each other through monitoring: alerts, silences, rules, time series,
`/metrics` and who uses a GPU, in the API and the console, on a real server.

alice owns project pa and runs two jobs there: `lw-1` fails (so the shipped "Job failed"
alert fires) and `lw-2` holds a GPU. bob owns project pb only. What bob reads must name
neither alice, nor pa, nor her jobs; alice and the administrators see them.
"""

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from waiting import wait_for

from suanli.db.engine import Database
from suanli.db.models import AlertEvent, AlertRule, Job, Membership, Project, User
from suanli.monitoring import store
from suanli.monitoring.model import Sample, labels_of
from suanli.schemas.metrics import MetricQuery
from suanli.services import alerting, monitoring
from suanli.services.actor import Actor

GPUS = json.dumps([{"count": 2, "model": "A100", "memory_bytes": 80 * 2**30}])


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass
class Reader:
    """A user of the server, through the API (bearer token) and the console (its cookie)."""

    name: str
    api: httpx.Client
    console: httpx.Client


@dataclass
class World:
    url: str
    admin: Reader
    alice: Reader
    bob: Reader
    pa: str
    pb: str
    failed: dict  # lw-1, as alice's API shows it
    running: dict  # lw-2, on a GPU

    def secrets_of_pa(self) -> list[str]:
        """What names alice's tenancy: her name, her project's, her jobs'."""
        return [self.alice.name, self.pa, self.failed["name"], self.running["name"]]


def reader(url: str, name: str, password: str) -> Reader:
    login = httpx.post(f"{url}/api/v1/auth/login", json={"username": name, "password": password})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
    console = httpx.Client(base_url=url, cookies={"suanli_session": token})
    return Reader(name, api, console)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, launch_server) -> Iterator[World]:
    server = launch_server(
        tmp_path_factory.mktemp("tenants"),
        {"SUANLI_SIMULATED_GPUS": GPUS, "SUANLI_METRICS_INTERVAL_SECONDS": "1"},
    )
    admin = reader(server.url, "admin", "admin-test-password")
    alice_name, bob_name, pa, pb = unique("alice"), unique("bob"), unique("pa"), unique("pb")
    for name in (alice_name, bob_name):
        created = admin.api.post("/api/v1/users", json={"name": name, "password": f"{name}-pw"})
        assert created.status_code == 201, created.text
    for project, owner in ((pa, alice_name), (pb, bob_name)):
        created = admin.api.post("/api/v1/projects", json={"name": project, "owner": owner})
        assert created.status_code == 201, created.text
    alice = reader(server.url, alice_name, f"{alice_name}-pw")
    bob = reader(server.url, bob_name, f"{bob_name}-pw")

    def submit(person: Reader, project: str, spec: dict) -> dict:
        response = person.api.post("/api/v1/jobs", json={"project": project, **spec})
        assert response.status_code == 201, response.text
        return response.json()

    def fail(person: Reader, project: str, name: str) -> dict:
        """A job that fails, once its "Job failed" alert has fired."""
        job = submit(person, project, {"name": name, "command": ["false"]})
        wait_for(lambda: any(e["labels"].get("job") == str(job["id"]) for e in alerts(admin)), 40)
        return job

    # bob's own failures come before and after alice's: his history has hers in between.
    fail(bob, pb, "mine-1")
    failed = fail(alice, pa, "lw-1")
    fail(bob, pb, "mine-2")
    spec = {"name": "lw-2", "command": ["sleep", "600"], "resources": {"gpus": 1}}
    running = submit(alice, pa, spec)
    path = f"/api/v1/jobs/{running['id']}"
    wait_for(lambda: alice.api.get(path).json()["state"] == "running", 40)
    running = alice.api.get(f"/api/v1/jobs/{running['id']}").json()
    # An administrator silences the failed job's alert (as the console's button does) and
    # watches pa's failures with a rule of its own: both name pa.
    silenced = admin.api.post(
        "/api/v1/alerts/silences",
        json={"match": {"alertname": "Job failed", "job": str(failed["id"]), "project": pa}},
    )
    assert silenced.status_code == 201, silenced.text
    rule = {"name": f"{pa} failures", "kind": "event", "metric": "job.failed"}
    rule["match"] = {"project": pa}
    assert admin.api.post("/api/v1/alerts/rules", json=rule).status_code == 201
    yield World(server.url, admin, alice, bob, pa, pb, failed, running)
    for person in (admin, alice, bob):
        person.api.close()
        person.console.close()
    server.stop()


def alerts(person: Reader, **params: str) -> list[dict]:
    response = person.api.get("/api/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def assert_names_none(text: str, names: list[str], where: str) -> None:
    for name in names:
        assert name not in text, f"{name} in {where}"


def test_bob_sees_no_alert_silence_or_rule_of_alices_project(world: World) -> None:
    for params in ({}, {"firing": "true"}, {"limit": "1"}):
        assert_names_none(json.dumps(alerts(world.bob, **params)), world.secrets_of_pa(), "alerts")
    for path in ("/api/v1/alerts/silences", "/api/v1/alerts/rules"):
        response = world.bob.api.get(path)
        assert response.status_code == 200
        assert_names_none(response.text, world.secrets_of_pa(), path)
    # The hardware's rules stay open to him.
    assert "GPU temperature high" in world.bob.api.get("/api/v1/alerts/rules").text
    # alice and the administrators see it all.
    for person in (world.alice, world.admin):
        (event,) = [e for e in alerts(person) if e["labels"].get("job") == str(world.failed["id"])]
        assert event["rule"] == "Job failed" and event["labels"]["project"] == world.pa
        assert event["labels"]["user"] == world.alice.name
        assert event["labels"]["job_name"] == "lw-1"
        assert world.pa in person.api.get("/api/v1/alerts/silences").text
        assert f"{world.pa} failures" in person.api.get("/api/v1/alerts/rules").text


def test_the_console_alerts_page_shows_bob_nothing_of_pa(world: World) -> None:
    page = world.bob.console.get("/alerts")
    assert page.status_code == 200
    assert_names_none(page.text, world.secrets_of_pa(), "bob's /alerts")
    assert f'href="/jobs/{world.failed["id"]}"' not in page.text
    mine = world.alice.console.get("/alerts")
    assert mine.status_code == 200
    assert "lw-1" in mine.text and f'href="/jobs/{world.failed["id"]}"' in mine.text
    assert f"project={world.pa}" in mine.text  # the silence's matchers


def test_the_alert_history_pages_past_what_bob_may_not_see(world: World) -> None:
    """A page of bob's history is full of what he may see: alice's alert, between his two,
    is skipped, not counted."""
    first = alerts(world.bob, limit="1")
    assert [e["labels"]["job_name"] for e in first] == ["mine-2"]
    second = alerts(world.bob, limit="1", before_id=str(first[0]["id"]))
    assert [e["labels"]["job_name"] for e in second] == ["mine-1"]
    assert len(alerts(world.admin)) == len(alerts(world.bob)) + 1


def test_prometheus_metrics_are_for_administrators_and_their_scrape_tokens(world: World) -> None:
    job = world.running["id"]

    def scraped() -> str:
        page = world.admin.api.get("/metrics")
        assert page.status_code == 200
        return page.text if f'suanli_job_cpu_percent{{job="{job}"' in page.text else ""

    wait_for(scraped, 40)
    for person in (world.bob, world.alice):
        refused = person.api.get("/metrics")
        assert refused.status_code == 403, refused.text
        assert f'job="{job}"' not in refused.text
    # bob may not make a token for it; an administrator may, and it reads nothing else.
    asked = world.bob.api.post("/api/v1/me/tokens", json={"name": "prom", "kind": "metrics"})
    assert asked.status_code == 403, asked.text
    made = world.admin.api.post("/api/v1/me/tokens", json={"name": "prom", "kind": "metrics"})
    assert made.status_code == 201, made.text
    assert made.json()["kind"] == "metrics"
    token = made.json()["token"]
    scrape = httpx.get(f"{world.url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert scrape.status_code == 200 and f'job="{job}"' in scrape.text
    for path in ("/api/v1/me", "/api/v1/jobs", "/api/v1/alerts"):
        other = httpx.get(f"{world.url}{path}", headers={"Authorization": f"Bearer {token}"})
        assert other.status_code == 401, (path, other.text)
        assert "/metrics" in other.json()["detail"]
    page = httpx.get(f"{world.url}/", cookies={"suanli_session": token})
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    listed = world.admin.api.get("/api/v1/me/tokens").json()
    assert [t["kind"] for t in listed if t["name"] == "prom"] == ["metrics"]
    bad = world.admin.api.post("/api/v1/me/tokens", json={"name": "x", "kind": "root"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "kind"


def test_a_scrape_token_stops_reading_when_its_administrator_is_demoted(world: World) -> None:
    name = unique("ops")
    created = world.admin.api.post(
        "/api/v1/users", json={"name": name, "password": f"{name}-pw", "is_admin": True}
    )
    assert created.status_code == 201, created.text
    ops = reader(world.url, name, f"{name}-pw")
    made = ops.api.post("/api/v1/me/tokens", json={"name": "prom", "kind": "metrics"})
    assert made.status_code == 201, made.text
    headers = {"Authorization": f"Bearer {made.json()['token']}"}
    assert httpx.get(f"{world.url}/metrics", headers=headers).status_code == 200
    demoted = world.admin.api.patch(f"/api/v1/users/{name}", json={"is_admin": False})
    assert demoted.status_code == 200, demoted.text
    assert httpx.get(f"{world.url}/metrics", headers=headers).status_code == 403
    ops.api.close()
    ops.console.close()


def test_alices_job_on_a_gpu_shows_bob_neither_its_series_nor_who_holds_the_gpu(
    world: World,
) -> None:
    """lw-2's series are alice's; the GPU it holds is "in use" for bob, by nobody named."""
    job = world.running["id"]
    params = {"metric": "job_cpu_percent", "label": f"job={job}", "range": "5m"}

    def series() -> list:
        answer = world.alice.api.get("/api/v1/metrics/query", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()["series"]

    wait_for(series, 40)
    assert world.bob.api.get("/api/v1/metrics/query", params=params).status_code == 404
    chart = world.bob.console.get("/charts/query", params=params)
    assert chart.status_code == 404 and "lw-2" not in chart.text
    assert world.alice.console.get("/charts/query", params=params).json()["series"]
    # Node and GPU series are everyone's.
    power = world.bob.api.get("/api/v1/metrics/query", params={"metric": "gpu_power_watts"})
    assert power.status_code == 200 and len(power.json()["series"]) == 2

    uuid = world.running["placement"]["gpus"][0]["uuid"]

    def used_by(person: Reader) -> list[str]:
        nodes = person.api.get("/api/v1/nodes").json()
        (gpu,) = [g for n in nodes for g in n["gpus"] if g["uuid"] == uuid]
        return gpu["used_by"]

    assert used_by(world.bob) == ["another-project"]
    assert used_by(world.alice) == [f"{world.alice.name}#{job}"]
    assert used_by(world.admin) == [f"{world.alice.name}#{job}"]
    nodes = world.bob.api.get("/api/v1/nodes")
    assert_names_none(nodes.text, world.secrets_of_pa(), "bob's /api/v1/nodes")
    for path in ("/nodes", f"/gpus/{uuid}", "/"):
        page = world.bob.console.get(path)
        assert page.status_code == 200, path
        assert_names_none(page.text, world.secrets_of_pa(), f"bob's {path}")
        assert f'href="/jobs/{job}"' not in page.text
    gpu_page = world.bob.console.get(f"/gpus/{uuid}").text
    assert "another project" in gpu_page and "in use" in gpu_page
    mine = world.alice.console.get(f"/gpus/{uuid}").text
    assert f"{world.alice.name}#{job}" in mine and f'href="/jobs/{job}"' in mine


def two_tenants(session: Session) -> tuple[User, User, Project, Project]:
    """alice owning pa and bob owning pb, as rows (for the tests that need no server)."""
    alice, bob = User(name="alice", password_hash="-"), User(name="bob", password_hash="-")
    pa, pb = Project(name="pa"), Project(name="pb")
    session.add_all([alice, bob, pa, pb])
    session.flush()
    session.add_all(
        [
            Membership(project_id=pa.id, user_id=alice.id, role="owner"),
            Membership(project_id=pb.id, user_id=bob.id, role="owner"),
        ]
    )
    session.flush()
    return alice, bob, pa, pb


def test_series_of_a_gpu_process_name_its_job_only_to_those_who_may_see_it(
    migrated_database: Database,
) -> None:
    """A GPU's per-process memory carries the process's job (NVML attributes it, on real
    GPUs only): the series of another project's job is left out of the answer."""
    with migrated_database.writing() as session:
        alice, _, pa, _ = two_tenants(session)
        job = Job(name="lw-1", project_id=pa.id, user_id=alice.id, user_name="alice", spec={})
        session.add(job)
        session.flush()
        labels = {"node": "vm", "gpu": 0, "uuid": "GPU-0", "model": "A100", "simulated": 0}
        samples = [
            Sample("gpu_process_memory_bytes", labels_of({**labels, "pid": 7, "job": job.id}), 1),
            Sample("gpu_process_memory_bytes", labels_of({**labels, "pid": 8}), 2),
        ]
        store.write(session, store.SeriesIds(), samples, int(time.time()))
        session.commit()
        job_id = str(job.id)
    params = MetricQuery.model_validate({"metric": "gpu_process_memory_bytes", "range": "5m"})
    with migrated_database.reading() as session:
        for name, expected in (("alice", {"7", "8"}), ("bob", {"8"})):
            user = session.scalars(select(User).where(User.name == name)).one()
            answer = monitoring.query(session, Actor(user=user), params)
            assert {s.labels["pid"] for s in answer.series} == expected, name
            shown = [s.labels.get("job") for s in answer.series if s.labels.get("job")]
            assert shown == ([job_id] if name == "alice" else [])


def test_a_page_of_alerts_reads_past_more_hidden_ones_than_one_batch_holds(
    migrated_database: Database,
) -> None:
    """bob's two alerts with more of pa's between them than are read at a time: one page of
    two still holds both of his."""
    with migrated_database.writing() as session:
        _, bob, pa, pb = two_tenants(session)
        rule = session.scalars(select(AlertRule).where(AlertRule.name == "Job failed")).one()

        def event(project: str) -> AlertEvent:
            labels = {"project": project, "job_name": "x"}
            return AlertEvent(rule_id=rule.id, labels=labels, severity="warning")

        hidden = [event(pa.name) for _ in range(alerting.EVENT_BATCH + 5)]
        session.add_all([event(pb.name), *hidden, event(pb.name)])
        session.commit()
        shown = alerting.list_events(session, Actor(user=bob), limit=2)
        assert [e.labels["project"] for e in shown] == [pb.name, pb.name]
        assert shown[0].id - shown[1].id == len(hidden) + 1

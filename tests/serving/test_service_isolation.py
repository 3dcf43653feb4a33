"""Tenants of model services, attacked as an outsider would, on a real server with the fake
engine (tests/serving/upstream.py).

alice owns project pa and serves `chat` there, with a key, a prompt template and some usage;
bob owns pb, with a key of his own. bob sees, changes and calls nothing of pa through the API
or the gateway; a viewer of pa sees its services but changes nothing; a member deploys. And
the workload side: a job of bob's on the same host reaches the replica's port but not its
engine, because he never learns the replica's token (not from the API, not from `ps`, not
from his own environment).
"""

import functools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import RunningServer, unique
from tests.serving.helpers import (
    api,
    deploy,
    key_named,
    make_key,
    serving_server,
    usage_of,
    wait_ready,
)
from tests.waiting import wait_for

CHAT = [{"role": "user", "content": "hello there"}]
# bob's job: the replica's port without the token, then with a made-up one; then its own
# environment. One JSON line, read back from the job's log.
PROBE = """
import json, os, sys, urllib.error, urllib.request
port = int(sys.argv[1])
body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).encode()
status = {}
for name, headers in (("none", {}), ("guessed", {"Authorization": "Bearer guessed"})):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status[name] = answer.status
    except urllib.error.HTTPError as error:
        status[name] = error.code
print("PROBE " + json.dumps({"status": status, "env": dict(os.environ)}), flush=True)
"""


@dataclass
class World:
    server: RunningServer
    admin: httpx.Client
    alice: httpx.Client
    bob: httpx.Client
    viewer: httpx.Client  # of pa
    member: httpx.Client  # of pa
    tokens: dict[str, str]  # each person's bearer token, by role above
    pa: str
    pb: str
    service: dict[str, Any]  # alice's `chat` in pa, ready
    alice_key: str
    bob_key: str
    prompt: str

    def gateway(self, secret: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
        )


def person(admin: httpx.Client, server: RunningServer, prefix: str) -> tuple[httpx.Client, str]:
    name = unique(prefix)
    created = admin.post("users", json={"name": name, "password": f"{name}-pw"})
    assert created.status_code == 201, created.text
    token = server.login(name, f"{name}-pw").token
    return api(server, token), token


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[World]:
    server = serving_server(functools.partial(launch_server, tmp_path_factory.mktemp("tenancy")))
    admin = api(server)
    people = {role: person(admin, server, role) for role in ("alice", "bob", "viewer", "member")}
    clients = {role: client for role, (client, _) in people.items()}
    pa, pb = unique("pa"), unique("pb")
    for project, owner in ((pa, "alice"), (pb, "bob")):
        name = clients[owner].get("me").json()["name"]
        created = admin.post("projects", json={"name": project, "owner": name})
        assert created.status_code == 201, created.text
    for role in ("viewer", "member"):
        name = clients[role].get("me").json()["name"]
        added = admin.post(f"projects/{pa}/members", json={"user": name, "role": role})
        assert added.status_code == 201, added.text
    alice = clients["alice"]
    service = deploy(alice, pa, "chat")
    wait_ready(alice, service["id"])
    alice_key, bob_key = make_key(alice, pa), make_key(clients["bob"], pb)
    prompt = unique("greeting")
    saved = alice.post(f"projects/{pa}/prompts/{prompt}", json={"template": "Hi {who}"})
    assert saved.status_code == 201, saved.text
    world = World(
        server,
        admin,
        alice,
        clients["bob"],
        clients["viewer"],
        clients["member"],
        {role: token for role, (_, token) in people.items()},
        pa,
        pb,
        alice.get(f"services/{service['id']}").json(),
        alice_key,
        bob_key,
        prompt,
    )
    with world.gateway(alice_key) as gateway:
        called = gateway.post("/v1/chat/completions", json={"model": "chat", "messages": CHAT})
        assert called.status_code == 200, called.text
    usage_of(alice, pa, key_named(alice, pa, alice_key)["name"])
    try:
        yield world
    finally:
        for client in (admin, *clients.values()):
            client.close()
        server.stop()


def still_served(world: World) -> None:
    """alice's service answers as before: nothing bob tried changed it."""
    detail = world.alice.get(f"services/{world.service['id']}").json()
    assert detail["state"] == "active" and detail["ready"] >= 1, detail
    with world.gateway(world.alice_key) as gateway:
        called = gateway.post("/v1/chat/completions", json={"model": "chat", "messages": CHAT})
        assert called.status_code == 200, called.text


# --- the API --------------------------------------------------------------------------------


def test_bob_neither_sees_nor_changes_alices_services(world: World) -> None:
    sid = world.service["id"]
    replica = world.service["replicas_list"][0]["id"]
    listed = world.bob.get("services")
    assert listed.status_code == 200
    assert world.pa not in listed.text and all(s["project"] != world.pa for s in listed.json())
    # Filtered by pa, as for any project of nobody's he knows: nothing (as the jobs' list).
    filtered = world.bob.get("services", params={"project": world.pa})
    assert filtered.status_code == 200 and filtered.json() == [], filtered.text
    attempts = [
        ("GET", f"services/{sid}", None),
        ("PATCH", f"services/{sid}", {"args": ["--tokens", "3"]}),
        ("PATCH", f"services/{sid}", {"replicas": "0..2"}),
        ("POST", f"services/{sid}/stop", None),
        ("POST", f"services/{sid}/start", None),
        ("DELETE", f"services/{sid}", None),
        ("GET", f"services/{sid}/replicas/{replica}/logs", None),
        ("GET", f"jobs/{replica}", None),
        ("GET", f"jobs/{replica}/logs", None),
        # A service is a deployment: not through those routes either.
        ("GET", f"deployments/{sid}", None),
        ("POST", f"deployments/{sid}/scale", {"replicas": 0}),
        ("POST", f"deployments/{sid}/stop", None),
    ]
    for method, path, body in attempts:
        answer = world.bob.request(method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
        assert world.pa not in answer.text, answer.text
    spec = {"project": world.pa, "name": unique("mine"), "engine": "fake"}
    refused = world.bob.post("services", json=spec)
    assert refused.status_code == 404, refused.text
    still_served(world)


def test_bob_neither_lists_nor_revokes_alices_keys(world: World) -> None:
    key = key_named(world.alice, world.pa, world.alice_key)
    listed = world.bob.get("service-keys", params={"project": world.pa})
    assert listed.status_code == 404, listed.text
    assert key["prefix"] not in listed.text
    revoked = world.bob.delete(f"service-keys/{key['id']}")
    assert revoked.status_code == 404, revoked.text
    assert key["prefix"] not in revoked.text
    made = world.bob.post("service-keys", json={"project": world.pa, "name": unique("k")})
    assert made.status_code == 404, made.text
    assert key_named(world.alice, world.pa, world.alice_key)["revoked_at"] is None
    still_served(world)


def test_bob_reads_neither_usage_nor_prompts_of_pa(world: World) -> None:
    for path, params in (
        ("service-usage", {"project": world.pa}),
        ("service-usage", {"project": world.pa, "service": "chat", "group": "day"}),
        ("service-usage.csv", {"project": world.pa}),
        (f"projects/{world.pa}/prompts", {}),
        (f"projects/{world.pa}/prompts/{world.prompt}", {}),
    ):
        answer = world.bob.get(path, params=params)
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert "Hi {who}" not in answer.text
    saved = world.bob.post(f"projects/{world.pa}/prompts/{world.prompt}", json={"template": "x"})
    assert saved.status_code == 404, saved.text
    versions = world.alice.get(f"projects/{world.pa}/prompts/{world.prompt}").json()
    assert [v["template"] for v in versions] == ["Hi {who}"]
    # His own project's usage holds nothing of alice's calls.
    mine = world.bob.get("service-usage", params={"project": world.pb})
    assert mine.status_code == 200 and mine.json() == []


def test_bob_cannot_call_alices_model_through_the_gateway(world: World) -> None:
    body = {"model": f"{world.pa}/chat", "messages": CHAT}
    with world.gateway(world.bob_key) as by_key, world.gateway(world.tokens["bob"]) as by_token:
        refused = by_key.post("/v1/chat/completions", json=body)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "wrong_project"
        # His key's bare `chat` is pb's chat, which does not exist.
        bare = by_key.post("/v1/chat/completions", json={"model": "chat", "messages": CHAT})
        assert bare.status_code == 404, bare.text
        unknown = by_token.post("/v1/chat/completions", json=body)
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["error"]["code"] == "model_not_found"
        for client in (by_key, by_token):
            models = client.get("/v1/models")
            assert models.status_code == 200 and world.pa not in models.text, models.text
        proxied = by_key.get(f"/s/{world.pa}/chat/v1/models")
        assert proxied.status_code in (403, 404), proxied.text
        proxied = by_token.get(f"/s/{world.pa}/chat/health")
        assert proxied.status_code == 404, proxied.text
    anonymous = httpx.post(f"{world.server.url}/v1/chat/completions", json=body)
    assert anonymous.status_code == 401, anonymous.text
    assert httpx.get(f"{world.server.url}/s/{world.pa}/chat/health").status_code == 401
    # Nothing of it was metered against alice's project as hers.
    rows = world.alice.get("service-usage", params={"project": world.pa}).json()
    assert all(row["user"] != world.bob.get("me").json()["name"] for row in rows)


def test_a_viewer_of_pa_sees_its_services_but_changes_nothing(world: World) -> None:
    sid = world.service["id"]
    listed = world.viewer.get("services", params={"project": world.pa})
    assert listed.status_code == 200 and [s["id"] for s in listed.json()] == [sid]
    assert world.viewer.get(f"services/{sid}").status_code == 200
    spec = {"project": world.pa, "name": unique("v"), "engine": "fake"}
    attempts = [
        ("POST", "services", spec),
        ("PATCH", f"services/{sid}", {"args": ["--tokens", "3"]}),
        ("PATCH", f"services/{sid}", {"replicas": "2"}),
        ("POST", f"services/{sid}/stop", None),
        ("POST", f"services/{sid}/start", None),
        ("DELETE", f"services/{sid}", None),
        ("POST", "service-keys", {"project": world.pa, "name": unique("k")}),
        ("POST", f"projects/{world.pa}/prompts/{world.prompt}", {"template": "x"}),
    ]
    for method, path, body in attempts:
        answer = world.viewer.request(method, path, json=body)
        assert answer.status_code == 403, (method, path, answer.status_code, answer.text)
    assert world.viewer.get(f"projects/{world.pa}/prompts").status_code == 200
    # A service is no deployment to the deployments' routes (they would scale it past its
    # range): not found there, for anyone.
    for method, path, body in (
        ("GET", f"deployments/{sid}", None),
        ("POST", f"deployments/{sid}/scale", {"replicas": 0}),
        ("POST", f"deployments/{sid}/stop", None),
    ):
        for client in (world.viewer, world.alice):
            answer = client.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.status_code)
    # A viewer calls no service with the user's token either.
    with world.gateway(world.tokens["viewer"]) as gateway:
        called = gateway.post(
            "/v1/chat/completions", json={"model": f"{world.pa}/chat", "messages": CHAT}
        )
        assert called.status_code == 404, called.text
    still_served(world)


def test_a_member_of_pa_deploys_and_stops_a_service(world: World) -> None:
    made = deploy(world.member, world.pa, unique("mine"))
    stopped = world.member.post(f"services/{made['id']}/stop")
    assert stopped.status_code == 200, stopped.text

    def gone() -> bool:
        return world.member.delete(f"services/{made['id']}").status_code == 204

    wait_for(gone, 30, "the member's stopped service to be removed")
    assert [s["id"] for s in world.member.get("services").json()] == [world.service["id"]]


def test_only_the_author_owners_and_administrators_revoke_a_key(world: World) -> None:
    keys = [make_key(world.member, world.pa) for _ in range(3)]
    ids = [key_named(world.member, world.pa, secret)["id"] for secret in keys]
    alices = key_named(world.alice, world.pa, world.alice_key)["id"]
    # The member may not revoke alice's key; the viewer no one's; bob sees none.
    assert world.member.delete(f"service-keys/{alices}").status_code == 403
    for client in (world.viewer, world.bob):
        for key_id in (ids[0], alices):
            answer = client.delete(f"service-keys/{key_id}")
            assert answer.status_code == 404, answer.text
    # The member's own keys: she, the owner alice and an administrator revoke them.
    for client, key_id in zip((world.member, world.alice, world.admin), ids, strict=True):
        answer = client.delete(f"service-keys/{key_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["revoked_at"] is not None
    for secret in keys:
        with world.gateway(secret) as gateway:
            called = gateway.post("/v1/chat/completions", json={"model": "chat", "messages": CHAT})
            assert called.status_code == 401, called.text
    still_served(world)


# --- the workload side ----------------------------------------------------------------------


def replica_secret(world: World) -> tuple[int, int, str]:
    """The running replica of alice's service as the database holds it: id, port, token."""
    engine = create_engine(world.server.database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT id, port, token FROM jobs WHERE deployment_id = :d"
                    " AND state = 'running' AND stop_reason = '' ORDER BY id DESC"
                ),
                {"d": world.service["id"]},
            ).first()
    finally:
        engine.dispose()
    assert row is not None and row.port and row.token
    return row.id, row.port, row.token


def probe_as_bob(world: World, port: int) -> dict[str, Any]:
    """bob's job, on the same host, tries the replica's port and dumps its environment."""
    spec = {
        "project": world.pb,
        "name": unique("probe"),
        "command": [sys.executable, "-c", PROBE, str(port)],
    }
    submitted = world.bob.post("jobs", json=spec)
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]

    def ended() -> dict[str, Any] | None:
        job = world.bob.get(f"jobs/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(ended, 60, "bob's probe to end")
    log = world.bob.get(f"jobs/{job_id}/logs").json()["text"]
    assert job["state"] == "succeeded", (job, log)
    (line,) = [line for line in log.splitlines() if line.startswith("PROBE ")]
    return {**json.loads(line.removeprefix("PROBE ")), "log": log, "job": job}


def test_bobs_job_reaches_the_replicas_port_but_not_its_engine(world: World) -> None:
    _, port, token = replica_secret(world)
    # The replica answers whoever brings its token: the 401s below are its token check.
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as direct:
        body = {"model": "chat", "messages": CHAT}
        right = direct.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert right.status_code == 200, right.text
    probe = probe_as_bob(world, port)
    assert probe["status"] == {"none": 401, "guessed": 401}, probe
    assert token not in probe["log"]
    assert token not in json.dumps(probe["env"])
    assert token not in json.dumps(probe["job"])


def test_the_replicas_token_is_in_nothing_a_tenant_reads(world: World) -> None:
    replica, port, token = replica_secret(world)
    sid = world.service["id"]
    # Not in what the API shows its own project, nor an administrator.
    for client in (world.alice, world.viewer, world.admin):
        for path in (
            f"services/{sid}",
            f"services?project={world.pa}",
            f"services/{sid}/replicas/{replica}/logs",
            f"jobs?project={world.pa}",
        ):
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text)
            assert token not in answer.text, path
        # A replica is no job of the jobs' routes (404), and says nothing there either.
        for path in (f"jobs/{replica}", f"jobs/{replica}/logs"):
            assert token not in client.get(path).text, path
    # Not in any process's argument vector (`ps` shows them to every account on the node).
    served = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if "--port" in (p.info["cmdline"] or []) and str(port) in (p.info["cmdline"] or [])
    ]
    assert served, f"no process serves port {port}"
    for process in served:
        with open(f"/proc/{process.info['pid']}/cmdline", "rb") as cmdline:
            assert token.encode() not in cmdline.read()
    for process in psutil.process_iter(["cmdline"]):
        assert token not in " ".join(process.info["cmdline"] or [])

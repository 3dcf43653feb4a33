"""Every route needs a signed-in caller, except the few that are public on purpose; and no
route shows a stranger anything of a project that is not theirs."""

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from suanli.app import create_app
from suanli.config import Settings
from suanli.monitoring.model import METRICS
from suanli.web.console import is_console
from tests.serving.helpers import FAKE_ENGINE

ADMIN_PASSWORD = "admin-test-password"

PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/language"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    # tus discovery: the protocol's version and extensions, the same for everyone.
    ("OPTIONS", "/api/v1/uploads"),
    ("OPTIONS", "/api/v1/uploads/{upload_id}"),
}
# Mounted, not routed: the vendored static files (scripts and styles, no data).
PUBLIC_MOUNTS = {"/static"}
# The dev environments' proxy: its websockets check the caller themselves (tests/devenvs),
# and its HTTP side takes no CSRF token (the tools' own pages send their requests; the
# SameSite=Lax cookie and the Origin check keep other sites out).
PROXY = "/x/{env_id:int}/{tool}/{path:path}"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def routes(app):
    """Every HTTP route of the app, included routers flattened, with its full path."""
    return [r for r in iter_route_contexts(app.routes) if r.methods and r.path]


def test_every_route_but_the_public_ones_requires_authentication(app_and_database) -> None:
    app, _ = app_and_database
    client = TestClient(app)
    checked = 0
    for route in routes(app):
        if is_console(route.path):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            path = re.sub(r"\{token_id\}", "1", route.path)
            path = re.sub(r"\{[^}]+\}", "someone", path)
            response = client.request(method, path)
            if (method, route.path) in PUBLIC:
                # Public routes answer without a caller (login: 422 for the missing body).
                assert response.status_code != 401, (method, route.path)
                continue
            assert response.status_code == 401, (method, route.path, response.status_code)
            assert response.json()["type"] == "urn:suanli:problem:unauthenticated"
            checked += 1
    assert checked >= 25  # the walk really covered the API


def test_every_console_page_but_login_needs_a_session_and_every_form_a_csrf_token(
    app_and_database,
) -> None:
    """Pages send a stranger to the login page; state-changing requests without the CSRF
    token are refused before anything else, and with an anonymous one still need a session."""
    app, _ = app_and_database
    client = TestClient(app, follow_redirects=False)
    anonymous_csrf = "a" * 32
    checked = 0
    for route in routes(app):
        if not is_console(route.path) or route.path in ("/docs", PROXY):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            path = re.sub(r"\{(job_id|token_id)\}", "1", route.path)
            path = re.sub(r"\{[^}]+\}", "someone", path)
            if method == "GET":
                response = client.get(path)
                if (method, route.path) in PUBLIC:
                    assert response.status_code == 200, (method, route.path)
                    continue
                assert response.status_code == 303, (method, route.path, response.status_code)
                assert response.headers["location"].startswith("/login"), route.path
            else:
                refused = client.request(method, path, data={"language": "en"})
                assert refused.status_code == 403, (method, route.path, refused.status_code)
                # One CSRF cookie at a time: pages (the login page, the refusal's) set one of
                # their own, and two cookies of one name reach the server in an order the HTTP
                # client decides (httpx2, which Starlette's test client prefers where it is
                # installed, sends the page's one last: the server reads that one).
                client.cookies.clear()
                client.cookies.set("suanli_csrf", anonymous_csrf)
                # The token as a form field and as the header (htmx's, and the only one the
                # console's tus endpoint reads: it never reads a form from its body).
                response = client.request(
                    method,
                    path,
                    data={"csrf_token": anonymous_csrf, "language": "en"},
                    headers={"X-CSRF-Token": anonymous_csrf},
                )
                client.cookies.clear()
                if (method, route.path) in PUBLIC:
                    assert response.status_code != 403, (method, route.path)
                    continue
                assert response.status_code == 303, (method, route.path, response.status_code)
                assert response.headers["location"].startswith("/login"), route.path
            checked += 1
    assert checked >= 20  # the walk really covered the console


def test_only_static_files_are_mounted(app_and_database) -> None:
    app, _ = app_and_database
    mounts = {r.path for r in iter_route_contexts(app.routes) if not r.methods}
    assert mounts == PUBLIC_MOUNTS | {PROXY}  # the proxy's websocket route


def test_the_proxy_lets_nobody_through_anonymously_or_from_elsewhere(app_and_database) -> None:
    app, _ = app_and_database
    client = TestClient(app, follow_redirects=False)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = client.request(method, "/x/1/jupyter/api/kernels")
        assert response.status_code == 303, method  # to the login page, never to a tool
        assert response.headers["location"].startswith("/login")
        foreign = client.request(
            method, "/x/1/jupyter/api/kernels", headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == (303 if method == "GET" else 403), method


def test_the_public_list_is_not_stale(app_and_database) -> None:
    app, _ = app_and_database
    table = {(m, r.path) for r in routes(app) for m in r.methods}
    assert table >= PUBLIC


# -- what a stranger reads -----------------------------------------------------------------------

SIMULATED_GPUS = json.dumps([{"count": 2, "model": "A100", "memory_bytes": 80 * 2**30}])
# Routes of one object of the planted project: a stranger gets 404, as for nothing there.
OBJECT_ROUTE = re.compile(
    r"^(/api/v1)?/(projects/\{name\}|jobs/\{job_id\}|devenvs/\{env_id\}"
    r"|deployments/\{deployment_id\}|services/\{service_id\}|projects/\{project\}/prompts"
    r"|finetunes/\{run_id\})"
)


@dataclass
class Planted:
    """A project of someone else's, with a failed job (its alert fired), a job on a GPU, a
    waiting dev environment and a deployment with a replica; a silence and an alert rule that
    name the project; a model service with a ready replica, called through the gateway with a
    key of the project (usage), and a prompt template."""

    project: str
    owner: str
    failed: int
    running: int
    env: int
    deployment: int
    replica: int
    gpu: str
    node: str
    dataset: str  # private, with version 1 (tag prod) holding `file`, and an import
    model: str
    file: str
    import_id: int
    upload_id: str
    service: int
    service_replica: int
    service_name: str
    prompt: str
    run: int  # a fine-tuning run
    names: tuple[str, ...]  # every name a stranger must never read

    @property
    def ids(self) -> tuple[int, ...]:
        return (
            self.failed,
            self.running,
            self.env,
            self.deployment,
            self.replica,
            self.service,
            self.service_replica,
            self.run,
        )


def plant(url: str, admin: httpx.Client) -> Planted:
    project, owner = unique("secretproj"), unique("secretuser")
    failing, running_name, env_name = unique("secretjob"), unique("secretrun"), unique("secretenv")
    deployment_name = unique("secretdeploy")
    service_name, key_name = unique("secretsvc"), unique("secretkey")
    prompt = unique("secretprompt")
    created = admin.post("/api/v1/users", json={"name": owner, "password": f"{owner}-pw"})
    assert created.status_code == 201, created.text
    created = admin.post("/api/v1/projects", json={"name": project, "owner": owner})
    assert created.status_code == 201, created.text
    theirs = signed_in(url, owner, f"{owner}-pw")

    def made(path: str, body: dict) -> dict:
        response = theirs.post(path, json={"project": project, **body})
        assert response.status_code == 201, response.text
        return response.json()

    # The service first: the dev environment below waits for GPUs at the head of the queue.
    service = made("/api/v1/services", {"name": service_name, "engine": "fake"})

    def served() -> bool:
        detail = theirs.get(f"/api/v1/services/{service['id']}").json()
        return detail["ready"] > 0

    failed = made("/api/v1/jobs", {"name": failing, "command": ["false"]})
    spec = {"name": running_name, "command": ["sleep", "600"], "resources": {"gpus": 1}}
    running = made("/api/v1/jobs", spec)
    wait_for(lambda: theirs.get(f"/api/v1/jobs/{running['id']}").json()["state"] == "running")
    # Both GPUs: it waits while the job holds one.
    env = made(
        "/api/v1/devenvs", {"name": env_name, "tools": ["terminal"], "resources": {"gpus": 2}}
    )
    placement = theirs.get(f"/api/v1/jobs/{running['id']}").json()["placement"]
    template = {"command": ["sleep", "600"], "resources": {"cpus": 0.1, "memory": "64Mi"}}
    deployment = made("/api/v1/deployments", {"name": deployment_name, "template": template})

    def replicas() -> list:
        return theirs.get(f"/api/v1/deployments/{deployment['id']}").json()["workloads"]

    wait_for(replicas)
    replica = replicas()[0]["id"]

    def fired() -> bool:
        events = admin.get("/api/v1/alerts").json()
        return any(e["labels"].get("job") == str(failed["id"]) for e in events)

    wait_for(fired)
    wait_for(lambda: job_series(admin, running["id"]))
    dataset, model, file = unique("secretdata"), unique("secretmodel"), unique("secretfile")
    made("/api/v1/datasets", {"name": dataset})
    made("/api/v1/models", {"name": model})
    content = b"secret rows"
    upload, sha256 = uploaded(theirs, project, content)
    entry = {"path": file, "sha256": sha256, "size": len(content)}
    for kind, name in (("datasets", dataset), ("models", model)):
        version = theirs.post(
            f"/api/v1/{kind}/{project}/{name}/versions", json={"files": [entry], "tags": ["prod"]}
        )
        assert version.status_code == 201, version.text
    started = theirs.post(
        f"/api/v1/datasets/{project}/{dataset}/imports",
        json={"source": {"kind": "http", "url": "http://127.0.0.1:9/secret.bin"}},
    )
    assert started.status_code == 202, started.text
    match = {"alertname": "Job failed", "job": str(failed["id"]), "project": project}
    assert admin.post("/api/v1/alerts/silences", json={"match": match}).status_code == 201
    rule = {"name": unique("watch"), "kind": "event", "metric": "job.failed"}
    rule["match"] = {"project": project}
    assert admin.post("/api/v1/alerts/rules", json=rule).status_code == 201
    wait_for(served)
    key = made("/api/v1/service-keys", {"name": key_name})
    called = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": service_name, "messages": [{"role": "user", "content": "secret words"}]},
        headers={"Authorization": f"Bearer {key['key']}"},
        timeout=20,
    )
    assert called.status_code == 200, called.text

    def metered() -> list:
        return theirs.get("/api/v1/service-usage", params={"project": project}).json()

    wait_for(metered)
    saved = theirs.post(
        f"/api/v1/projects/{project}/prompts/{prompt}", json={"template": "secret {words}"}
    )
    assert saved.status_code == 201, saved.text
    service_replica = theirs.get(f"/api/v1/services/{service['id']}").json()["replicas_list"]
    run, run_name = plant_run(theirs, project)
    theirs.close()
    return Planted(
        project=project,
        owner=owner,
        failed=failed["id"],
        running=running["id"],
        env=env["id"],
        deployment=deployment["id"],
        replica=replica,
        gpu=placement["gpus"][0]["uuid"],
        node=placement["node"],
        dataset=dataset,
        model=model,
        file=file,
        import_id=started.json()["id"],
        upload_id=upload.rsplit("/", 1)[-1],
        service=service["id"],
        service_replica=service_replica[0]["id"],
        service_name=service_name,
        prompt=prompt,
        run=run,
        names=(
            project,
            owner,
            failing,
            running_name,
            env_name,
            deployment_name,
            dataset,
            file,
            service_name,
            run_name,
            key_name,
            key["prefix"],
            prompt,
        ),
    )


def uploaded(theirs: httpx.Client, project: str, content: bytes) -> tuple[str, str]:
    """`content` sent for the project in one tus upload: its address and its sha256."""
    offer = {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": str(len(content)),
        "Upload-Metadata": "project " + base64.b64encode(project.encode()).decode(),
    }
    upload = theirs.post("/api/v1/uploads", headers=offer).headers["Location"]
    sent = theirs.patch(
        upload,
        content=content,
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    return upload, sent.headers["Upload-Sha256"]


def plant_run(theirs: httpx.Client, project: str) -> tuple[int, str]:
    """A fine-tuning run of the project: a model version with only its config.json (enough
    for the checks at create) and an alpaca dataset; its trainer is not installed, so it
    fails at once, and stays an object a stranger must not see."""
    base, data, run_name = unique("secretbase"), unique("secretchat"), unique("secretft")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 1, "intermediate_size": 128,
        "vocab_size": 300,
    }  # fmt: skip
    records = [{"instruction": "say hi", "input": "", "output": "hi"}]
    for kind, name, path, content in (
        ("models", base, "config.json", json.dumps(config).encode()),
        ("datasets", data, "data.json", json.dumps(records).encode()),
    ):
        assert theirs.post(f"/api/v1/{kind}", json={"project": project, "name": name}).is_success
        _, sha256 = uploaded(theirs, project, content)
        entry = {"path": path, "sha256": sha256, "size": len(content)}
        made = theirs.post(f"/api/v1/{kind}/{project}/{name}/versions", json={"files": [entry]})
        assert made.status_code == 201, made.text
    spec = {
        "project": project,
        "name": run_name,
        "model": base,
        "datasets": [data],
        "resources": {"cpus": 0.1, "memory": "1Gi"},
    }
    created = theirs.post("/api/v1/finetunes", json=spec)
    assert created.status_code == 201, created.text
    return created.json()["id"], run_name


def signed_in(url: str, name: str, password: str) -> httpx.Client:
    login = httpx.post(f"{url}/api/v1/auth/login", json={"username": name, "password": password})
    assert login.status_code == 200, login.text
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {login.json()['token']}"}, timeout=20
    )


def job_series(client: httpx.Client, job_id: int) -> list:
    params = {"metric": "job_cpu_percent", "label": f"job={job_id}", "range": "5m"}
    return client.get("/api/v1/metrics/query", params=params).json()["series"]


def wait_for(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def path_values(path: str, planted: Planted) -> dict[str, str]:
    """The planted object each path parameter names; a route with a parameter not known here
    fails the walk until it is added (so that no new route goes unchecked)."""
    by_name = {
        "job_id": str(planted.failed),
        "env_id": str(planted.env),
        "env_id:int": str(planted.env),
        "deployment_id": str(planted.deployment),
        "replica_id": str(planted.replica),
        "uuid": planted.gpu,
        "tool": "terminal",
        "path:path": "",
        "import_id": str(planted.import_id),
        "upload_id": planted.upload_id,
        "service_id": str(planted.service),
        "run_id": str(planted.run),
    }
    if path.startswith(("/api/v1/services/", "/services/")):
        by_name["replica_id"] = str(planted.service_replica)
    if path.startswith(("/api/v1/datasets/", "/datasets/", "/api/v1/models/", "/models/")):
        model = path.startswith(("/api/v1/models/", "/models/"))
        by_name.update(
            project=planted.project,
            name=planted.model if model else planted.dataset,
            version="1",
            tag="prod",
        )
        by_name["path:path"] = planted.file
    if path.startswith("/api/v1/projects/{project}/prompts"):
        by_name.update(project=planted.project, name=planted.prompt)
    elif path.startswith(("/api/v1/users/", "/admin/users/")):
        by_name["name"] = planted.owner
    elif path.startswith(("/api/v1/nodes/", "/nodes/")):
        by_name["name"] = planted.node
    elif path.startswith(("/api/v1/projects/", "/projects/")):
        by_name["name"] = planted.project
    names = re.findall(r"\{([^}]+)\}", path)
    unknown = [name for name in names if name not in by_name]
    assert not unknown, f"{path}: say which planted object {unknown} should name"
    return {name: by_name[name] for name in names}


def queries(path: str, planted: Planted) -> list[dict[str, str]]:
    """Each route once as it is, and list routes also filtered by the planted project, its
    owner, and (the series) by every metric with and without the planted job."""
    if path in ("/api/v1/metrics/query", "/charts/query"):
        job = f"job={planted.running}"
        return [q for m in METRICS for q in ({"metric": m}, {"metric": m, "label": job})]
    if path in ("/api/v1/jobs", "/jobs", "/api/v1/devenvs", "/devenvs"):
        return [{}, {"project": planted.project}, {"user": planted.owner}]
    if path in ("/api/v1/deployments", "/deployments", "/api/v1/services", "/services"):
        return [{}, {"project": planted.project}]
    if path in ("/api/v1/service-usage", "/api/v1/service-usage.csv"):
        project = planted.project
        return [{"project": project}, {"project": project, "service": planted.service_name}]
    if path in ("/api/v1/service-keys", "/keys", "/services/new", "/playground/prompts"):
        return [{}, {"project": planted.project}]
    if path == "/playground":
        return [{}, {"model": f"{planted.project}/{planted.service_name}"}]
    if path == "/api/v1/services/{service_id}/sizing":
        return [{"rps": "1", "ttft_p95_ms": "1000"}]
    if path in ("/api/v1/datasets", "/datasets", "/api/v1/models", "/models"):
        return [{}, {"project": planted.project}, {"catalogue": "true"}]
    if path in ("/api/v1/audit", "/admin/audit"):
        return [{}, {"project": planted.project}, {"actor": planted.owner}]
    if path == "/api/v1/alerts":
        return [{}, {"firing": "true"}]
    return [{}]


def leaks(text: str, supplied: list[str], planted: Planted) -> list[str]:
    """What of the planted project a response shows, but what the request itself said (a
    404 names the project it was asked for)."""
    for value in sorted(supplied, key=len, reverse=True):
        if value:
            text = text.replace(value, "")
    found = [name for name in planted.names if name in text]
    for job_id in planted.ids:
        reference = (
            rf'"job":\s*"{job_id}"|"job_id":\s*{job_id}\b|job=(?:"|&#34;|&quot;)?{job_id}\b'
            rf"|/(?:jobs|devenvs|deployments|replicas)/{job_id}\b"
        )
        found += re.findall(reference, text)
    return found


def test_a_stranger_reads_nothing_of_another_project_on_any_route(server_factory, tmp_path) -> None:
    """A user with no project GETs every route of the API and the console, path parameters
    naming the planted project's objects: none answers with its name, its jobs' names or
    ids, its owner's name; its objects' routes answer 404."""
    server = server_factory(
        {
            "SUANLI_SIMULATED_GPUS": SIMULATED_GPUS,
            "SUANLI_METRICS_INTERVAL_SECONDS": "1",
            "SUANLI_ENGINES": json.dumps({"fake": FAKE_ENGINE}),
            "SUANLI_SERVICE_PROBE_INTERVAL_SECONDS": "0.2",
            "SUANLI_TRAINERS": json.dumps({"llamafactory": {"prefix": str(tmp_path / "none")}}),
        }
    )
    admin = signed_in(server.url, "admin", ADMIN_PASSWORD)
    planted = plant(server.url, admin)
    stranger = unique("stranger")
    created = admin.post("/api/v1/users", json={"name": stranger, "password": f"{stranger}-pw"})
    assert created.status_code == 201, created.text
    api = signed_in(server.url, stranger, f"{stranger}-pw")
    token = api.headers["Authorization"].removeprefix("Bearer ")
    console = httpx.Client(base_url=server.url, cookies={"suanli_session": token}, timeout=20)
    unused = f"sqlite:///{tmp_path / 'table.db'}"  # the route table only: never opened
    table = create_app(Settings(data_dir=tmp_path / "table", database_url=unused))
    checked = 0
    for route in routes(table):
        if "GET" not in route.methods:
            continue
        values = path_values(route.path, planted)
        path = route.path
        for name, value in values.items():
            path = path.replace(f"{{{name}}}", value)
        client = console if is_console(route.path) else api
        for params in queries(route.path, planted):
            response = client.get(path, params=params)
            shown = (route.path, params, response.status_code)
            # A page may echo its query back (the language switch's `next`), URL-encoded.
            encoded = [quote(value, safe="") for value in params.values()]
            supplied = [path, *values.values(), *params.values(), *encoded]
            assert not leaks(response.text, supplied, planted), (*shown, response.text[:2000])
            if OBJECT_ROUTE.match(route.path):
                assert response.status_code == 404, shown
            checked += 1
    assert checked > 100  # the walk really went through the routes and the series
    # The gateway (no route of the app: a middleware before it) lists and serves him nothing.
    model = f"{planted.project}/{planted.service_name}"
    listed = api.get("/v1/models")
    assert listed.status_code == 200 and not leaks(listed.text, [], planted), listed.text
    for client in (api, console):
        called = client.post("/v1/chat/completions", json={"model": model, "messages": []})
        assert called.status_code in (401, 404), called.text  # the console's: no CSRF header
        assert not leaks(called.text, [model], planted), called.text
        proxied = client.get(f"/s/{model}/health")
        assert proxied.status_code in (401, 404), proxied.text
        assert not leaks(proxied.text, [model], planted), proxied.text
    for client in (admin, api, console):
        client.close()

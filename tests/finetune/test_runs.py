"""Fine-tuning runs end to end on a real server with the real LLaMA-Factory: a LoRA
supervised run registered as a model version with its lineage, followed by its metrics; full
and freeze runs; DPO on a small preference set; a stop and a resume from the checkpoint."""

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import RunningServer
from tests.finetune.helpers import (
    PREFERENCES,
    World,
    create_run,
    push_dataset,
    spec,
    started,
    wait_registered,
    wait_run,
)
from tests.serving.helpers import FAKE_ENGINE, SMALL, make_key, wait_ready

PROJECT = "ft"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[World]:
    base = tmp_path_factory.mktemp("finetune")
    with started(
        base, launch_server, PROJECT, SUANLI_ENGINES=json.dumps({"fake": FAKE_ENGINE})
    ) as found:
        push_dataset(found.admin, PROJECT, "prefs", PREFERENCES, found.base)
        yield found


def test_lora_run_is_followed_and_registered_with_its_lineage(world: World) -> None:
    run = create_run(world.http, spec(PROJECT, name="lora-run", datasets=["chat"]))
    assert run["state"] == "pending" and run["estimate"]["fits"] is True
    assert "finetuning_type: lora" in run["yaml"] and "template: qwen" in run["yaml"]
    done = wait_run(world.http, run["id"], "succeeded")
    metrics = world.http.get(f"finetunes/{run['id']}/metrics").json()
    losses = [p["loss"] for p in metrics["points"] if p["loss"] is not None]
    assert len(losses) >= 5 and metrics["total_steps"] == metrics["current_steps"] > 0
    assert any(p["throughput"] for p in metrics["points"])
    later = world.http.get(f"finetunes/{run['id']}/metrics", params={"after": 5}).json()
    assert all(p["step"] > 5 for p in later["points"])
    done = wait_registered(world.http, run["id"])
    output = done["output"]
    assert output["ref"] == f"{PROJECT}/lora-run@1"
    version = world.http.get(f"models/{PROJECT}/lora-run/versions/1").json()
    paths = {f["path"] for f in version["files"]}
    assert {"config.json", "model.safetensors", "suanli-finetune.json"} <= paths
    assert "adapter/adapter_model.safetensors" in paths
    assert not any(p.startswith(("checkpoint", "checkpoints/")) for p in paths)
    assert f"{PROJECT}/tiny@1" in version["lineage"] and f"{PROJECT}/chat@1" in version["lineage"]
    assert done["final_metrics"].get("train_loss", 0) > 0


def test_full_and_freeze_runs(world: World) -> None:
    full = create_run(
        world.http, spec(PROJECT, datasets=["chat"], method="full", output="full-out")
    )
    freeze = create_run(
        world.http,
        spec(PROJECT, datasets=["chat"], method="freeze", freeze={"trainable_layers": 1}),
    )
    for run in (full, freeze):
        wait_run(world.http, run["id"], "succeeded")
    assert full["estimate"]["trainable_parameters"] > freeze["estimate"]["trainable_parameters"]
    # The estimate against what the run used: its processes' peak resident memory.
    usage = world.http.get(f"finetunes/{full['id']}").json()["usage"]
    measured, estimated = usage["max_rss_bytes"], full["estimate"]["per_device_bytes"]
    assert abs(estimated - measured) / measured <= 0.15, (estimated, measured)
    detail = wait_registered(world.http, full["id"])
    assert detail["output"]["ref"] == f"{PROJECT}/full-out@1"
    assert "freeze_trainable_layers: 1" in freeze["yaml"]


def test_dpo_on_a_preference_set(world: World) -> None:
    run = create_run(world.http, spec(PROJECT, datasets=["prefs"], stage="dpo"))
    assert "stage: dpo" in run["yaml"] and "pref_beta" in run["yaml"]
    wait_run(world.http, run["id"], "succeeded")
    refused = world.http.post("finetunes", json=spec(PROJECT, datasets=["chat"], stage="dpo"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "datasets.0"


def test_compare_the_base_and_the_tuned_model_then_deploy_the_result(world: World) -> None:
    run = next(r for r in world.http.get("finetunes").json() if r["name"] == "lora-run")
    ref = wait_registered(world.http, run["id"])["output"]["ref"]
    prompts = ["say cluster", "说 模型"]
    started = world.http.post(f"finetunes/{run['id']}/compare", json={"prompts": prompts})
    assert started.status_code == 201, started.text
    again = world.http.post(f"finetunes/{run['id']}/compare", json={"prompts": prompts})
    assert again.status_code == 409, again.text
    deadline = time.monotonic() + 180
    compared = started.json()
    while compared["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        compared = world.http.get(f"finetunes/{run['id']}/compare").json()
    assert compared["state"] == "succeeded", compared
    assert [a["prompt"] for a in compared["answers"]] == prompts
    assert all(
        isinstance(a["base"], str) and isinstance(a["tuned"], str) for a in compared["answers"]
    )
    # One click in the console: a service of the registered version, called through the gateway.
    body = {"project": PROJECT, "name": "tuned", "engine": "fake", "model": ref, "resources": SMALL}
    service = world.http.post("services", json=body)
    assert service.status_code == 201, service.text
    wait_ready(world.http, service.json()["id"])
    key = make_key(world.http, PROJECT)
    answer = httpx.post(
        f"{world.server.url}/v1/chat/completions",
        json={"model": "tuned", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert world.http.get(f"finetunes/{run['id']}").json()["services"] == ["tuned"]

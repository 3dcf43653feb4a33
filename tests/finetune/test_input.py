"""What a fine-tuning run refuses before it starts, each naming its field (422, nothing
created), and what a stranger and the run's own code cannot reach."""

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD, RunningServer, unique
from tests.finetune.helpers import (
    ALPACA,
    World,
    api,
    model_dir,
    push_dataset,
    push_model,
    spec,
    started,
    wait_run,
)

PROJECT = "inputs"
pytestmark = pytest.mark.timeout(600)
MARKER = "remote-code-ran"


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[World]:
    base = tmp_path_factory.mktemp("ft-input")
    with started(base, launch_server, PROJECT) as found:
        bad = [*ALPACA[:2], {"instruction": "no answer here"}]
        push_dataset(found.admin, PROJECT, "broken", bad, found.base)
        other = [{"question": "q", "answer": "a"}]
        push_dataset(found.admin, PROJECT, "other", other, found.base)
        notes = found.base / "gguf-model"
        notes.mkdir()
        (notes / "README.md").write_text("weights elsewhere")
        found.admin.models.create(PROJECT, "notes")
        found.admin.models.push(PROJECT, "notes", notes, "not a model")
        yield found


def refused(world: World, body: dict[str, Any], status: int = 422) -> dict[str, Any]:
    before = len(world.http.get("finetunes", params={"project": PROJECT}).json())
    answer = world.http.post("finetunes", json=body)
    assert answer.status_code == status, answer.text
    assert "Traceback" not in answer.text
    after = len(world.http.get("finetunes", params={"project": PROJECT}).json())
    assert after == before, "nothing is created"
    return answer.json()["errors"][0] if status == 422 else answer.json()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"training": {"learning_rate": 5}}, "training.learning_rate"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"training": {"batch_size": 0}}, "training.batch_size"),
        ({"training": {"cutoff_len": 8}}, "training.cutoff_len"),
        ({"training": {"val_size": 0.9}}, "training.val_size"),
        ({"lora": {"rank": 0}}, "lora.rank"),
        ({"lora": {"dropout": 2}}, "lora.dropout"),
        ({"method": "qlora"}, "method"),
        ({"template": "nonsense"}, "template"),
        ({"freeze": {"trainable_layers": 0}}, "freeze"),
        ({"deepspeed": {"stage": 1}}, "deepspeed.stage"),
        ({"lora": {"quantization_bit": 4}}, "lora.quantization_bit"),
        ({"training": {"compute_type": "fp16"}}, "training.compute_type"),
        ({"deepspeed": {"stage": 3}}, "deepspeed.stage"),
        ({"builtin_datasets": ["identity"]}, "identity"),
        ({"builtin_datasets": ["nope"]}, "builtin_datasets.0"),
        ({"builtin_datasets": ["dpo_demo"]}, "builtin_datasets.0"),
        ({"freeze": {"trainable_layers": 9}, "method": "freeze"}, "freeze.trainable_layers"),
        ({"model": "notes"}, "model"),
        ({"resources": {"memory": "64Mi"}}, "resources.memory"),
        ({"trainer": "other"}, "trainer"),
    ],
)
def test_bad_input_names_its_field(world: World, fields: dict, field: str) -> None:
    body = spec(PROJECT, datasets=["chat"])
    body.update(
        {k: ({**body[k], **v} if isinstance(body.get(k), dict) else v) for k, v in fields.items()}
    )
    error = refused(world, body)
    assert error["field"] == field, error


def test_no_dataset_is_refused(world: World) -> None:
    error = refused(world, spec(PROJECT))
    assert "dataset" in error["message"]


def test_a_dataset_whose_columns_do_not_match_is_refused_naming_the_record(world: World) -> None:
    error = refused(world, spec(PROJECT, datasets=["broken"]))
    assert error["field"] == "datasets.0" and "3" in error["message"], error
    error = refused(world, spec(PROJECT, datasets=["chat", "other"]))
    assert error["field"] == "datasets.1", error
    assert "question" in error["message"] or "answer" in error["message"], error


def test_a_run_that_will_not_fit_says_so_before_it_starts(world: World) -> None:
    body = spec(PROJECT, datasets=["chat"], resources={"memory": "64Mi"})
    estimate = world.http.post("finetune-estimates", json=body).json()
    assert estimate["fits"] is False and estimate["warning"], estimate
    assert set(estimate["parts"]) == {
        "weights",
        "gradients",
        "optimizer",
        "activations",
        "overhead",
    }
    error = refused(world, body)
    assert "GiB" in error["message"]
    fits = world.http.post("finetune-estimates", json=spec(PROJECT, datasets=["chat"])).json()
    assert fits["fits"] is True and not fits["warning"]
    chinese = world.http.post(
        "finetune-estimates", json=body, headers={"Accept-Language": "zh-CN"}
    ).json()
    assert "内存" in chinese["warning"] or "GiB" in chinese["warning"]


def test_a_stranger_sees_no_run_and_a_member_cannot_resume_a_pending_one(world: World) -> None:
    answer = world.http.post("finetunes", json=spec(PROJECT, datasets=["chat"]))
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["id"]
    world.http.post(f"finetunes/{run_id}/stop").raise_for_status()
    name = unique("stranger")
    world.admin.users.create(name, ADMIN_PASSWORD)
    stranger = api(world.server, world.server.login(name, ADMIN_PASSWORD).token)
    for method, path, body in [
        ("GET", f"finetunes/{run_id}", None),
        ("GET", f"finetunes/{run_id}/metrics", None),
        ("GET", f"finetunes/{run_id}/log", None),
        ("GET", f"finetunes/{run_id}/compare", None),
        ("POST", f"finetunes/{run_id}/stop", None),
        ("POST", f"finetunes/{run_id}/resume", None),
        ("POST", f"finetunes/{run_id}/compare", {"prompts": ["hi"]}),
    ]:
        answer = stranger.request(method, path, json=body)
        assert answer.status_code == 404, (path, answer.text)
    assert stranger.get("finetunes").json() == []
    assert stranger.post("finetunes", json=spec(PROJECT, datasets=["chat"])).status_code in (
        403,
        404,
    )
    estimate = stranger.post("finetune-estimates", json=spec(PROJECT, datasets=["chat"]))
    assert estimate.status_code in (403, 404)


def test_the_models_own_code_is_never_run(world: World) -> None:
    """A model version may carry Python (`auto_map`, remote code): Suanli asks LLaMA-Factory
    never to trust it, so the run cannot be made to execute it by its model."""
    folder = world.base / "remote-code"
    folder.mkdir()
    for item in model_dir(world.base).iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    marker = world.base / MARKER
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    push_model(world.admin, PROJECT, "remote", folder)
    body = spec(PROJECT, model="remote", datasets=["chat"], retries=0)
    run = world.http.post("finetunes", json=body)
    assert run.status_code == 201, run.text
    wait_run(world.http, run.json()["id"], "succeeded", "failed")
    assert not marker.exists()

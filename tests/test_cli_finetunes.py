"""`suanli finetune` end to end: the real CLI against a real server on loopback whose trainer
is the real LLaMA-Factory of scripts/engine-llamafactory, on a tiny model. A run created from
a YAML file and followed to its registered model; a second run listed, shown, stopped and
resumed from its checkpoint; the memory estimate; a bad file answered in one line; and
another project's run hidden from a non-member. Two training runs in all (two cores)."""

import functools
import io
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from suanli.cli.main import main
from suanli.client.client import Client
from tests.conftest import RunningServer, unique
from tests.finetune.helpers import (
    ALPACA,
    finetune_server,
    model_dir,
    push_dataset,
    push_model,
    spec,
)

PROJECT = "ftcli"
Cli = Callable[..., tuple[int, str, str]]
pytestmark = pytest.mark.timeout(600)


@dataclass
class World:
    server: RunningServer
    admin: Client


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[World]:
    base = tmp_path_factory.mktemp("finetune-cli")
    server = finetune_server(functools.partial(launch_server, base))
    admin = server.login()
    try:
        admin.projects.create(PROJECT)
        push_model(admin, PROJECT, "tiny", model_dir(base))
        push_dataset(admin, PROJECT, "chat", ALPACA, base)
        yield World(server, admin)
    finally:
        admin.close()
        server.stop()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, world: World) -> Cli:
    """Run `suanli ARGS` in-process (as the administrator unless `token` says who); returns
    (exit code, stdout, stderr) and fails the test on any traceback."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SUANLI_URL", world.server.url)
    for variable in ("SUANLI_LANG", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")

    def run(*args: str, token: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        monkeypatch.setenv("SUANLI_TOKEN", token or world.admin.token or "")
        code = main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def spec_file(folder: Path, **fields: Any) -> Path:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(spec(PROJECT, datasets=["chat"], **fields), allow_unicode=True))
    return path


def shown(cli: Cli, run_id: int) -> dict[str, Any]:
    code, out, err = cli("finetune", "show", run_id, "--json")
    assert code == 0, err
    return json.loads(out)


def test_create_from_a_file_and_follow_it_to_its_model(cli: Cli, tmp_path: Path) -> None:
    path = spec_file(tmp_path, name="cli-lora")
    code, out, err = cli("finetune", "create", "-f", path, "--follow")
    assert code == 0, out + err
    assert "Fine-tuning run " in out and "(cli-lora) submitted" in out
    progress = [line for line in err.splitlines() if line.startswith("step ")]
    assert progress, err
    last = progress[-1]
    assert "loss " in last and "tokens/s" in last and " left" in last, last
    assert "loss -" not in last and "lr -" not in last, last
    assert f"succeeded: its model is {PROJECT}/cli-lora@1." in out

    run_id = int(out.split("Fine-tuning run ", 1)[1].split()[0])
    code, out, err = cli("finetune", "show", run_id, "--yaml")
    assert code == 0, err
    assert f"{PROJECT}/cli-lora@1" in out and "train_loss" in out
    assert "LLaMA-Factory configuration:" in out and "finetuning_type: lora" in out


def test_list_show_metrics_stop_and_resume_a_second_run(cli: Cli, tmp_path: Path) -> None:
    # Long enough to be stopped after a checkpoint (every 5 steps) and before its end.
    path = spec_file(tmp_path, name="cli-long", training={"epochs": 8.0})
    code, out, err = cli("finetune", "create", "-f", path, "--json")
    assert code == 0, err
    run_id = json.loads(out)["id"]

    code, out, err = cli("finetune", "list", "--project", PROJECT, "--state", "active")
    assert code == 0, err
    row = next(line for line in out.splitlines() if "cli-long" in line)
    assert str(run_id) in row and "sft lora" in row and f"{PROJECT}/tiny@1" in row

    deadline = time.monotonic() + 240
    while (current := shown(cli, run_id)).get("progress") is None or (
        current["progress"]["current_steps"] < 7
    ):
        assert current["state"] in ("pending", "admitted", "starting", "running"), current
        assert time.monotonic() < deadline, current
        time.sleep(0.5)
    code, out, err = cli("finetune", "stop", run_id)
    assert code == 0, err
    assert f"run {run_id}" in out and f"suanli finetune resume {run_id}" in out
    while (current := shown(cli, run_id))["state"] != "cancelled":
        assert time.monotonic() < deadline, current
        time.sleep(0.5)
    stopped_at = current["progress"]["current_steps"]
    assert 0 < stopped_at < current["progress"]["total_steps"]

    code, out, err = cli("finetune", "list", "--project", PROJECT, "--state", "finished")
    assert code == 0, err
    assert "cli-long" in out and "cancelled" in out

    code, out, err = cli("finetune", "resume", run_id, "--follow")
    assert code == 0, out + err
    assert f"Run {run_id} is queued again" in out
    assert f"succeeded: its model is {PROJECT}/cli-long@1." in out
    resumed = [line for line in err.splitlines() if line.startswith("step ")]
    assert resumed and not any(line.startswith("step 1/") for line in resumed), err

    code, out, err = cli("finetune", "metrics", run_id)
    assert code == 0, err
    header, *rows = [line for line in out.splitlines() if line.strip()]
    assert "Step" in header and "Loss" in header and "Learning rate" in header
    assert "Step " in rows[-1] and "(100%)" in rows[-1]
    code, out, err = cli("finetune", "metrics", run_id, "--json", "--after", stopped_at)
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["points"] and all(p["step"] > stopped_at for p in metrics["points"])
    assert metrics["current_steps"] == metrics["total_steps"]

    code, out, err = cli("finetune", "show", run_id)
    assert code == 0, err
    assert "cli-long" in out and f"{PROJECT}/cli-long@1" in out and "succeeded" in out
    assert "Resumed" in out or "resumed" in out


def test_estimate_says_what_fits_and_what_would(cli: Cli, tmp_path: Path) -> None:
    code, out, err = cli("finetune", "estimate", "-f", spec_file(tmp_path))
    assert code == 0, err
    assert "Memory per device" in out and "Fits" in out and "yes" in out
    assert "weights" in out and "optimiser states" in out and "activations" in out

    big = spec_file(
        tmp_path,
        training={"batch_size": 64, "cutoff_len": 2048},
        resources={"memory": "2Gi"},
    )
    code, out, err = cli("finetune", "estimate", "-f", big)
    assert code == 0, err
    assert "no" in out.split("Fits", 1)[1].splitlines()[0]
    assert "the run would run out of memory" in err and "It fits with:" in err
    assert "training.batch_size" in err
    code, out, err = cli("finetune", "estimate", "-f", big, "--json")
    assert json.loads(out)["fits"] is False


def test_a_bad_file_names_the_field_in_one_line(cli: Cli, tmp_path: Path) -> None:
    """Under the usual heading of invalid input (as every command says it)."""
    path = spec_file(tmp_path, training={"learning_rate": 5})
    code, out, err = cli("finetune", "create", "-f", path)
    assert code == 1 and out == ""
    named = [line for line in err.splitlines() if "training.learning_rate" in line]
    assert named == ["  • training.learning_rate: Must be at most 1.0."], err
    assert len(err.strip().splitlines()) == 2, err
    code, out, err = cli("finetune", "create", "-f", path, "--json")
    assert code == 1 and json.loads(err)["error"]["errors"][0]["field"] == "training.learning_rate"
    code, out, err = cli("finetune", "list", "--project", PROJECT)
    assert code == 0 and "learning_rate" not in out, err

    broken = tmp_path / "broken.yaml"
    broken.write_text("project: [unclosed\n")
    code, out, err = cli("finetune", "create", "-f", broken)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "not a valid fine-tuning spec" in err, err


def test_another_projects_run_is_not_found_for_a_non_member(
    cli: Cli, world: World, tmp_path: Path
) -> None:
    code, out, err = cli("finetune", "list", "--project", PROJECT, "--json")
    assert code == 0, err
    run_id = json.loads(out)[0]["id"]
    name, password = unique("outsider"), "password-outsider-1"
    world.admin.users.create(name, password)
    outsider = world.server.login(name, password)
    try:
        code, out, err = cli("finetune", "show", run_id, token=outsider.token)
        assert code == 1 and out == ""
        assert f"There is no fine-tuning run {run_id} you may see." in err
        assert PROJECT not in err and "cli-" not in err
        code, out, err = cli("finetune", "list", "--json", token=outsider.token)
        assert code == 0 and json.loads(out) == []
    finally:
        outsider.close()

"""A fine-tuning run's life beyond a clean finish: stopped and resumed from its last
checkpoint (not from zero), killed and retried from its checkpoint, stopped when its loss is
NaN, failed by a full disk and resumed from its last whole checkpoint, and an output that
links to the server's files is not registered."""

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer
from tests.finetune.helpers import (
    World,
    create_run,
    nan_model_dir,
    push_model,
    spec,
    started,
    wait_progress,
    wait_run,
)

PROJECT = "life"
pytestmark = pytest.mark.timeout(600)
# Long enough to be caught in the middle: 8 epochs of 12 steps, a checkpoint every 5.
LONG = {"training": {"epochs": 8.0, "save_steps": 5}}


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[World]:
    base = tmp_path_factory.mktemp("lifecycle")
    with started(base, launch_server, PROJECT) as found:
        push_model(found.admin, PROJECT, "broken", nan_model_dir(found.base))
        yield found


def output_folder(world: World, run_id: int) -> Path:
    return world.server.data_dir.parent / "work" / str(run_id) / "output"


def test_stop_then_resume_continues_from_the_last_checkpoint(world: World) -> None:
    run = create_run(world.http, spec(PROJECT, datasets=["chat"], **LONG))
    wait_progress(world.http, run["id"], 12)
    world.http.post(f"finetunes/{run['id']}/stop").raise_for_status()
    stopped = wait_run(world.http, run["id"], "cancelled")
    assert stopped["exit"]["reason"] == "cancelled"
    checkpoints = sorted(p.name for p in output_folder(world, run["id"]).glob("checkpoint-*"))
    assert checkpoints, "a checkpoint was written before the stop"
    answer = world.http.post(f"finetunes/{run['id']}/resume")
    assert answer.status_code == 200, answer.text
    done = wait_run(world.http, run["id"], "succeeded")
    log = world.http.get(f"finetunes/{run['id']}/log").json()["text"]
    assert "Resuming training from" in log and "/output/checkpoint-" in log
    assert any("Resumed by admin" in event["detail"] for event in done["history"])
    again = world.http.post(f"finetunes/{run['id']}/resume")
    assert again.status_code == 409, again.text


def test_a_killed_attempt_is_retried_from_its_checkpoint(world: World) -> None:
    run = create_run(world.http, spec(PROJECT, datasets=["chat"], **LONG))
    wait_progress(world.http, run["id"], 12)
    for pid in trainer_pids(run["id"]):
        os.kill(pid, signal.SIGKILL)
    done = wait_run(world.http, run["id"], "succeeded")
    assert done["attempts"] == 2
    log = world.http.get(f"finetunes/{run['id']}/log").json()["text"]
    assert "Resuming training from" in log


def trainer_pids(run_id: int) -> list[int]:
    """The run's LLaMA-Factory processes (those working in its folder)."""
    found = subprocess.run(
        ["pgrep", "-f", "llamafactory-cli train"], capture_output=True, text=True
    ).stdout.split()
    mine = [int(pid) for pid in found if _cwd(pid).endswith(f"/work/{run_id}")]
    assert mine, "the run's trainer process"
    return mine


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def test_a_run_whose_loss_is_nan_is_stopped_as_diverged(world: World) -> None:
    run = create_run(world.http, spec(PROJECT, model="broken", datasets=["chat"], **LONG))
    done = wait_run(world.http, run["id"], "cancelled")
    assert done["exit"]["reason"] == "diverged"
    assert "NaN" in done["exit"]["message"]
    assert done["progress"]["total_steps"] > done["progress"]["current_steps"]
    assert done["output"] is None


def test_an_output_linking_to_the_servers_files_is_not_registered(world: World) -> None:
    run = create_run(
        world.http, spec(PROJECT, datasets=["chat"], method="full", output="leak", **LONG)
    )
    wait_progress(world.http, run["id"], 2)
    database = world.server.data_dir.parent / "suanli.db"
    (output_folder(world, run["id"]) / "leak.db").symlink_to(database)
    wait_run(world.http, run["id"], "succeeded")
    deadline = time.monotonic() + 30
    detail: dict = {}
    while time.monotonic() < deadline:
        detail = world.http.get(f"finetunes/{run['id']}").json()
        if detail["registration"] != "none":
            break
        time.sleep(0.3)
    assert detail["registration"] == "failed" and detail["output"] is None
    assert "leak.db" in detail["registration_error"]
    assert world.http.get(f"models/{PROJECT}/leak").status_code == 404


def test_a_full_disk_fails_the_run_saying_so_and_the_earlier_checkpoints_stay_usable(
    world: World,
) -> None:
    """The next checkpoint's folder is a 16 KiB file system: saving it fills the disk. The run
    fails with that reason; resumed once there is room, it sets the half-written checkpoint
    aside and continues from the last whole one."""
    body = spec(PROJECT, datasets=["chat"], retries=0, **LONG)
    run = create_run(world.http, body)
    output = output_folder(world, run["id"])
    wait_progress(world.http, run["id"], 6)
    small = output / "checkpoint-50"  # some seconds ahead of the run
    small.mkdir(exist_ok=True)
    # In the run's own mount namespace (the local backend gives each workload one): the
    # small file system dies with it, and an empty folder is left, as after a failed write.
    trainer = trainer_pids(run["id"])[0]
    mount = ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(small)]
    subprocess.run(["nsenter", f"--target={trainer}", "--mount", *mount], check=True)
    wait_run(world.http, run["id"], "failed")
    deadline, failed = time.monotonic() + 15, {}
    while time.monotonic() < deadline:
        failed = world.http.get(f"finetunes/{run['id']}").json()
        if any("disk was full" in event["detail"] for event in failed["history"]):
            break
        time.sleep(0.3)
    assert "disk full" in failed["exit"]["detail"], failed["exit"]
    assert any("disk was full" in event["detail"] for event in failed["history"]), failed
    assert (output / "checkpoint-45" / "trainer_state.json").exists()
    assert world.http.post(f"finetunes/{run['id']}/resume").status_code == 200
    wait_run(world.http, run["id"], "succeeded")
    log = world.http.get(f"finetunes/{run['id']}/log").json()["text"]
    assert "checkpoint-50: it was not written to the end" in log
    assert "Resuming training from" in log and "output/checkpoint-45." in log

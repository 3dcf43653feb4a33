"""A preemptible fine-tuning run that a higher-priority job preempts starts again from its
last checkpoint, not from zero, once the GPU is free again (simulated GPUs: the training
itself runs on the CPU; the scheduler's decisions are the ones a GPU server gets)."""

import functools
import json
from collections.abc import Callable

import pytest

from tests.conftest import RunningServer
from tests.finetune.helpers import (
    ALPACA,
    api,
    create_run,
    finetune_server,
    model_dir,
    push_dataset,
    push_model,
    spec,
    wait_progress,
    wait_run,
)

pytestmark = pytest.mark.timeout(600)
GPUS = json.dumps([{"count": 1, "model": "A100", "memory_bytes": 80 * 2**30}])


def test_a_preempted_run_continues_from_its_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> None:
    base = tmp_path_factory.mktemp("preemption")
    server = finetune_server(functools.partial(launch_server, base), SUANLI_SIMULATED_GPUS=GPUS)
    admin = server.login()
    http = api(server, admin.token)
    try:
        admin.projects.create("research")  # borrows the GPU: nothing guaranteed
        admin.projects.set_quota("research", guaranteed_gpus=0, max_gpus=None)
        admin.projects.create("urgent")
        admin.projects.set_quota("urgent", guaranteed_gpus=1)
        push_model(admin, "research", "tiny", model_dir(base))
        push_dataset(admin, "research", "chat", ALPACA, base)
        body = spec(
            "research",
            datasets=["chat"],
            training={"epochs": 8.0, "save_steps": 5},
            resources={"gpus": 1, "cpus": 1.0, "memory": "3Gi"},
        )
        run = create_run(http, body)
        wait_progress(http, run["id"], 12)
        urgent = admin.jobs.submit(
            {
                "project": "urgent",
                "command": ["sleep", "3"],
                "priority": "high",
                "resources": {"gpus": 1, "cpus": 0.1, "memory": "64Mi"},
            }
        )
        done = wait_run(http, run["id"], "succeeded", timeout=420)
        assert admin.jobs.get(urgent.id).state == "succeeded"
        history = " | ".join(event["detail"] for event in done["history"])
        assert f"job {urgent.id}" in history, history
        assert done["attempts"] == 2, history
        log = http.get(f"finetunes/{run['id']}/log").json()["text"]
        assert "Resuming training from" in log and "/output/checkpoint-" in log
    finally:
        http.close()
        admin.close()
        server.stop()

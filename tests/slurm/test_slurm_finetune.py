"""A fine-tuning run on two nodes of the real Slurm cluster of scripts/slurm: one command in
the form or the spec (`resources.nodes: 2`), Slurm places it, each node starts LLaMA-Factory,
which starts torchrun with the rendezvous Suanli set (NNODES, NODE_RANK, MASTER_ADDR,
MASTER_PORT), and the two ranks train one model together (CPU, gloo). The run's user is a
mapped Unix account; the model and the dataset are links to the stored blobs in its folder."""

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slurmcluster import running_cluster
from test_slurm_backend import ALICE, _unix_user, slurm_env

from tests.finetune.helpers import (
    ALPACA,
    TRAINER_PREFIX,
    api,
    model_dir,
    push_dataset,
    push_model,
    spec,
    trainers,
    wait_registered,
    wait_run,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def suanli(launch_server) -> Iterator[Any]:
    _unix_user(ALICE)
    with running_cluster() as cluster:
        base = Path(tempfile.mkdtemp(prefix="suanli-finetune-on-slurm-", dir="/tmp"))
        base.chmod(0o755)
        env = {
            **slurm_env(cluster, base, {"admin": ALICE}),
            "SUANLI_TRAINERS": json.dumps(trainers(TRAINER_PREFIX)),
            "SUANLI_FINETUNE_WATCH_INTERVAL_SECONDS": "0.5",
        }
        server = launch_server(base, env)
        try:
            admin = server.login()
            admin.projects.create("hpc")
            push_model(admin, "hpc", "tiny", model_dir(base))
            push_dataset(admin, "hpc", "chat", ALPACA, base)
            yield server, admin, base
        finally:
            server.stop()
            subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_two_node_run_trains_one_model_with_both_nodes(suanli) -> None:
    server, admin, _ = suanli
    http = api(server, admin.token)
    body = spec("hpc", datasets=["chat"], resources={"nodes": 2, "cpus": 1.0, "memory": "3Gi"})
    created = http.post("finetunes", json=body)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    done = wait_run(http, run_id, "succeeded", timeout=420)
    log = http.get(f"finetunes/{run_id}/log").json()["text"]
    assert "Multi-node training enabled: num nodes: 2" in log, log[-4000:]
    assert "world size: 2" in log and "distributed training: True" in log, log[-4000:]
    assert done["nodes"] == 2
    job = http.get(f"jobs/{run_id}")
    assert job.status_code == 404  # a run is not a plain job: its own routes show it
    assert wait_registered(http, run_id)["output"]["ref"].startswith("hpc/")

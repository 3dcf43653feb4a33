"""Stored specs are read tolerantly, and one that cannot be read fails alone: the rest of
the queue still schedules. The rows are changed in the database while the server is down,
as a hand edit or a downgrade would leave them; the next server must not stall on them."""

import json
import sys

from sqlalchemy import update
from waiting import wait_for

from suanli.client import Client
from suanli.db.engine import Database
from suanli.db.models import Job

GPUS = json.dumps([{"count": 2, "model": "A100", "memory_bytes": 80 * 2**30}])
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def job(command: list[str], gpus: int = 1) -> dict:
    return {
        "project": "p",
        "command": command,
        "resources": {"gpus": gpus, "cpus": 0.1, "memory": "256Mi"},
    }


def test_an_unreadable_row_fails_alone_and_the_queue_goes_on(server_factory) -> None:
    first = server_factory({"SUANLI_SIMULATED_GPUS": GPUS})
    admin = first.login()
    admin.projects.create("p")
    admin.projects.set_quota("p", max_gpus=1)
    blocker = admin.jobs.submit(job(SLEEP)).id
    wait_for(lambda: admin.jobs.get(blocker).state == "running", what="blocker running")
    # Waiting for the project's one GPU: pending, each with its request kept.
    bad_request, old_row, bad_kind, bad_spec = (
        admin.jobs.submit(job(["true"])).id for _ in range(4)
    )
    wait_for(lambda: admin.jobs.get(bad_spec).pending is not None, what="pending reason")
    token = admin.token
    first.stop()  # its workloads end with it; the rows stay

    with Database(first.database_url).writing() as session:
        edits = {
            bad_request: {"request": {"gpus": "lots"}},
            old_row: {"request": None},  # from before requests were kept: derived
            bad_kind: {"kind": "mystery"},
            bad_spec: {"request": None, "spec": {"project": "p", "command": "not a list"}},
        }
        for job_id, values in edits.items():
            session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()

    second = server_factory({"SUANLI_SIMULATED_GPUS": GPUS})
    with Client(second.url, token) as client:
        for job_id in (bad_request, bad_spec):
            failed = wait_for(
                lambda job_id=job_id: (j := client.jobs.get(job_id)).state == "failed" and j,
                what=f"job {job_id} failed",
            )
            assert failed.exit.reason == "unreadable"
            assert "request" in failed.exit.detail or "command" in failed.exit.detail
        # The old row scheduled as it always did, from its spec.
        done = wait_for(
            lambda: (j := client.jobs.get(old_row)).state == "succeeded" and j, what="old row"
        )
        assert done.attempts == 1
        # A new submit runs as usual: scheduling did not stall.
        fresh = client.jobs.submit(job(["true"])).id
        wait_for(lambda: client.jobs.get(fresh).state == "succeeded", what="new job")
    with Database(first.database_url).reading() as session:
        row = session.get(Job, bad_kind)
        assert row is not None and row.state == "failed" and row.exit_reason == "unreadable"
        assert "mystery" in row.exit_detail
        kept = session.get(Job, old_row)
        assert kept is not None and kept.request is not None and kept.request["gpus"] == 1

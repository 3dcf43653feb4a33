"""A server killed at every step of launching jobs restarts into a consistent state.

The invariant: at every moment each process a workload started is tracked by exactly one
active row, a GPU held whole has one holder, and no job runs twice. Before, a server killed
after the backend had started a job but before its handle was recorded found the row
`starting` without a handle, declared the job lost while it ran on, and gave its GPU to the
next job. The server kills itself here (`SUANLI_FAULT_KILL_AT`, suanli/faults.py) at the
chosen step with several jobs in flight, and the invariant is checked after each restart.
"""

import json
import signal
from collections import Counter
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import pytest
from waiting import wait_for

from suanli.client import ApiError, Client

if TYPE_CHECKING:  # the root conftest's; not importable by name from here
    from tests.conftest import RunningServer

GPUS = json.dumps([{"count": 4, "model": "Sim-80GB", "memory_bytes": 80 * 2**30}])
JOBS_PER_ROUND = 4
# Every step of a launch, in order: the controller's, then the local backend's inside it.
KILL_POINTS = [
    "launch.marked_starting:1",  # rows `starting`, nothing started
    "local.planned:1",  # the first job's plan written, its wrapper not started
    "local.wrapper_started:1",  # the first job's wrapper runs, no handle.json yet
    "local.wrapper_started:3",  # two launched with handles, the third without
    "launch.launched_one:2",  # two launched, the others not yet
    "launch.recorded:1",  # every handle recorded
]


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def submit_round(client: Client, project: str, markers: Path) -> list[int]:
    """Submit a round of 1-GPU jobs; those the dying server still answered."""
    submitted = []
    for _ in range(JOBS_PER_ROUND):
        script = f'echo "$$" >> {markers}/$SUANLI_JOB_ID; sleep 3'
        try:
            spec = {"project": project, "script": script, "resources": {"gpus": 1}}
            job = client.jobs.submit(spec)
        except (ApiError, httpx.TransportError):
            break  # the server killed itself meanwhile
        submitted.append(job.id)
    return submitted


def wrappers(data_dir: Path) -> Counter[int]:
    """Live wrapper processes of this server's jobs, counted per job id."""
    prefix = str((data_dir / "jobs").resolve()) + "/"
    found: Counter[int] = Counter()
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        command = process.info["cmdline"] or []
        if "suanli.backends.local.wrapper" not in command:
            continue
        for arg in command:
            if arg.startswith(prefix):
                found[int(arg[len(prefix) :].split("/")[0])] += 1
    return found


def every_job(client: Client) -> list[Any]:
    return client.jobs.list(limit=1000)


def all_ended(client: Client) -> bool:
    return all(job.state in ("succeeded", "failed") for job in every_job(client))


def taken_up(client: Client) -> bool:
    return not [job for job in every_job(client) if job.state in ("admitted", "starting")]


def check_invariant(client: Client, data_dir: Path) -> None:
    jobs = {job.id: job for job in every_job(client)}
    live = wrappers(data_dir)
    assert all(count == 1 for count in live.values()), live
    for job_id in live:
        assert jobs[job_id].state == "running", (job_id, jobs[job_id].state, jobs[job_id].exit)
    holders = Counter(
        gpu.uuid
        for job in jobs.values()
        if job.state in ("admitted", "starting", "running") and job.placement
        for gpu in job.placement.gpus
    )
    assert all(count == 1 for count in holders.values()), holders
    ended_badly = [j for j in jobs.values() if j.exit and j.exit.reason in ("lost", "launch_error")]
    assert not ended_badly, ended_badly


def test_a_server_killed_at_any_launch_step_loses_nothing_and_runs_nothing_twice(
    server_factory: Any, markers: Path
) -> None:
    env = {"SUANLI_SIMULATED_GPUS": GPUS}
    server: RunningServer = server_factory(env)
    admin = server.login()
    admin.projects.create("crash")
    submitted: list[int] = []
    for point in KILL_POINTS:
        wait_for(partial(all_ended, admin), 60, "the last round's jobs to end")
        server.stop(signal.SIGKILL)
        dying = server_factory({**env, "SUANLI_FAULT_KILL_AT": point})
        submitted += submit_round(dying.login(), "crash", markers)
        assert dying.process.wait(timeout=60) == -signal.SIGKILL, point
        server = server_factory(env)
        admin = server.login()
        wait_for(partial(taken_up, admin), 60, f"the jobs left starting at {point} to be taken up")
        check_invariant(admin, server.data_dir)
    assert len(submitted) >= len(KILL_POINTS)
    wait_for(partial(all_ended, admin), 60, "every job to end")
    for job in every_job(admin):
        assert (job.state, job.attempts) == ("succeeded", 1), (job.id, job.state, job.exit)
        assert len((markers / str(job.id)).read_text().split()) == 1, f"job {job.id} ran twice"
    check_invariant(admin, server.data_dir)

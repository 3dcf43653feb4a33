"""Jobs end to end on a real server with simulated GPUs: quotas, preemption, limits, logs,
cancel, restart after SIGKILL, bad input and isolation."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from waiting import wait_for

from suanli.client import ApiError, Client

GPUS = json.dumps([{"count": 4, "model": "A100", "memory_bytes": 80 * 2**30}])
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def states(client: Client, ids: list[int]) -> list[str]:
    return [client.jobs.get(i).state for i in ids]


@pytest.fixture
def cluster(server_factory):
    """A server with 4 simulated A100s, an admin, and a project `vision` the admin owns."""
    server = server_factory({"SUANLI_SIMULATED_GPUS": GPUS})
    admin = server.login()
    admin.projects.create("vision")
    yield server, admin
    for job in admin.jobs.list(state="active", limit=1000):
        admin.jobs.cancel(job.id)


def job(project: str, gpus: int = 1, command: list[str] = SLEEP, **extra) -> dict:
    return {
        "project": project,
        "command": command,
        # A tenth of a CPU each: this machine has 2 cores and the scheduler counts them.
        "resources": {"gpus": gpus, "cpus": 0.1, "memory": "256Mi"},
        **extra,
    }


def test_quota_lets_two_run_and_three_wait_with_a_reason(cluster) -> None:
    server, admin = cluster
    admin.projects.set_quota("vision", guaranteed_gpus=2, max_gpus=2)
    ids = [admin.jobs.submit(job("vision")).id for _ in range(5)]
    wait_for(lambda: states(admin, ids).count("running") == 2, what="two running")
    time.sleep(0.5)  # one more scheduler cycle: the others must still wait
    pending = [admin.jobs.get(i) for i in ids if admin.jobs.get(i).state == "pending"]
    assert len(pending) == 3
    assert sorted(p.pending.position for p in pending) == [1, 2, 3]
    assert all(p.pending.code.startswith("quota") for p in pending)
    assert all("2" in p.pending.message for p in pending)  # says the numbers
    # Another language, the same reason.
    chinese = Client(server.url, admin.token, language="zh-CN").jobs.get(pending[0].id)
    assert chinese.pending.message != pending[0].pending.message


def test_placement_reaches_the_process(cluster) -> None:
    server, admin = cluster
    printed = admin.jobs.submit(
        job(
            "vision",
            gpus=2,
            command=[
                sys.executable,
                "-c",
                "import os; print(os.environ['CUDA_VISIBLE_DEVICES']);"
                " print(os.environ['SUANLI_JOB_ID'])",
            ],
        )
    )
    done = wait_for(
        lambda: (j := admin.jobs.get(printed.id)).state == "succeeded" and j, what="success"
    )
    output = admin.jobs.logs(printed.id).text.split()
    assert output[0].split(",") == [g.uuid for g in done.placement.gpus]
    assert output[1] == str(printed.id)
    assert [e.state for e in done.history][:1] == ["pending"]
    assert "running" in [e.state for e in done.history]
    assert done.history[0].detail == "Submitted."
    assert done.placement.gpus[0].uuid in done.history[1].detail  # "Admitted on …, GPUs: …"
    chinese = Client(server.url, admin.token, language="zh-CN").jobs.get(printed.id)
    assert chinese.history[-1].detail == "以退出码 0 结束。"


def test_a_higher_priority_job_preempts_a_borrowed_one(cluster) -> None:
    _, admin = cluster
    admin.projects.set_quota("vision", guaranteed_gpus=0, max_gpus=None)
    admin.projects.create("nlp")
    admin.projects.set_quota("nlp", guaranteed_gpus=1)
    borrowed = [admin.jobs.submit(job("vision")).id for _ in range(4)]
    wait_for(lambda: states(admin, borrowed).count("running") == 4, what="4 borrowed running")
    urgent = admin.jobs.submit(job("nlp", priority="high")).id
    wait_for(lambda: admin.jobs.get(urgent).state == "running", timeout=30, what="urgent runs")
    victims = [admin.jobs.get(i) for i in borrowed if admin.jobs.get(i).state != "running"]
    assert len(victims) == 1
    assert victims[0].exit is not None and victims[0].exit.reason == "preempted"
    assert any(f"job {urgent}" in e.detail for e in victims[0].history)


def test_a_job_over_its_memory_limit_ends_as_oom(cluster) -> None:
    _, admin = cluster
    hog = admin.jobs.submit(
        {
            "project": "vision",
            "command": [sys.executable, "-c", "x = bytearray(512 * 2**20); print(len(x))"],
            "resources": {"memory": "64Mi", "cpus": 0.1},
        }
    )
    ended = wait_for(
        lambda: (j := admin.jobs.get(hog.id)).state in ("failed", "succeeded") and j,
        timeout=30,
        what="the hog to end",
    )
    assert ended.state == "failed", ended
    assert ended.exit.reason == "oom", ended.exit


def test_logs_follow_and_stay(cluster) -> None:
    _, admin = cluster
    talk = admin.jobs.submit(
        job(
            "vision",
            gpus=0,
            command=[
                sys.executable,
                "-u",
                "-c",
                "import time\nfor i in range(5):\n    print('line', i)\n    time.sleep(0.2)",
            ],
        )
    )
    text = "".join(admin.jobs.follow(talk.id))
    assert [line for line in text.splitlines() if line.startswith("line")] == [
        f"line {i}" for i in range(5)
    ]
    finished = admin.jobs.get(talk.id)
    assert finished.state == "succeeded"
    assert finished.usage["wall_seconds"] >= 0.8 and "cpu_seconds" in finished.usage
    assert admin.jobs.logs(talk.id, tail=2).text.splitlines() == ["line 3", "line 4"]


def test_cancel_a_running_job(cluster) -> None:
    _, admin = cluster
    running = admin.jobs.submit(job("vision")).id
    wait_for(lambda: admin.jobs.get(running).state == "running", what="running")
    admin.jobs.cancel(running)
    ended = wait_for(
        lambda: (j := admin.jobs.get(running)).state == "cancelled" and j,
        timeout=30,
        what="cancelled",
    )
    assert ended.exit.reason == "cancelled"


def test_impossible_requests_are_refused_at_submit(cluster) -> None:
    _, admin = cluster
    for resources in (
        {"gpus": 5},
        {"gpu_memory": "10Gi"},
        {"gpus": 1, "gpu_model": "H100"},
        {"cpus": 100000},
    ):
        with pytest.raises(ApiError) as refused:
            admin.jobs.submit({"project": "vision", "command": ["true"], "resources": resources})
        assert refused.value.status == 422, resources
        assert refused.value.problem.errors[0].field == "resources"
        assert "infeasible." not in refused.value.problem.detail  # a message, not a key
    with pytest.raises(ApiError) as negative:
        admin.jobs.submit({"project": "vision", "command": ["true"], "resources": {"gpus": -1}})
    assert negative.value.status == 422
    with pytest.raises(ApiError) as unknown:
        admin.jobs.submit({"project": "nowhere", "command": ["true"]})
    assert unknown.value.status == 404


def test_tenants_and_roles(cluster) -> None:
    server, admin = cluster
    admin.users.create("mia", "mia-password")
    admin.users.create("ned", "ned-password")
    admin.users.create("oli", "oli-password")
    admin.projects.add_member("vision", "mia", "member")
    admin.projects.add_member("vision", "ned", "viewer")
    mia, ned, oli = (server.login(n, f"{n}-password") for n in ("mia", "ned", "oli"))
    mine = mia.jobs.submit(job("vision", gpus=0)).id
    assert ned.jobs.get(mine).id == mine  # viewers see
    with pytest.raises(ApiError) as viewer:
        ned.jobs.submit(job("vision", gpus=0))
    assert viewer.value.status == 403
    with pytest.raises(ApiError) as cancel:
        ned.jobs.cancel(mine)
    assert cancel.value.status == 403
    for call in (
        lambda: oli.jobs.get(mine),
        lambda: oli.jobs.logs(mine),
        lambda: oli.jobs.cancel(mine),
    ):
        with pytest.raises(ApiError) as stranger:
            call()
        assert stranger.value.status == 404
    assert oli.jobs.list() == []


def test_sigkill_with_jobs_running(server_factory) -> None:
    """Killed with jobs running, the server comes back with all of them accounted for: the
    ones still running re-adopted, the ones that ended meanwhile recorded, none started
    twice."""
    first = server_factory({"SUANLI_SIMULATED_GPUS": GPUS})
    admin = first.login()
    admin.projects.create("vision")
    long = admin.jobs.submit(job("vision", command=SLEEP)).id
    short = admin.jobs.submit(
        job(
            "vision",
            command=[sys.executable, "-c", "import time; time.sleep(2); raise SystemExit(3)"],
        )
    ).id
    wait_for(lambda: states(admin, [long, short]) == ["running", "running"], what="running")
    token = admin.token
    first.stop(signal.SIGKILL)
    time.sleep(3)  # `short` ends while no server runs
    restarted = datetime.now(UTC)
    second = server_factory({"SUANLI_SIMULATED_GPUS": GPUS})
    with Client(second.url, token) as client:
        ended = wait_for(
            lambda: (j := client.jobs.get(short)).state == "failed" and j, what="short recorded"
        )
        assert ended.exit.reason == "exit_code" and ended.exit.exit_code == 3
        # It ended while no server ran: its end is when it ended, not when it was learnt.
        assert ended.finished_at < restarted
        assert client.jobs.get(long).state == "running"
        assert client.jobs.get(long).attempts == 1  # re-adopted, not started again
        client.jobs.cancel(long)
        wait_for(lambda: client.jobs.get(long).state == "cancelled", timeout=30, what="cancel")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching Unix users needs root (CI runs as root)")
def test_jobs_run_as_the_mapped_unix_user(server_factory) -> None:
    unix = f"sl-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--system", unix], check=True)
    try:
        server = server_factory(
            {"SUANLI_SIMULATED_GPUS": GPUS, "SUANLI_UNIX_USERS": json.dumps({"admin": unix})}
        )
        admin = server.login()
        admin.projects.create("vision")
        admin.users.create("pat", "pat-password")
        admin.projects.add_member("vision", "pat", "member")
        whoami = admin.jobs.submit(job("vision", gpus=0, command=["id", "-un"], workdir="/"))
        wait_for(lambda: admin.jobs.get(whoami.id).state == "succeeded", what="id -un")
        assert admin.jobs.logs(whoami.id).text.strip() == unix
        with pytest.raises(ApiError) as unmapped:  # never as the server's own user
            server.login("pat", "pat-password").jobs.submit(job("vision", gpus=0))
        assert unmapped.value.status == 403
    finally:
        subprocess.run(["userdel", unix], check=False)

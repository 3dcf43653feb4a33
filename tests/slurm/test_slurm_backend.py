"""Suanli on the real Slurm cluster of scripts/slurm: a server with `backend = "slurm"`
(slurmrestd with per-user JWTs), jobs submitted through the API as mapped Unix users.

Nodes 1 and 2 have 8 (fake) GPUs each; every test leaves them free for the next. Jobs run as
the Unix users `suanli-sl-alice` and `suanli-sl-bob` (created here if missing).
"""

import json
import os
import pwd
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agentpython import agent_python
from slurmcluster import Cluster, running_cluster
from waiting import attempt

from suanli.backends.slurm.backend import slurm_environment
from suanli.backends.slurm.client import RestClient, Tokens
from suanli.client import ApiError, Client
from suanli.config import SlurmSettings

pytestmark = pytest.mark.timeout(300)

ALICE, BOB = "suanli-sl-alice", "suanli-sl-bob"
ENDED = {"succeeded", "failed", "cancelled"}


def _unix_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--home-dir", "/nonexistent", name], check=True
        )


def slurm_env(cluster: Cluster, base: Path, users: dict[str, str]) -> dict[str, str]:
    """A server's settings for the cluster's slurmrestd, with `users` mapped to Unix accounts
    and its work directory under `base` (where the nodes' jobs, as those accounts, can write)."""
    return {
        "SUANLI_BACKEND": "slurm",
        "SUANLI_SLURM__REST_URL": cluster.info["SLURMRESTD_URL"],
        "SUANLI_SLURM__CONF": cluster.info["SLURM_CONF"],
        "SUANLI_UNIX_USERS": json.dumps(users),
        "SUANLI_WORK_DIR": str(base / "work"),
        "SUANLI_INVENTORY_INTERVAL_SECONDS": "2",
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
    }


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def ended(client: Client, job_id: int, timeout: float = 60) -> Any:
    return wait_for(
        lambda: (job := client.jobs.get(job_id)).state in ENDED and job,
        timeout,
        f"job {job_id} to end",
    )


def log_of(client: Client, job_id: int) -> str:
    return client.jobs.logs(job_id).text


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def suanli(cluster: Cluster, launch_server) -> Iterator[Any]:
    """A Suanli server on the cluster; the admin maps to ALICE, `bobby` to BOB, `rooty` to
    root (refused). Its work directory is where the cluster's nodes can write (not pytest's
    private tmp): job logs are written there by the jobs' users; its data directory stays
    the server's alone."""
    for name in (ALICE, BOB):
        _unix_user(name)
    base = Path(tempfile.mkdtemp(prefix="suanli-on-slurm-", dir="/tmp"))
    base.chmod(0o755)
    env = {
        **slurm_env(cluster, base, {"admin": ALICE, "bobby": BOB, "rooty": "root"}),
        "SUANLI_DEVENV_AGENT_PYTHON": agent_python(),
    }
    server = launch_server(base, env)
    try:
        admin = server.login()
        admin.projects.create("hpc")
        yield server, admin, cluster
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def slurm_jobs(cluster: Cluster) -> list[dict[str, Any]]:
    return json.loads(cluster.run("squeue", "--json", "--states=all").stdout)["jobs"]


def slurm_job_of(cluster: Cluster, suanli_id: int) -> dict[str, Any]:
    found = [j for j in slurm_jobs(cluster) if j["comment"] == f"suanli job {suanli_id}"]
    assert len(found) == 1, found
    return found[0]


def submit(admin: Client, command: list[str] | None = None, **spec: Any) -> int:
    body = {"project": "hpc", "command": command or ["true"], **spec}
    return admin.jobs.submit(body).id


def test_nodes_and_gpus_come_from_slurm(suanli) -> None:
    _, admin, _ = suanli
    nodes = {n.name: n for n in admin.nodes.list()}
    assert sorted(nodes) == ["node1", "node2"]
    for node in nodes.values():
        assert node.backend == "slurm" and node.available and node.pools == ["debug"]
        assert node.cpus == 16 and node.memory_bytes == 32 * 2**30
        assert node.engine_state in {"idle", "mixed", "allocated"}
        assert [g.uuid for g in node.gpus] == [f"slurm-{node.name}-gpu{i}" for i in range(8)]


def test_a_one_gpu_job_runs_as_the_mapped_user_and_succeeds(suanli) -> None:
    _, admin, cluster = suanli
    job_id = submit(
        admin,
        [
            "bash",
            "-c",
            'echo "gpus=$CUDA_VISIBLE_DEVICES user=$(id -un) project=$SUANLI_PROJECT"; sleep 3',
        ],
        resources={"gpus": 1, "cpus": 2, "memory": "1Gi"},
        max_duration="10m",
    )
    job = ended(admin, job_id)
    assert job.state == "succeeded", (job.exit, log_of(admin, job_id))
    out = log_of(admin, job_id)
    assert f"user={ALICE} project=hpc" in out and "gpus=" in out
    assert len(out.split("gpus=")[1].split()[0].split(",")) == 1
    assert job.placement is not None and len(job.placement.gpus) == 1
    assert job.placement.gpus[0].uuid.startswith(f"slurm-{job.placement.node}-gpu")
    seen = slurm_job_of(cluster, job_id)
    assert seen["user_name"] == ALICE and seen["job_state"] == "COMPLETED"
    assert seen["tres_alloc_str"].startswith("cpu=2,mem=1G")
    assert seen["time_limit"] == 11  # a minute above the job's own limit: a backstop


def test_a_four_gpu_job_sees_four_gpus_and_its_exit_code(suanli) -> None:
    _, admin, _ = suanli
    job_id = submit(
        admin, ["bash", "-c", 'echo "gpus=$CUDA_VISIBLE_DEVICES"; exit 3'], resources={"gpus": 4}
    )
    job = ended(admin, job_id)
    assert job.state == "failed" and job.exit is not None
    assert (job.exit.reason, job.exit.exit_code) == ("exit_code", 3)
    assert len(log_of(admin, job_id).split("gpus=")[1].split()[0].split(",")) == 4


RENDEZVOUS = r"""
import os, socket, sys, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
print(f"rank={rank} world={world} node_rank={os.environ['NODE_RANK']} "
      f"nnodes={os.environ['NNODES']} node={os.environ['SLURMD_NODENAME']} "
      f"gpus={os.environ['CUDA_VISIBLE_DEVICES']}", flush=True)
if rank == 0:
    server = socket.create_server((addr, port))
    server.settimeout(60)
    peers = []
    for _ in range(world - 1):
        conn, _ = server.accept()
        peers.append(conn.recv(64).decode())
    print("rendezvous ok:", sorted(peers), flush=True)
else:
    for _ in range(300):
        try:
            socket.create_connection((addr, port), timeout=5).sendall(f"rank{rank}".encode())
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("no rendezvous")
"""


def test_a_two_node_job_gets_ranks_and_meets_at_the_master(suanli) -> None:
    _, admin, cluster = suanli
    job_id = submit(
        admin,
        ["python3", "-c", RENDEZVOUS],
        resources={"nodes": 2, "gpus": 2},
        launcher="none",
    )
    job = ended(admin, job_id)
    out = log_of(admin, job_id)
    assert job.state == "succeeded", (job.exit, out)
    lines = sorted(line for line in out.splitlines() if line.startswith("rank="))
    assert [line.split(" gpus=")[0] for line in lines] == [
        "rank=0 world=2 node_rank=0 nnodes=2 node=node1",
        "rank=1 world=2 node_rank=1 nnodes=2 node=node2",
    ]
    assert all(len(line.split(" gpus=")[1].split(",")) == 2 for line in lines)
    assert "rendezvous ok: ['rank1']" in out
    assert job.gpus == 4 and job.placement is not None and job.placement.node == "node[1-2]"
    assert slurm_job_of(cluster, job_id)["nodes"] == "node[1-2]"


def test_a_job_queued_in_slurm_shows_slurms_reason_then_runs(suanli) -> None:
    """GPUs taken outside Suanli (another Slurm user): Suanli admits, Slurm holds the job and
    says why, and the job starts once the GPUs are free."""
    server, admin, cluster = suanli
    outside = cluster.sbatch("--nodes=2", "--gres=gpu:8", "--wrap", "sleep 300")
    cluster.wait_for_state(outside, {"RUNNING"})
    job_id = submit(admin, ["true"], resources={"gpus": 1})
    job = wait_for(
        lambda: (j := admin.jobs.get(job_id)).pending is not None and j, what="Slurm's reason"
    )
    assert job.state == "starting" and job.pending.code == "engine_queued"
    assert "Slurm" in job.pending.message and "Resources" in job.pending.message
    zh = server.client(admin.token, language="zh-CN")
    assert "Resources" in zh.jobs.get(job_id).pending.message
    assert slurm_job_of(cluster, job_id)["job_state"] == "PENDING"
    cluster.run("scancel", str(outside))
    assert ended(admin, job_id).state == "succeeded"


def test_cancel_sends_sigterm_then_the_job_ends_cancelled(suanli) -> None:
    _, admin, cluster = suanli
    script = "trap 'echo got TERM; exit 143' TERM\necho started\nsleep 120 & wait\n"
    job_id = admin.jobs.submit({"project": "hpc", "script": script}).id
    wait_for(lambda: "started" in log_of(admin, job_id), what="the job to start")
    admin.jobs.cancel(job_id)
    job = ended(admin, job_id)
    assert job.state == "cancelled" and job.exit is not None and job.exit.reason == "cancelled"
    assert "got TERM" in log_of(admin, job_id)
    wait_for(lambda: slurm_job_of(cluster, job_id)["job_state"] in {"FAILED", "CANCELLED"})


def test_a_job_past_its_maximum_duration_ends_as_timeout(suanli) -> None:
    _, admin, _ = suanli
    job_id = submit(admin, ["sleep", "120"], max_duration=3)
    began = time.monotonic()
    job = ended(admin, job_id)
    assert job.state == "failed" and job.exit is not None and job.exit.reason == "timeout"
    assert time.monotonic() - began < 30


def test_a_project_over_quota_never_reaches_slurm(suanli) -> None:
    _, admin, cluster = suanli
    admin.projects.create("small")
    admin.projects.set_quota("small", max_gpus=1)
    first = admin.jobs.submit(
        {"project": "small", "command": ["sleep", "60"], "resources": {"gpus": 1}}
    ).id
    second = admin.jobs.submit(
        {"project": "small", "command": ["true"], "resources": {"gpus": 1}}
    ).id
    wait_for(lambda: admin.jobs.get(first).state == "running", what="the first job to run")
    time.sleep(3)  # a few scheduler cycles
    job = admin.jobs.get(second)
    assert job.state == "pending" and job.pending is not None
    assert job.pending.code == "quota_max_gpus"
    comments = {j["comment"] for j in slurm_jobs(cluster)}
    assert f"suanli job {first}" in comments and f"suanli job {second}" not in comments
    admin.jobs.cancel(first)
    assert ended(admin, second).state == "succeeded"


def test_logs_follow_while_the_job_runs(suanli) -> None:
    _, admin, _ = suanli
    script = "echo one\nsleep 3\necho two\n"
    job_id = admin.jobs.submit({"project": "hpc", "script": script}).id
    wait_for(lambda: "one" in log_of(admin, job_id), what="the first line")
    wait_for(lambda: admin.jobs.get(job_id).state == "running", 2, "Suanli to see it run")
    assert "two" not in log_of(admin, job_id)
    assert "".join(admin.jobs.follow(job_id)) == "one\ntwo\n"


def test_a_pool_is_a_partition_and_an_unknown_pool_is_refused(suanli) -> None:
    _, admin, cluster = suanli
    job_id = submit(admin, ["true"], pool="debug")
    assert ended(admin, job_id).state == "succeeded"
    assert slurm_job_of(cluster, job_id)["partition"] == "debug"
    with pytest.raises(ApiError) as refused:
        submit(admin, ["true"], pool="nowhere")
    assert refused.value.status == 422
    assert refused.value.problem.errors[0].field == "pool"
    assert "debug" in refused.value.problem.errors[0].message


def test_a_user_mapped_to_root_is_never_submitted(suanli) -> None:
    server, admin, cluster = suanli
    admin.users.create("rooty", "password-rooty")
    admin.projects.add_member("hpc", "rooty", "member")
    rooty = server.login("rooty", "password-rooty")
    job_id = rooty.jobs.submit({"project": "hpc", "command": ["id"]}).id
    job = ended(admin, job_id)
    assert job.state == "failed" and job.exit is not None
    assert job.exit.reason == "launch_error" and "never run as root" in job.exit.detail
    assert not [j for j in slurm_jobs(cluster) if j["comment"] == f"suanli job {job_id}"]


def test_more_gpus_than_a_node_has_are_refused_at_submission(suanli) -> None:
    _, admin, _ = suanli
    with pytest.raises(ApiError) as refused:
        submit(admin, ["true"], resources={"gpus": 9})
    assert refused.value.status == 422
    with pytest.raises(ApiError) as refused:
        submit(admin, ["true"], resources={"nodes": 3, "gpus": 1})
    assert refused.value.status == 422


def test_a_failed_node_is_the_exit_reason_and_the_retry_runs(suanli) -> None:
    """slurmd of node2 stops while a two-node job runs: Slurm marks the node down and ends the
    job NODE_FAIL; Suanli says so and retries once node2 is back."""
    _, admin, cluster = suanli
    job_id = submit(
        admin,
        ["bash", "-c", "echo node=$SLURMD_NODENAME; sleep 600"],
        resources={"nodes": 2},
        retries=1,
    )
    wait_for(lambda: admin.jobs.get(job_id).state == "running", what="the job to run")
    pid = int((cluster.dir / "run" / "slurmd-node2.pid").read_text())
    os.kill(pid, 15)
    try:
        job = wait_for(
            lambda: (j := admin.jobs.get(job_id)).attempts == 2 and j,
            timeout=90,
            what="the node failure to requeue the job",
        )
        events = [e.detail for e in job.history]
        assert any(
            e.startswith("Attempt 1 of 2 ended (A node it ran on failed (") for e in events
        ), events
        wait_for(lambda: not {n.name: n for n in admin.nodes.list()}["node2"].available)
        state = {n.name: n for n in admin.nodes.list()}["node2"].engine_state
        assert state.startswith("down") or "not_responding" in state, state
    finally:
        subprocess.run(
            [
                "env",
                "-i",
                f"PATH={os.environ['PATH']}",
                f"SLURM_CONF={cluster.info['SLURM_CONF']}",
                "slurmd",
                "-N",
                "node2",
            ],
            check=True,
        )
    wait_for(lambda: admin.jobs.get(job_id).state == "running", 90, "the retry to run")
    admin.jobs.cancel(job_id)
    assert ended(admin, job_id).state == "cancelled"


def test_slurmrestd_over_its_unix_socket_answers_the_same(cluster: Cluster) -> None:
    env = slurm_environment(SlurmSettings(conf=cluster.info["SLURM_CONF"]))
    over_socket = RestClient(cluster.info["SLURMRESTD_SOCKET"], Tokens(env), "root")
    over_http = RestClient(cluster.info["SLURMRESTD_URL"], Tokens(env), "root")
    assert [n["name"] for n in over_socket.nodes()] == ["node1", "node2"]
    assert over_socket.nodes()[0]["gres"] == over_http.nodes()[0]["gres"] == "gpu:8"


@pytest.fixture(scope="module")
def suanli_on_commands(cluster: Cluster, launch_server) -> Iterator[Any]:
    """A second server on the same cluster with no slurmrestd: sbatch, squeue, sinfo,
    scancel."""
    _unix_user(BOB)
    base = Path(tempfile.mkdtemp(prefix="suanli-on-slurm-cli-", dir="/tmp"))
    base.chmod(0o755)
    env = {
        "SUANLI_BACKEND": "slurm",
        "SUANLI_SLURM__CONF": cluster.info["SLURM_CONF"],
        "SUANLI_UNIX_USERS": json.dumps({"admin": BOB}),
        "SUANLI_WORK_DIR": str(base / "work"),
    }
    server = launch_server(base, env)
    try:
        admin = server.login()
        admin.projects.create("hpc")
        yield admin
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_the_command_line_tools_run_and_cancel_jobs(suanli_on_commands, cluster) -> None:
    admin = suanli_on_commands
    assert sorted(n.name for n in admin.nodes.list()) == ["node1", "node2"]
    job_id = submit(
        admin,
        ["bash", "-c", 'echo "user=$(id -un) gpus=$CUDA_VISIBLE_DEVICES"'],
        resources={"gpus": 2},
    )
    job = ended(admin, job_id)
    assert job.state == "succeeded", (job.exit, log_of(admin, job_id))
    assert f"user={BOB} gpus=" in log_of(admin, job_id)
    sleeper = submit(admin, ["sleep", "300"])
    wait_for(lambda: admin.jobs.get(sleeper).state == "running", what="the sleeper to run")
    admin.jobs.cancel(sleeper)
    assert ended(admin, sleeper).state == "cancelled"
    # Job ids of this second server start at 1 again: its jobs are the ones of BOB.
    mine = [j for j in slurm_jobs(cluster) if j["comment"] == f"suanli job {sleeper}"]
    assert [j["user_name"] for j in mine if j["user_name"] == BOB] == [BOB]


def test_a_dev_environment_runs_as_a_slurm_job_and_is_reached_on_its_node(suanli) -> None:
    """The proxy and the gateway reach the agent on the node Slurm chose (as Open OnDemand
    does): a terminal through the proxy and SSH through the gateway, as the mapped user."""
    import asyncio

    import asyncssh
    from websockets.asyncio.client import connect

    server, admin, cluster = suanli
    workdir = Path(tempfile.mkdtemp(prefix="suanli-devenv-", dir="/tmp"))
    os.chown(workdir, pwd.getpwnam(ALICE).pw_uid, -1)
    key = asyncssh.generate_private_key("ssh-ed25519")
    admin.request("POST", "me/ssh-keys", json={"public_key": key.export_public_key().decode()})
    spec = {
        "project": "hpc",
        "name": "on-slurm",
        "tools": ["terminal", "ssh"],
        "resources": {"gpus": 1},
        "workdir": str(workdir),
    }
    env = admin.request("POST", "devenvs", json=spec)
    running = wait_for(
        lambda: (e := admin.request("GET", f"devenvs/{env['id']}"))["state"] == "running" and e,
        60,
        "the environment to run on Slurm",
    )
    slurm_job = slurm_job_of(cluster, env["id"])
    assert running["placement"]["node"] == slurm_job["nodes"]
    headers = {"Authorization": f"Bearer {admin.token}"}
    url = server.url.replace("http://", "ws://") + f"/x/{env['id']}/terminal/ws"

    async def terminal() -> str:
        async with connect(url, additional_headers=headers) as socket:
            await socket.send(json.dumps(["stdin", "echo user=$(whoami) job=$SLURM_JOB_ID\r"]))
            seen = ""
            while f"user={ALICE} job=" not in seen:  # the answer, not the echoed command
                seen += json.loads(await asyncio.wait_for(socket.recv(), 10))[1]
            return seen

    opened = lambda: attempt(lambda: asyncio.run(terminal()), (Exception,))  # noqa: E731
    seen = wait_for(opened, 60, "the terminal")
    assert f"user={ALICE} job={slurm_job['job_id']}" in seen

    async def ssh() -> Any:
        async with asyncssh.connect(
            running["ssh"]["host"],
            running["ssh"]["port"],
            username="on-slurm",
            client_keys=[key],
            known_hosts=None,
            agent_path=None,
            config=(),
        ) as conn:
            return await conn.run("whoami; pwd; echo $SLURM_JOB_ID")

    result = asyncio.run(ssh())
    assert result.stdout.split() == [ALICE, str(workdir), str(slurm_job["job_id"])]
    admin.request("POST", f"devenvs/{env['id']}/stop")
    stopped = wait_for(
        lambda: (e := admin.request("GET", f"devenvs/{env['id']}"))["state"] == "cancelled" and e,
        60,
        "the environment to stop",
    )
    assert stopped["exit"]["reason"] == "cancelled"

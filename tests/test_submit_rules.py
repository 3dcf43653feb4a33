"""What a workload may ask for, checked at submit on a real server with four simulated A100s:
memory, environment, working directory, the project's quota as a ceiling, the messages of
impossible requests; and a live log resumed from an id the client made up."""

import json
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from waiting import wait_for

from suanli.client import ApiError, Client
from suanli.db.engine import Database
from suanli.db.models import Job
from suanli.scheduler.feasibility import check_feasible, check_quota_ceiling
from suanli.scheduler.model import Device, Node, Quota, Request
from suanli.schemas.jobs import STORED, JobSpec

if TYPE_CHECKING:  # the root conftest's; not importable by name from here
    from tests.conftest import RunningServer

ADMIN_PASSWORD = "admin-test-password"  # tests/conftest.py gives every test server this one
SIMULATED_A100S = json.dumps([{"count": 4, "model": "A100-SXM4-80GB", "memory_bytes": 80 * 2**30}])

GIB = 2**30


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., "RunningServer"]
) -> Iterator["RunningServer"]:
    env = {"SUANLI_SIMULATED_GPUS": SIMULATED_A100S}
    running = launch_server(tmp_path_factory.mktemp("submit-rules"), env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(cluster: "RunningServer") -> Iterator[Client]:
    client = cluster.login()
    yield client
    client.close()


@pytest.fixture
def project(admin: Client) -> str:
    name = f"rules-{secrets.token_hex(3)}"
    admin.projects.create(name)
    return name


def job(project: str, **fields) -> dict:
    return {"project": project, "command": ["true"], **fields}


def refused(submit: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as error:
        submit()
    assert error.value.status == 422, error.value
    return error.value


def fields(error: ApiError) -> dict[str, str]:
    return {item.field: item.message for item in error.problem.errors}


def in_chinese(server: "RunningServer", admin: Client) -> Client:
    return Client(server.url, admin.token, language="zh-CN")


# -- resources.memory ----------------------------------------------------------------------


def test_memory_below_what_a_program_needs_is_refused(cluster, admin, project) -> None:
    for memory in (0, "1Mi", 16 * 2**20 - 1):
        error = refused(lambda m=memory: admin.jobs.submit(job(project, resources={"memory": m})))
        assert "16Mi" in fields(error)["resources.memory"], error.problem
    chinese = refused(
        lambda: in_chinese(cluster, admin).jobs.submit(job(project, resources={"memory": 0}))
    )
    assert "不能小于 16Mi" in fields(chinese)["resources.memory"]
    # The least allowed is enough for a program to start and end well.
    small = admin.jobs.submit(
        job(project, command=[sys.executable, "-c", "print('ok')"], resources={"memory": "16Mi"})
    )
    ended = wait_for(lambda: (j := admin.jobs.get(small.id)).state in ("succeeded", "failed") and j)
    assert ended.state == "succeeded", ended.exit


# -- env -----------------------------------------------------------------------------------


RESERVED = {
    "LD_PRELOAD": "/home/mallory/evil.so",
    "LD_LIBRARY_PATH": "/home/mallory",
    "LD_AUDIT": "/home/mallory/audit.so",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "CUDA_MPS_PIPE_DIRECTORY": "/home/mallory/mps",
    "CUDA_MPS_LOG_DIRECTORY": "/home/mallory",
    "SUANLI_JOB_ID": "1",
    "SUANLI_PROJECT": "someone-elses",
}
NOT_NAMES = {"A=B": "1", "BAD-NAME": "1", "1ST": "1", "NUL\x00": "1", "": "1", "X" * 129: "1"}


def test_a_workload_may_not_set_the_platforms_variables(cluster, admin, project) -> None:
    error = refused(lambda: admin.jobs.submit(job(project, env={**RESERVED, "MINE": "fine"})))
    found = fields(error)
    assert set(found) == {f"env.{name}" for name in RESERVED}
    for name, message in found.items():
        assert name.removeprefix("env.") in message  # names the key and says why
    assert "SUANLI_" in found["env.SUANLI_JOB_ID"]
    assert "script" in found["env.LD_PRELOAD"]
    chinese = fields(
        refused(
            lambda: in_chinese(cluster, admin).jobs.submit(
                job(project, env={"LD_PRELOAD": "/home/mallory/evil.so"})
            )
        )
    )
    assert "脚本" in chinese["env.LD_PRELOAD"]
    # The same rule for dev environments.
    env_error = refused(
        lambda: admin.devenvs.create(
            {"project": project, "name": "nb", "env": {"CUDA_VISIBLE_DEVICES": "0"}}
        )
    )
    assert list(fields(env_error)) == ["env.CUDA_VISIBLE_DEVICES"]
    assert admin.devenvs.list(project=project) == []


def test_names_that_are_no_variable_names_are_refused(admin, project) -> None:
    found = fields(refused(lambda: admin.jobs.submit(job(project, env=NOT_NAMES))))
    assert set(found) == {f"env.{name}" for name in NOT_NAMES}
    assert all("variable name" in message for message in found.values())


def test_an_environment_too_large_to_start_a_program_is_refused(admin, project) -> None:
    with pytest.raises(ApiError) as review:  # 200 × 32 KB: "Argument list too long" at launch
        admin.jobs.submit(job(project, env={f"V{i}": "x" * 32_000 for i in range(200)}))
    assert review.value.status in (413, 422)  # the body is over the server's limit too
    large = {f"V{i}": "x" * 32_000 for i in range(25)}  # 800 KB: a body the server reads
    error = refused(lambda: admin.jobs.submit(job(project, env=large)))
    assert "64 KiB" in fields(error)["env"]
    one_too_long = fields(refused(lambda: admin.jobs.submit(job(project, env={"V": "x" * 32_769}))))
    assert list(one_too_long) == ["env.V"]
    devenv = refused(lambda: admin.devenvs.create({"project": project, "name": "nb", "env": large}))
    assert list(fields(devenv)) == ["env"]
    # Just under the cap, a program starts and sees every variable.
    near = {f"V{i}": "x" * 300 for i in range(200)}  # 60 KiB
    printed = admin.jobs.submit(
        job(project, command=["sh", "-c", 'echo "${#V0} ${#V199}"'], env=near)
    )
    ended = wait_for(
        lambda: (j := admin.jobs.get(printed.id)).state in ("succeeded", "failed") and j
    )
    assert ended.state == "succeeded", ended.exit
    assert admin.jobs.logs(printed.id).text.strip() == "300 300"


def test_a_command_too_long_to_start_is_refused(admin, project) -> None:
    error = refused(lambda: admin.jobs.submit(job(project, command=["echo", *["x" * 4096] * 100])))
    assert "256 KiB" in fields(error)["command"]


# -- workdir -------------------------------------------------------------------------------


def test_the_working_directory_is_an_absolute_path_without_dot_dot(admin, project) -> None:
    for workdir in ("../../etc", "work", "/usr/../etc", "/..", "./x"):
        error = refused(lambda w=workdir: admin.jobs.submit(job(project, workdir=w)))
        assert "absolute path" in fields(error)["workdir"], workdir
        env_error = refused(
            lambda w=workdir: admin.devenvs.create({"project": project, "name": "nb", "workdir": w})
        )
        assert list(fields(env_error)) == ["workdir"]
    where = admin.jobs.submit(job(project, command=["pwd"], workdir="/usr/"))
    ended = wait_for(lambda: (j := admin.jobs.get(where.id)).state in ("succeeded", "failed") and j)
    assert ended.state == "succeeded", ended.exit
    assert admin.jobs.logs(where.id).text.strip() == "/usr"


# -- the project's quota as a ceiling ------------------------------------------------------


def test_more_than_the_project_may_ever_hold_is_refused_at_submit(cluster, admin, project) -> None:
    admin.projects.set_quota(project, max_gpus=1)
    error = refused(lambda: admin.jobs.submit(job(project, resources={"gpus": 2})))
    message = fields(error)["resources.gpus"]
    assert "2 GPUs" in message and "at most 1" in message and project in message
    chinese = refused(
        lambda: in_chinese(cluster, admin).jobs.submit(job(project, resources={"gpus": 2}))
    )
    assert "最多只能使用 1 块" in fields(chinese)["resources.gpus"]
    devenv = refused(
        lambda: admin.devenvs.create({"project": project, "name": "nb", "resources": {"gpus": 2}})
    )
    assert list(fields(devenv)) == ["resources.gpus"]
    # What fits once other work has ended is accepted (and pends meanwhile).
    accepted = admin.jobs.submit(job(project, command=["sleep", "60"], resources={"gpus": 1}))
    admin.jobs.cancel(accepted.id)


def test_per_user_cpu_and_memory_ceilings(admin, project) -> None:
    admin.projects.set_quota(project, max_gpus_per_user=1, cpus=0.5, memory_bytes=GIB)
    per_user = fields(refused(lambda: admin.jobs.submit(job(project, resources={"gpus": 3}))))
    assert "one user may use at most 1" in per_user["resources.gpus"]
    cpus = fields(refused(lambda: admin.jobs.submit(job(project, resources={"cpus": 1.0}))))
    assert "1 CPUs" in cpus["resources.cpus"] and "at most 0.5 " in cpus["resources.cpus"]
    memory = fields(
        refused(lambda: admin.jobs.submit(job(project, resources={"cpus": 0.5, "memory": "2Gi"})))
    )
    assert "2 GiB" in memory["resources.memory"] and "at most 1 GiB" in memory["resources.memory"]


def test_a_fraction_counts_as_the_scheduler_counts_it(admin, project) -> None:
    uuid = admin.nodes.list()[0].gpus[0].uuid
    admin.nodes.update_gpu(uuid, shared=True)
    try:
        admin.projects.set_quota(project, max_gpus=0)
        error = refused(lambda: admin.jobs.submit(job(project, resources={"gpu_memory": "40Gi"})))
        assert "0.5 GPUs" in fields(error)["resources.gpu_memory"]
    finally:
        admin.nodes.update_gpu(uuid, shared=False)


# -- messages of what no node could run ----------------------------------------------------


def test_impossible_requests_say_it_as_people_write_it(admin, project) -> None:
    gpus = fields(refused(lambda: admin.jobs.submit(job(project, resources={"gpus": 5}))))
    assert "5 GPUs were asked for, but the largest node has 4:" in gpus["resources"]
    model = fields(
        refused(lambda: admin.jobs.submit(job(project, resources={"gpus": 5, "gpu_model": "A100"})))
    )
    assert "5 A100 GPUs" in model["resources"]
    largest = max(node.cpus for node in admin.nodes.list())
    cpus = fields(
        refused(lambda: admin.jobs.submit(job(project, resources={"cpus": float(largest + 1)})))
    )
    assert f"{largest + 1:g} CPUs" in cpus["resources"] and f"has {largest:g}." in cpus["resources"]
    assert not re.search(r"\d\.0\b|  ", cpus["resources"] + gpus["resources"])


def test_without_gpus_the_message_says_how_to_declare_simulated_ones(server, make_user) -> None:
    """The shared server declares no GPUs (on a host without a driver it has none)."""
    admin = server.login()
    if any(node.gpus for node in admin.nodes.list()):
        pytest.skip("this host has real GPUs")
    name = f"nogpu-{secrets.token_hex(3)}"
    admin.projects.create(name)
    english = fields(refused(lambda: admin.jobs.submit(job(name, resources={"gpus": 1}))))
    message = english["resources"]
    assert "has no GPUs" in message and "SUANLI_SIMULATED_GPUS" in message
    assert "simulated_gpus" in message and "Available" not in message
    chinese = Client(server.url, admin.token, language="zh-CN")
    message = fields(refused(lambda: chinese.jobs.submit(job(name, resources={"gpus": 1}))))
    assert "没有 GPU" in message["resources"] and "SUANLI_SIMULATED_GPUS" in message["resources"]


# -- a job kept from before a rule ---------------------------------------------------------


def test_resubmitting_a_job_kept_from_before_a_rule_is_refused_cleanly(
    cluster, admin, project
) -> None:
    done = admin.jobs.submit(job(project))
    wait_for(lambda: admin.jobs.get(done.id).state == "succeeded", what="the job to end")
    database = Database(cluster.database_url)
    try:
        with database.writing() as session:
            row = session.get(Job, done.id)
            row.spec = {**row.spec, "env": {"LD_PRELOAD": "/home/mallory/evil.so"}}
            session.commit()
    finally:
        database.dispose()
    error = refused(lambda: admin.jobs.resubmit(done.id))
    assert list(fields(error)) == ["env.LD_PRELOAD"]


def test_a_stored_spec_still_loads_for_the_scheduler() -> None:
    kept = {"project": "p", "command": ["x"], "workdir": "work", "env": {"LD_PRELOAD": "a"}}
    assert JobSpec.model_validate(kept, context=STORED).workdir == "work"


# -- the scheduler's side, without a server ------------------------------------------------


def _node(*devices: Device) -> Node:
    return Node("n", cpus=8, memory_bytes=64 * GIB, devices=devices)


def test_no_gpus_and_only_mig_instances_are_told_apart() -> None:
    assert check_feasible(Request(gpus=1), [_node()]) == ("no_gpus", {})
    assert check_feasible(Request(gpu_memory_bytes=GIB), [_node()]) == ("no_gpus", {})
    mig = Device("m", "n", "A100", 10 * GIB, mig_profile="1g.10gb")
    assert check_feasible(Request(gpus=1), [_node(mig)]) == (
        "no_whole_gpus",
        {"available": "1g.10gb"},
    )


def test_the_quota_ceiling_counts_fractions_on_the_largest_shared_gpu() -> None:
    small = Device("s", "n", "A100", 40 * GIB, shared=True)
    large = Device("l", "n", "A100", 80 * GIB, shared=True)
    nodes = [_node(small, large)]
    half_of_large = Request(gpu_memory_bytes=40 * GIB)
    assert check_quota_ceiling(half_of_large, Quota("p", max_gpus=1), nodes) is None
    assert check_quota_ceiling(half_of_large, Quota("p", max_gpus=0), nodes) == (
        "quota_max_gpus",
        {"requested": 0.5, "limit": 0},
    )
    assert check_quota_ceiling(Request(gpus=2, nodes=2), Quota("p", max_gpus_per_user=3), []) == (
        "quota_user_gpus",
        {"requested": 4, "limit": 3},
    )


# -- the console's live log ----------------------------------------------------------------


def test_a_log_stream_ignores_a_last_event_id_it_never_sent(cluster, admin, project) -> None:
    said = admin.jobs.submit(job(project, command=["echo", "hello"]))
    wait_for(lambda: admin.jobs.get(said.id).state == "succeeded", what="the job to end")
    with httpx.Client(base_url=cluster.url, follow_redirects=False) as browser:
        page = browser.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        login = {"csrf_token": csrf, "username": "admin", "password": ADMIN_PASSWORD}
        assert browser.post("/login", data=login).status_code == 303
        for made_up in (b"9" * 5000, b"\xb2", b"-1", b"1e9", b"0x10", "١٢".encode()):
            response = browser.get(f"/jobs/{said.id}/log", headers={"Last-Event-ID": made_up})
            assert response.status_code == 200, (made_up[:10], response.text[:300])
            assert '"hello\\n"' in response.text and "event: end" in response.text
        # One past the end of the log (a log rewritten since): nothing more, then the end.
        beyond = browser.get(f"/jobs/{said.id}/log", headers={"Last-Event-ID": "9" * 16})
        assert beyond.status_code == 200 and "hello" not in beyond.text
        assert "event: end" in beyond.text

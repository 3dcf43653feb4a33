"""The CLI as a new user meets it, against a real server: help without bogus types, `--json`
on every command (errors included), `submit -f`, named jobs, what a cancel does, exit statuses
of followed jobs, nodes the cluster engine lost; and the console's charts breaking their lines
where the data has a hole."""

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer.main

from suanli.cli import main as cli_main
from suanli.cli.jobs import name_from
from suanli.db.engine import Database
from suanli.db.models import Node
from tests import test_cli
from tests.conftest import ADMIN_PASSWORD, RunningServer, unique

cli = test_cli.cli  # the fixture that runs `suanli ARGS` in-process

SIMULATED_GPUS = '[{"count": 2, "model": "A100"}]'
SMALL = ("--cpus", "0.1", "--memory", "64Mi")


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory, launch_server) -> Iterator[RunningServer]:
    """A server with two simulated GPUs whose inventory is read once (at start), so that what
    a test says the cluster engine reports about the node stays until it says otherwise."""
    env = {
        "SUANLI_SIMULATED_GPUS": SIMULATED_GPUS,
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
        "SUANLI_INVENTORY_INTERVAL_SECONDS": "3600",
    }
    running = launch_server(tmp_path_factory.mktemp("newcomer"), env)
    yield running
    running.stop()


def login(cli, server: RunningServer, *extra: str, language: str | None = None):
    return cli(
        "login",
        server.url,
        "-u",
        "admin",
        "--password-stdin",
        *extra,
        stdin=ADMIN_PASSWORD + "\n",
        language=language,
    )


def error_of(err: str) -> dict:
    """The one JSON object a failing command prints on stderr under --json."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return json.loads(lines[0])["error"]


def wait_for(check: Callable[[], object], what: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# -- help and --json -----------------------------------------------------------------------


def test_help_shows_no_type_beside_a_flag_but_does_beside_a_value(cli) -> None:
    for args in [("--help",), ("submit", "--help"), ("jobs", "cancel", "--help")]:
        code, out, _ = cli(*args)
        assert code == 0 and "--help" in out
        assert "<bool>" not in out, out
    code, out, _ = cli("submit", "--help")
    assert "<str>" in out and "--file" in out and "-f" in out  # -p takes a value


def test_every_command_takes_json() -> None:
    missing = []

    def walk(command, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        if not getattr(command, "commands", None) and "json" not in {
            p.name for p in command.params
        }:
            missing.append(" ".join(path))

    walk(typer.main.get_command(cli_main.app), [])
    assert not missing


def test_errors_under_json_are_one_object_on_stderr_in_the_readers_language(
    cli, server: RunningServer
) -> None:
    code, out, err = cli("jobs", "list", "--json")
    problem = error_of(err)
    assert code == 1 and out == ""
    assert problem["type"] == "urn:suanli:cli:not-logged-in" and problem["status"] is None
    assert "suanli login" in problem["detail"] and problem["errors"] == []

    code, out, _ = login(cli, server, "--json")
    assert code == 0 and json.loads(out)["user"]["name"] == "admin"
    assert "sl_" not in out  # the token stays in the config file

    absent = unique("absent")
    code, out, err = cli("projects", "show", absent, "--json")
    problem = error_of(err)
    assert code == 1 and out == ""
    assert problem["type"] == "urn:suanli:problem:not-found" and problem["status"] == 404
    problem = error_of(cli("projects", "show", absent, "--json", language="zh-CN")[2])
    assert problem["title"] == "未找到"

    code, _, err = cli("projects", "create", "Bad_Name", "--json")
    problem = error_of(err)
    assert code == 1 and problem["status"] == 422
    assert [e["field"] for e in problem["errors"]] == ["name"]

    code, _, err = cli("quota", "set", "anything", "--memory", "lots", "--json")
    problem = error_of(err)
    assert code == 2 and problem["type"] == "urn:suanli:cli:usage"
    assert problem["errors"][0]["field"] == "--memory"
    problem = error_of(cli("quota", "set", "x", "--memory", "lots", "--json", language="zh-CN")[2])
    assert problem["title"] == "命令行有误"

    code, _, err = cli(
        "login", "http://127.0.0.1:9", "-u", "admin", "--password-stdin", "--json", stdin="x\n"
    )
    assert code == 1 and error_of(err)["type"] == "urn:suanli:cli:connection"

    # After `--`, --json is a word of the job's command, not a request for JSON.
    code, _, err = cli("run", "-p", absent, "--", "tool", "--json")
    assert code == 1 and not err.startswith("{") and "Not found" in err


def test_account_commands_answer_in_json(cli, server: RunningServer, admin) -> None:
    name, password = unique("newbie"), "first-password"
    admin.users.create(name, password)
    code, _, err = cli(
        "login", server.url, "-u", name, "--password-stdin", "--json", stdin=password + "\n"
    )
    assert code == 0, err
    code, out, err = cli(
        "passwd", "--password-stdin", "--json", stdin=f"{password}\nsecond-password\n"
    )
    assert code == 0 and json.loads(out) == {"password_changed": True}, err
    code, out, _ = cli("logout", "--json")
    assert code == 0 and json.loads(out) == {"logged_out": True, "token_revoked": True}


# -- jobs ----------------------------------------------------------------------------------


def test_a_job_is_named_after_its_command() -> None:
    assert name_from(["python", "train.py", "--lr", "3e-4"]) == "python-train"
    assert name_from(["/usr/bin/python3.11", "-u", "/data/Fine Tune.py"]) == "python3-fine-tune"
    assert name_from(["训练"]) == "job"
    long = name_from(["x" * 40, "y" * 40])
    assert len(long) <= 63 and not long.endswith("-")


def test_submit_takes_its_file_with_f_and_following_is_long_only(
    cli, gpu_server: RunningServer, tmp_path
) -> None:
    login(cli, gpu_server)
    project = unique("submit")
    assert cli("projects", "create", project)[0] == 0
    spec = tmp_path / "job.yaml"
    spec.write_text(f"project: {project}\nname: yaml-job\ncommand: [sh, -c, 'echo hi']\n")
    spec.write_text(spec.read_text() + "resources: {cpus: 0.1, memory: 64Mi}\n")

    code, out, err = cli("submit", "-f", str(spec), "--follow")
    assert code == 0 and "hi" in out, err
    code, out, _ = cli("submit", "--file", str(spec), "--json")
    assert code == 0 and json.loads(out)["name"] == "yaml-job"
    code, out, _ = cli("submit", str(spec), "--json")  # the file as an argument, as before
    assert code == 0 and json.loads(out)["name"] == "yaml-job"
    code, _, err = cli("submit", "-f", str(spec), str(spec))
    assert code == 2 and "one job spec file" in err
    code, _, err = cli("submit")
    assert code == 2 and "suanli submit -f job.yaml" in err


def test_following_a_job_exits_with_its_status(cli, gpu_server: RunningServer, admin) -> None:
    login(cli, gpu_server)
    project = unique("status")
    assert cli("projects", "create", project)[0] == 0

    code, out, err = cli("run", "-p", project, *SMALL, "--follow", "--", "sh", "-c", "exit 3")
    assert code == 3, out + err
    code, _, _ = cli("run", "-p", project, *SMALL, "--follow", "--", "sh", "-c", "kill -9 $$")
    assert code == 128 + 9
    code, _, _ = cli(
        "run", "-p", project, *SMALL, "--max-duration", "1s", "--follow", "--", "sleep", "30"
    )
    assert code == 124

    with gpu_server.login() as api:
        stopper = threading.Thread(target=cancel_the_first_running_job, args=(api, project))
        stopper.start()
        code, _, _ = cli("run", "-p", project, *SMALL, "--follow", "--", "sleep", "30")
        stopper.join()
    assert code == 130

    code, out, err = cli(
        "run", "-p", project, *SMALL, "--follow", "--json", "--", "sh", "-c", "echo a; echo b"
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0, err
    assert records[0]["job"]["name"] == "sh-echo-a-echo-b"
    assert [r["line"] for r in records[1:-1]] == ["a", "b"]
    assert records[-1]["job"]["state"] == "succeeded"
    code, out, _ = cli("jobs", "logs", str(records[0]["job"]["id"]), "--json")
    assert [json.loads(line) for line in out.splitlines()] == [{"line": "a"}, {"line": "b"}]


def cancel_the_first_running_job(api, project: str) -> None:
    running = wait_for(
        lambda: api.jobs.list(project=project, state="running"), what="a running job"
    )
    api.jobs.cancel(running[0].id)


def test_a_running_job_says_where_it_runs_and_a_cancel_says_it_is_stopping(
    cli, gpu_server: RunningServer, admin
) -> None:
    login(cli, gpu_server)
    project = unique("cancel")
    assert cli("projects", "create", project)[0] == 0
    ids = []
    for _ in range(2):
        code, out, _ = cli("run", "-p", project, *SMALL, "--json", "--", "sleep", "60")
        ids.append(json.loads(out)["id"])
        assert json.loads(out)["name"] == "sleep-60"
    with gpu_server.login() as api:
        nodes = [n.name for n in api.nodes.list()]
        for job_id in ids:
            wait_for(lambda job_id=job_id: api.jobs.get(job_id).state == "running", "running")
    code, out, _ = cli("jobs", "list", "-p", project)
    assert code == 0 and f"Running on {nodes[0]} for" in out
    assert f"已在 {nodes[0]} 上运行" in cli("jobs", "list", "-p", project, language="zh-CN")[1]

    code, out, _ = cli("jobs", "cancel", str(ids[0]))
    assert code == 0 and out.strip() == f"Job {ids[0]} is being stopped (cancel sent)."
    code, out, _ = cli("jobs", "cancel", str(ids[1]), language="zh-CN")
    assert code == 0 and "正在停止" in out
    code, out, _ = cli("jobs", "cancel", str(ids[1]), "--json")
    assert code == 0 and json.loads(out)["id"] == ids[1]


# -- nodes and GPUs ------------------------------------------------------------------------


def test_a_node_the_engine_lost_counts_no_capacity(cli, gpu_server: RunningServer) -> None:
    login(cli, gpu_server)
    node = json.loads(cli("nodes", "list", "--json")[1])[0]["name"]
    assert "ready" in cli("nodes", "list")[1]
    database = Database(gpu_server.database_url)
    try:
        engine_says(database, node, available=False, state="down+drain", reason="Not responding")
        code, out, _ = cli("nodes", "list")
        assert code == 0 and "unavailable: down+drain (Not responding)" in out
        assert "ready" not in out
        row = next(line for line in out.splitlines() if line.strip().startswith(node))
        cells = [cell.strip() for cell in row.split("│")]
        assert cells[3:5] == ["2", "0"], row  # 2 GPUs, none free
        code, out, _ = cli("gpus", "list")
        assert out.count("node unavailable") == 2 and " free" not in out
        assert "不可用" in cli("nodes", "list", language="zh-CN")[1]
    finally:
        engine_says(database, node, available=True, state="", reason="")
        database.dispose()
    assert "ready" in cli("nodes", "list")[1]


def engine_says(database: Database, node: str, *, available: bool, state: str, reason: str):
    """What the cluster engine (Slurm) reported about a node, as the inventory stores it."""
    with database.writing() as session:
        row = session.get(Node, node)
        row.available, row.engine_state, row.engine_reason = available, state, reason
        session.commit()


def test_gpu_and_member_changes_answer_in_json(cli, gpu_server: RunningServer) -> None:
    login(cli, gpu_server)
    uuid = json.loads(cli("gpus", "list", "--json")[1])[0]["uuid"]
    code, out, _ = cli("gpus", "share", uuid, "--json")
    assert code == 0 and json.loads(out)["shared"] is True
    code, out, _ = cli("gpus", "share", uuid, "--exclusive", "--json")
    assert code == 0 and json.loads(out)["shared"] is False

    project, user = unique("team"), unique("member")
    with gpu_server.login() as api:
        api.users.create(user, "member-password")
    assert cli("projects", "create", project)[0] == 0
    code, out, _ = cli("members", "add", project, user, "--role", "viewer", "--json")
    assert code == 0 and json.loads(out)["role"] == "viewer"
    code, out, _ = cli("members", "remove", project, user, "--json")
    assert code == 0 and json.loads(out)["removed"] is True


# -- the server ----------------------------------------------------------------------------


def test_the_server_says_how_to_log_in_in_json(tmp_path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "suanli", "server", "--json", "--port", "0", "--data-dir", "d"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SUANLI_SSH_PORT": "0", "SUANLI_LOG_LEVEL": "warning"},
    )
    try:
        assert server.stdout is not None
        started = json.loads(server.stdout.readline())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert started["url"].startswith("http://127.0.0.1:")
    assert started["admin"]["generated_password"]
    assert started["login"].endswith(f"login {started['url']} --username admin")


def test_the_login_hint_names_a_cli_that_is_not_on_path(tmp_path, monkeypatch) -> None:
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "suanli").write_text("")
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert cli_main._cli_command() == str(venv / "bin" / "suanli")
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)  # not a virtual environment
    assert cli_main._cli_command() == "suanli"


# -- the console's charts ------------------------------------------------------------------


def test_a_chart_breaks_its_line_where_the_data_has_a_hole(server: RunningServer, admin) -> None:
    """Samples every 10 s, then an hour with none (the server was down), then 10 s again: the
    line breaks there once; without the hole it does not."""
    from playwright.sync_api import expect, sync_playwright

    from tests.web.browsing import CHROMIUM, CHROMIUM_ARGS, log_in, new_context

    node = admin.nodes.list()[0].name
    now = int(time.time())
    before = [[now - 4000 + 10 * i, 20.0] for i in range(10)]
    after = [[now - 300 + 10 * i, 40.0] for i in range(10)]

    def answer(points: list[list[float]]) -> dict:
        start, end = now - 6 * 3600, now
        series = [{"labels": {"node": node}, "points": points}]
        return {
            "start": iso(start),
            "end": iso(end),
            "step": 10,
            "unit": "percent",
            "series": series,
        }

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context = new_context(browser, server)
        page = context.new_page()
        log_in(page)
        for points, gaps in [(before + after, "1"), (after, "0")]:
            page.unroute("**/charts/query?metric=node_cpu_percent*")
            page.route(
                "**/charts/query?metric=node_cpu_percent*",
                lambda route, _request, points=points: route.fulfill(json=answer(points)),
            )
            page.goto(f"/nodes/{node}")
            chart = page.locator("[data-test=chart-cpu]")
            expect(chart).to_have_attribute("data-state", "drawn", timeout=15_000)
            expect(chart).to_have_attribute("data-gaps", gaps)
        browser.close()


def iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

"""`suanli services`, `suanli keys` and `suanli prompts` end to end against a real server
whose engine is the fast fake one (tests/serving/upstream.py): deploy and wait until ready,
call through the gateway, keys that work with the openai client until revoked, usage as a
table and as CSV, a rolling update, an engine that exits at start explained, and bad input
answered with one clear line."""

import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import yaml
from waiting import wait_for

from suanli.cli.main import main
from suanli.client import Client
from tests.conftest import RunningServer, unique
from tests.serving.helpers import FAKE_ENGINE

ENGINES = {"fake": FAKE_ENGINE}
Cli = Callable[..., tuple[int, str, str]]
SMALL = ("--cpus", "0.2", "--memory", "256Mi")  # replicas fit beside each other on 2 cores


@pytest.fixture(scope="module")
def serving(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[RunningServer]:
    """A server of the module's own with the fake engine registered."""
    env = {"SUANLI_ENGINES": json.dumps(ENGINES)}
    running = launch_server(tmp_path_factory.mktemp("services-cli"), env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin_client(serving: RunningServer) -> Iterator[Client]:
    client = serving.login()
    yield client
    client.close()


@pytest.fixture(scope="module")
def project(admin_client: Client) -> str:
    name = unique("nlp")
    admin_client.projects.create(name)
    return name


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, serving: RunningServer, admin_client: Client) -> Cli:
    """Run `suanli ARGS` in-process as the administrator; returns (exit code, stdout, stderr)
    and fails the test on any traceback."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SUANLI_URL", serving.url)
    monkeypatch.setenv("SUANLI_TOKEN", admin_client.token or "")
    for variable in ("SUANLI_LANG", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")

    def run(*args: str, language: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        if language:
            monkeypatch.setenv("SUANLI_LANG", language)
        else:
            monkeypatch.delenv("SUANLI_LANG", raising=False)
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


@pytest.fixture
def named(project: str, admin_client: Client) -> Iterator[Callable[[str], str]]:
    """Unique service names; their services are stopped at the end (two cores: the next
    test's replicas need the room)."""
    names: list[str] = []

    def make(prefix: str) -> str:
        names.append(unique(prefix))
        return names[-1]

    yield make
    for service in admin_client.services.list(project):
        if service.name in names and service.state != "stopped":
            admin_client.services.stop(service.id)


def deploy(cli: Cli, project: str, name: str, *args: str) -> None:
    code, out, err = cli(
        "services", "deploy", name, "-p", project, "--engine", "fake", *SMALL, *args, "--wait"
    )
    assert code == 0, out + err
    assert f"Service {name} is ready" in out


def shown(cli: Cli, project: str, name: str) -> dict:
    code, out, err = cli("services", "show", name, "-p", project, "--json")
    assert code == 0, err
    return json.loads(out)


def test_deploy_from_a_file_list_show_and_call(
    cli: Cli, project: str, named: Callable[[str], str], tmp_path: Path
) -> None:
    name = named("chat")
    spec = tmp_path / "service.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "project": project,
                "name": name,
                "engine": "fake",
                "args": ["--tokens", "4"],
                "resources": {"cpus": 0.2, "memory": "256Mi"},
            }
        )
    )
    code, out, err = cli("services", "deploy", "-f", str(spec), "--wait", "--timeout", "60")
    assert code == 0, out + err
    assert f"Service {name} is ready" in out and f"model {project}/{name}" in out

    code, out, _ = cli("services", "list", "-p", project)
    assert code == 0
    row = next(line for line in out.splitlines() if name in line)
    assert "ready" in row and "fake" in row and "1/1" in row
    code, out, _ = cli("services", "show", name, "-p", project)
    assert code == 0 and "/v1 (model" in out and "--tokens" in out
    assert shown(cli, project, name)["ready"] == 1

    code, out, err = cli("services", "call", name, "-p", project, "hello there")
    assert code == 0, err
    assert out.strip() == "tok0 tok1 tok2 tok3"
    assert "prompt tokens 2" in err and "completion tokens 4" in err
    code, out, _ = cli("services", "call", name, "-p", project, "hi", "--max-tokens", "2", "--json")
    reply = json.loads(out)
    assert reply["text"] == "tok0 tok1" and reply["completion_tokens"] == 2
    assert reply["latency_s"] > 0

    code, _, err = cli("services", "call", unique("absent"), "-p", project, "hi")
    assert code == 1 and "model_not_found" in err


def test_keys_work_until_revoked_and_usage_counts_the_calls(
    cli: Cli, project: str, named: Callable[[str], str], serving: RunningServer, tmp_path: Path
) -> None:
    name = named("kchat")
    deploy(cli, project, name)
    code, out, err = cli(
        "keys", "create", "ci", "-p", project, "--models", name, "--expires", "30d",
        "--rpm", "100", "--budget", "100000", "--per", "day",
    )  # fmt: skip
    assert code == 0, err
    key = next(word for word in out.split() if word.startswith("sk-suanli-"))
    assert "shown only this once" in err

    gateway = openai.OpenAI(base_url=serving.url + "/v1", api_key=key, max_retries=0)
    answer = gateway.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "one two three"}], max_tokens=3
    )
    assert answer.choices[0].message.content == "tok0 tok1 tok2"

    code, out, _ = cli("keys", "list", "-p", project)
    row = next(line for line in out.splitlines() if " ci " in line)
    assert "100 requests/min" in row and "of 100000 this day" in row and name in row
    key_id = json.loads(cli("keys", "list", "-p", project, "--json")[1])[0]["id"]

    def usage() -> list[dict]:
        out = cli("services", "usage", "-p", project, "--service", name, "--json")[1]
        rows = json.loads(out)
        return rows if sum(r["requests"] for r in rows) >= 1 else []

    rows = wait_for(usage, timeout=10, what="the call metered")
    assert rows[0]["model"] == f"{project}/{name}" and rows[0]["key"] == "ci"
    assert rows[0]["completion_tokens"] == 3
    code, out, _ = cli("services", "usage", "-p", project, "--by", "day", "--since", "2d")
    assert code == 0 and f"{project}/{name}" in out
    target = tmp_path / "usage.csv"
    code, out, _ = cli("services", "usage", "-p", project, "--csv", str(target))
    assert code == 0 and "written to" in out
    lines = target.read_text().strip().splitlines()
    assert "prompt_tokens" in lines[0]
    assert any(line.split(",")[1:4] == [f"{project}/{name}", "admin", "ci"] for line in lines)

    code, out, _ = cli("keys", "revoke", str(key_id))
    assert code == 0 and "revoked" in out
    with pytest.raises(openai.AuthenticationError):
        gateway.chat.completions.create(model=name, messages=[{"role": "user", "content": "x"}])
    assert "revoked" in cli("keys", "list", "-p", project)[1]


def test_update_rolls_out_new_replicas(cli: Cli, project: str, named: Callable[[str], str]) -> None:
    name = named("roll")
    deploy(cli, project, name, "--arg=--tokens", "--arg", "2")
    before = {r["id"] for r in shown(cli, project, name)["replicas_list"]}

    code, out, err = cli(
        "services", "update", name, "-p", project, "--arg=--tokens", "--arg", "5", "--wait"
    )
    assert code == 0, out + err
    assert "rolling out" in out and f"Service {name} is ready" in out
    after = shown(cli, project, name)
    assert after["template"]["args"] == ["--tokens", "5"]
    ready = {r["id"] for r in after["replicas_list"] if r["ready"]}
    assert ready and not ready & before
    wait_for(
        lambda: (
            cli("services", "call", name, "-p", project, "x")[1].split()
            == [f"tok{i}" for i in range(5)]
        ),
        timeout=5,
        what="the new replica answering",
    )

    code, out, _ = cli("services", "scale", name, "-p", project, "--replicas", "1..3")
    assert code == 0 and "(1..3)" in out
    assert cli("services", "stop", name, "-p", project)[0] == 0
    code, out, _ = cli("services", "start", name, "-p", project)
    assert code == 0 and "started again" in out
    assert cli("services", "stop", name, "-p", project)[0] == 0

    def removed() -> bool:
        return cli("services", "rm", name, "-p", project)[0] == 0

    wait_for(removed, timeout=15, what="the stopped service removed")
    code, _, err = cli("services", "show", name, "-p", project)
    assert code == 1 and f"no service {name}" in err


def test_an_engine_that_exits_at_start_is_explained(
    cli: Cli, project: str, named: Callable[[str], str]
) -> None:
    name = named("broken")
    code, out, err = cli(
        "services", "deploy", name, "-p", project, "--engine", "fake", *SMALL, "--arg=--fail-start",
        "--wait",
    )  # fmt: skip
    assert code == 1
    assert f"service {name} is not ready" in err
    assert f"fatal: cannot load model {name}" in err
    code, out, _ = cli("services", "logs", name, "-p", project, "--tail", "5")
    assert code == 0 and "fatal: cannot load model" in out
    code, out, _ = cli("services", "list", "-p", project)
    assert "failing" in next(line for line in out.splitlines() if name in line)


def test_bad_input_names_the_field_and_the_reason(cli: Cli, project: str, tmp_path: Path) -> None:
    base = ("services", "deploy", unique("bad"), "-p", project)
    code, _, err = cli(*base, "--engine", "nope")
    assert code == 1 and "engine" in err and "No engine named nope" in err
    code, _, err = cli(*base, "--engine", "fake", "--replicas", "5..2")
    assert code == 1 and "replicas:" in err and "at least the minimum" in err
    code, _, err = cli(*base, "--engine", "nope", language="zh-CN")
    assert code == 1 and "没有注册名为 nope 的引擎" in err
    code, _, err = cli(*base, "--engine", "nope", "--json")
    assert code == 1 and json.loads(err)["error"]["errors"][0]["field"] == "engine"
    listed = tmp_path / "list.yaml"
    listed.write_text("- name: x\n- engine: fake\n")
    code, _, err = cli("services", "deploy", "-f", str(listed))
    assert code == 2 and "not a valid service spec" in err and "not a mapping" in err
    code, _, err = cli("services", "deploy", "-f", str(listed), "--json")
    problem = json.loads(err)["error"]
    assert code == 2 and problem["errors"][0]["field"] == "--file"
    code, _, err = cli("services", "deploy", "--engine", "fake", "-p", project)
    assert code == 2 and "NAME" in err
    code, _, err = cli("services", "usage", "-p", project, "--since", "yesterday")
    assert code == 2 and "--since" in err
    code, _, err = cli("keys", "create", "k", "-p", project, "--per", "week")
    assert code == 1 and "budget_period" in err


def test_prompts_and_chinese_output(cli: Cli, project: str) -> None:
    code, out, _ = cli(
        "prompts", "save", "summary", "-p", project, "--template", "Summarise {text} in {n} words"
    )
    assert code == 0 and "version 1" in out and "text" in out
    cli(
        "prompts",
        "save",
        "summary",
        "-p",
        project,
        "--template",
        "Short: {text}",
        "--system",
        "Be brief",
    )
    code, out, _ = cli("prompts", "show", "summary", "-p", project)
    assert code == 0 and "Short: {text}" in out and "Be brief" in out
    versions = json.loads(cli("prompts", "show", "summary", "-p", project, "--json")[1])
    assert [v["version"] for v in versions] == [2, 1]
    assert "summary" in cli("prompts", "list", "-p", project)[1]

    outputs = [
        cli("services", "list", "-p", project, language="zh-CN"),
        cli("keys", "list", "-p", project, language="zh-CN"),
        cli("prompts", "show", "summary", "-p", project, language="zh-CN"),
        cli("services", "usage", "-p", project, language="zh-CN"),
        cli("services", "engines", language="zh-CN"),
    ]
    for code, out, err in outputs:
        assert code == 0, err
        for prefix in ("cli.", "label.", "error."):
            assert prefix not in out + err
    assert "模型" in outputs[0][1] and "版本" in outputs[2][1]

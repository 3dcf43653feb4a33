"""The CLI end to end against a real server: login → project → member → quota → audit."""

import io
import json
import os
import stat
import subprocess
import sys

import httpx
import pytest

from suanli.cli.main import main
from suanli.client import Client
from tests.conftest import ADMIN_PASSWORD, RunningServer, unique


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run `suanli ARGS` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for variable in ("SUANLI_URL", "SUANLI_TOKEN", "SUANLI_LANG", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")

    def run(*args: str, stdin: str = "", language: str | None = None):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        if language:
            monkeypatch.setenv("SUANLI_LANG", language)
        else:
            monkeypatch.delenv("SUANLI_LANG", raising=False)
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_the_whole_flow(cli, server: RunningServer, tmp_path) -> None:
    code, out, _ = cli(
        "login", server.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
    )
    assert code == 0 and "admin" in out
    config = tmp_path / "config" / "suanli" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700

    project, user = unique("cli"), unique("cli-user")
    assert cli("users", "create", user, "--password-stdin", stdin="cli-password\n")[0] == 0
    assert cli("projects", "create", project, "--display-name", "命令行")[0] == 0
    assert cli("members", "add", project, user, "--role", "viewer")[0] == 0
    code, out, _ = cli(
        "quota",
        "set",
        project,
        "--guaranteed-gpus",
        "2",
        "--max-gpus",
        "4",
        "--memory",
        "256Gi",
        "--cpus",
        "32",
    )
    assert code == 0 and "256 GiB" in out

    code, out, _ = cli("quota", "show", project, "--json")
    assert json.loads(out)["memory_bytes"] == 256 * 2**30
    code, out, _ = cli("members", "list", project, "--json")
    assert {m["user"]: m["role"] for m in json.loads(out)}[user] == "viewer"
    code, out, _ = cli("audit", "--project", project, "--json")
    assert [e["action"] for e in json.loads(out)] == [
        "project.quota",
        "project.member_add",
        "project.create",
    ]
    code, out, _ = cli("audit", "--project", project)
    assert code == 0 and "project.quota" in out

    code, out, _ = cli("whoami", "--json")
    assert json.loads(out)["name"] == "admin"
    assert cli("logout")[0] == 0
    code, _, err = cli("whoami")
    assert code == 1 and "suanli login" in err


def test_errors_are_one_clear_message(cli, server: RunningServer) -> None:
    cli("login", server.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    code, _, err = cli("projects", "show", unique("absent"))
    assert code == 1 and "Not found" in err and "Traceback" not in err
    code, _, err = cli("projects", "create", "Bad_Name")
    assert code == 1 and "name:" in err and "lowercase" in err
    code, _, err = cli("quota", "set", "anything", "--memory", "lots")
    assert code == 2 and "--memory" in err
    code, _, err = cli(
        "login", "http://127.0.0.1:9", "-u", "admin", "--password-stdin", stdin="x\n"
    )
    assert code == 1 and "Cannot reach" in err


def test_chinese_output_has_no_untranslated_keys(cli, server: RunningServer) -> None:
    code, out, _ = cli(
        "login",
        server.url,
        "-u",
        "admin",
        "--password-stdin",
        stdin=ADMIN_PASSWORD + "\n",
        language="zh-CN",
    )
    assert code == 0 and "已以 admin 身份登录" in out
    project = unique("zh")
    outputs = [
        cli("projects", "create", project, language="zh-CN"),
        cli("projects", "list", language="zh-CN"),
        cli("projects", "show", project, language="zh-CN"),
        cli("quota", "show", project, language="zh-CN"),
        cli("members", "list", project, language="zh-CN"),
        cli("users", "list", language="zh-CN"),
        cli("users", "show", "admin", language="zh-CN"),
        cli("tokens", "list", language="zh-CN"),
        cli("audit", "--limit", "3", language="zh-CN"),
        cli("whoami", language="zh-CN"),
        cli("version", language="zh-CN"),
        cli("projects", "show", unique("absent"), language="zh-CN"),
    ]
    assert [code for code, _, _ in outputs] == [0] * (len(outputs) - 1) + [1]
    for _, out, err in outputs:
        assert "cli." not in out + err, out + err
    assert "名称" in outputs[1][1] and "不限" in outputs[3][1]
    assert "未找到" in outputs[-1][2]


def test_tokens_from_the_cli(cli, server: RunningServer) -> None:
    cli("login", server.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    code, out, _ = cli("tokens", "create", "ci", "--days", "30", "--json")
    created = json.loads(out)
    assert code == 0 and created["token"].startswith("sl_")
    code, out, _ = cli("tokens", "list")
    assert created["token"] not in out and created["prefix"] in out
    assert cli("tokens", "revoke", str(created["id"]))[0] == 0


def test_a_token_for_prometheus_reads_metrics_only(cli, server: RunningServer) -> None:
    cli("login", server.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    code, out, _ = cli("tokens", "create", "prometheus", "--kind", "metrics", "--json")
    created = json.loads(out)
    assert code == 0 and created["kind"] == "metrics"
    scrape = {"Authorization": f"Bearer {created['token']}"}
    assert httpx.get(f"{server.url}/metrics", headers=scrape).status_code == 200
    assert httpx.get(f"{server.url}/api/v1/me", headers=scrape).status_code == 401
    assert cli("tokens", "revoke", str(created["id"]))[0] == 0


def test_the_installed_command_and_environment_login(server: RunningServer, admin, tmp_path):
    """The console script itself, configured by SUANLI_URL and SUANLI_TOKEN alone."""
    env = {
        **os.environ,
        "SUANLI_URL": server.url,
        "SUANLI_TOKEN": admin.token or "",
        "XDG_CONFIG_HOME": str(tmp_path),
        "LANG": "C.UTF-8",
    }
    env.pop("SUANLI_LANG", None)
    done = subprocess.run(
        ["suanli", "whoami", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "admin"


def test_logout_revokes_the_saved_login_not_the_environment_token(
    cli, server: RunningServer, admin, monkeypatch
) -> None:
    cli("login", server.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    saved = {t.id for t in admin.tokens.list() if t.kind == "session"}
    script = admin.tokens.create("ci").token
    monkeypatch.setenv("SUANLI_TOKEN", script)
    assert cli("logout")[0] == 0
    monkeypatch.delenv("SUANLI_TOKEN")
    live = {t.id for t in admin.tokens.list()}
    assert len(saved - live) == 1  # the login's token is gone
    with Client(server.url, script) as ci:
        assert ci.whoami().name == "admin"  # the environment's token still works


def test_a_broken_config_file_is_explained(cli, tmp_path) -> None:
    path = tmp_path / "config" / "suanli" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("url = [unclosed\n")
    code, _, err = cli("whoami")
    assert code == 1 and str(path) in err and "Traceback" not in err


def test_the_config_directory_is_private_even_if_it_existed(cli, server, tmp_path) -> None:
    folder = tmp_path / "config" / "suanli"
    folder.mkdir(parents=True, mode=0o755)
    cli("login", server.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_jobs_from_the_cli_in_both_languages(cli, server_factory, tmp_path) -> None:
    server = server_factory({"SUANLI_SIMULATED_GPUS": '[{"count": 2, "model": "A100"}]'})
    cli("login", server.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert cli("projects", "create", "cli-jobs")[0] == 0
    code, out, _ = cli(
        "run",
        "-p",
        "cli-jobs",
        "--cpus",
        "0.1",
        "--memory",
        "64Mi",
        "--follow",
        "--",
        sys.executable,
        "-c",
        "print('hello from the job')",
    )
    assert code == 0 and "hello from the job" in out
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "project: cli-jobs\nname: yaml-job\ncommand: [sleep, '30']\n"
        "resources: {gpus: 1, cpus: 0.1, memory: 64Mi}\n"
    )
    code, out, _ = cli("submit", str(spec), "--json")
    submitted = json.loads(out)
    assert code == 0 and submitted["name"] == "yaml-job"
    for language in ("en", "zh-CN"):
        outputs = [
            cli("jobs", "list", language=language),
            cli("jobs", "show", str(submitted["id"]), language=language),
            cli("nodes", "list", language=language),
            cli("gpus", "list", language=language),
        ]
        for code, out, err in outputs:
            assert code == 0, err
            for key in ("cli.", "reason.", "event.", "exit."):
                assert key not in out + err, out + err
    assert "模拟" in cli("gpus", "list", language="zh-CN")[1]  # simulated GPUs say so
    assert cli("jobs", "cancel", str(submitted["id"]))[0] == 0
    code, _, err = cli("run", "-p", "cli-jobs", "--gpus", "3", "--", "true")
    assert code == 1 and "largest node has 2" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("project: [unclosed\n")
    code, _, err = cli("submit", str(bad))
    assert code == 2 and "Traceback" not in err

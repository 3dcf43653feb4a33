"""`suanli ssh-keys` and `suanli envs` end to end against a real server."""

import json
import time
from collections.abc import Iterator

import asyncssh
import pytest

from suanli.client import Client
from tests import test_cli
from tests.conftest import ADMIN_PASSWORD, RunningServer, unique

cli = test_cli.cli  # the fixture that runs `suanli ARGS` in-process

SIMULATED_GPUS = '[{"count": 2, "model": "A100"}]'


def public_key(comment: str = "me@laptop") -> str:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    return key.export_public_key().decode()


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory, launch_server) -> Iterator[RunningServer]:
    """One server for the module, with two simulated GPUs."""
    env = {
        "SUANLI_SIMULATED_GPUS": SIMULATED_GPUS,
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
    }
    running = launch_server(tmp_path_factory.mktemp("devenvs"), env)
    yield running
    running.stop()


def login(cli, server: RunningServer, name: str = "admin", password: str = ADMIN_PASSWORD):
    code, _, err = cli("login", server.url, "-u", name, "--password-stdin", stdin=password + "\n")
    assert code == 0, err


def login_as_new_user(cli, server: RunningServer) -> None:
    """A user of one's own: their SSH keys are theirs alone."""
    name, password = unique("keys"), "password-" + unique("pw")
    with server.login() as admin:
        admin.users.create(name, password)
    login(cli, server, name, password)


def login_with_a_project(cli, server: RunningServer) -> str:
    login(cli, server)
    project = unique("lab")
    assert cli("projects", "create", project)[0] == 0
    return project


def wait_for_state(client: Client, env_id: int, states: set[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (state := client.devenvs.get(env_id).state) not in states:
        assert time.monotonic() < deadline, f"still {state}"
        time.sleep(0.2)


def test_ssh_keys_add_list_remove(cli, gpu_server, tmp_path, monkeypatch) -> None:
    login_as_new_user(cli, gpu_server)
    path = tmp_path / "laptop.pub"
    path.write_text(public_key())
    code, out, err = cli("ssh-keys", "add", str(path), "--name", "laptop")
    assert code == 0 and "laptop" in out and "SHA256:" in out, err
    code, out, _ = cli("ssh-keys", "list", "--json")
    added = next(k for k in json.loads(out) if k["name"] == "laptop")
    assert added["algorithm"] == "ssh-ed25519"
    code, out, _ = cli("ssh-keys", "list")
    assert code == 0 and added["fingerprint"] in out

    code, _, err = cli("ssh-keys", "add", str(path))
    assert code == 1 and "already registered" in err

    # From standard input, and from ~/.ssh/id_ed25519.pub when no file is named (its
    # comment names it).
    code, out, _ = cli("ssh-keys", "add", "-", "--json", stdin=public_key())
    piped = json.loads(out)
    assert code == 0 and piped["name"] == "me@laptop"
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(public_key("default@laptop"))
    code, out, err = cli("ssh-keys", "add")
    assert code == 0 and "default@laptop" in out, err

    for key_id in (added["id"], piped["id"]):
        assert cli("ssh-keys", "remove", str(key_id))[0] == 0
    code, out, _ = cli("ssh-keys", "list", "--json")
    assert {k["name"] for k in json.loads(out)} == {"default@laptop"}
    code, _, err = cli("ssh-keys", "remove", str(added["id"]))
    assert code == 1 and "no SSH key" in err


def test_bad_key_files_are_refused_clearly(cli, gpu_server, tmp_path) -> None:
    login_as_new_user(cli, gpu_server)
    before = cli("ssh-keys", "list", "--json")[1]
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a key at all\n")
    code, _, err = cli("ssh-keys", "add", str(garbage))
    assert code == 1 and "not an SSH public key" in err and "Traceback" not in err

    # A private key never leaves the computer: refused before anything is sent.
    private = tmp_path / "id_ed25519"
    private.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    code, _, err = cli("ssh-keys", "add", str(private))
    assert code == 1 and "private key" in err and "Nothing was sent" in err

    missing = tmp_path / "absent.pub"
    code, _, err = cli("ssh-keys", "add", str(missing))
    assert code == 1 and str(missing) in err and "ssh-keygen" in err
    (tmp_path / "empty.pub").write_text("\n")
    code, _, err = cli("ssh-keys", "add", str(tmp_path / "empty.pub"))
    assert code == 1 and "empty" in err
    assert cli("ssh-keys", "list", "--json")[1] == before


def test_dev_environments_from_the_cli(cli, gpu_server: RunningServer, tmp_path) -> None:
    server = gpu_server
    project = login_with_a_project(cli, server)
    key = tmp_path / "id_ed25519.pub"
    key.write_text(public_key())
    assert cli("ssh-keys", "add", str(key))[0] == 0
    name = unique("dev")
    code, out, err = cli(
        "envs",
        "create",
        name,
        "--project",
        project,
        "--gpus",
        "1",
        "--cpus",
        "0.1",
        "--memory",
        "256Mi",
        "--tool",
        "terminal",
        "--tool",
        "ssh",
        "--idle-timeout",
        "30m",
        "--max-duration",
        "8h",
        "--json",
    )
    assert code == 0, err
    created = json.loads(out)
    env_id = created["id"]
    assert created["tools"] == ["terminal", "ssh"]
    assert (created["idle_timeout_seconds"], created["max_duration_seconds"]) == (1800, 28800)
    assert created["spec"]["resources"]["gpus"] == 1

    code, out, _ = cli("envs", "list")
    assert code == 0 and name in out and "Terminal, SSH" in out
    code, out, _ = cli("envs", "list", "--project", project, "--json")
    assert [e["id"] for e in json.loads(out)] == [env_id]

    with server.login() as admin:
        wait_for_state(admin, env_id, {"running"})
        code, out, err = cli("envs", "show", str(env_id))
        assert code == 0, err
        ssh = admin.devenvs.get(env_id).ssh
        deadline = time.monotonic() + 20
        while "[suanli agent] ready" not in admin.devenvs.logs(env_id).text:
            assert time.monotonic() < deadline, "the agent never said it was ready"
            time.sleep(0.2)
    code, logs, _ = cli("envs", "logs", str(env_id), "--tail", "5")
    assert code == 0 and "[suanli agent] ready" in logs
    assert ssh is not None and ssh.command.startswith("ssh -p ")
    assert ssh.command in out and f"Host suanli-{name}" in out
    assert f"{server.url}/devenvs/{env_id}/terminal" in out  # a full URL, not a path
    assert "ssh-keys add" not in out  # there is a key already

    code, out, _ = cli("envs", "ssh-config", str(env_id))
    assert code == 0 and out == ssh.config  # only the entry: ready for >> ~/.ssh/config
    assert out.startswith(f"Host suanli-{name}\n") and f"    Port {ssh.port}\n" in out

    for language in ("en", "zh-CN"):
        for args in (("envs", "list"), ("envs", "show", str(env_id)), ("ssh-keys", "list")):
            code, out, err = cli(*args, language=language)
            assert code == 0, err
            for prefix in ("cli.", "label.", "reason.", "event."):
                assert prefix not in out + err, out + err

    code, _, err = cli("envs", "rm", str(env_id))
    assert code == 1 and "stop it first" in err
    code, out, err = cli("envs", "stop", str(env_id), "--wait")
    assert code == 0 and "stopped" in out, err
    code, out, err = cli("envs", "rm", str(env_id))
    assert code == 0 and "removed" in out, err
    code, out, _ = cli("envs", "list", "--project", project, "--json")
    assert json.loads(out) == []
    code, _, err = cli("envs", "show", str(env_id))
    assert code == 1 and "no dev environment" in err


def test_a_spec_file_with_options_over_it(cli, gpu_server: RunningServer, tmp_path) -> None:
    project = login_with_a_project(cli, gpu_server)
    spec = tmp_path / "env.yaml"
    spec.write_text(
        f"project: {project}\nname: from-file\ntools: [terminal]\n"
        "resources: {gpu_memory: 10Gi, cpus: 0.1, memory: 256Mi}\n"
    )
    # --gpus replaces the file's GPU fraction instead of clashing with it.
    code, out, err = cli("envs", "create", "-f", str(spec), "--gpus", "1", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["name"] == "from-file" and created["tools"] == ["terminal"]
    assert created["spec"]["resources"]["gpus"] == 1
    assert created["spec"]["resources"].get("gpu_memory") is None
    assert created["ssh"] is None

    code, _, err = cli("envs", "ssh-config", str(created["id"]))
    assert code == 1 and "no SSH access" in err
    code, out, _ = cli("envs", "show", str(created["id"]))
    assert "Host suanli-" not in out
    assert cli("envs", "stop", str(created["id"]))[0] == 0

    bad = tmp_path / "bad.yaml"
    bad.write_text("project: [unclosed\n")
    code, _, err = cli("envs", "create", "-f", str(bad))
    assert code == 2 and "Traceback" not in err

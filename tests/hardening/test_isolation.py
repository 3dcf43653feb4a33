"""The default install attacked as an untrusted tenant would attack it (docs/admin-guide.md,
"Security model"): a server started as root with no configuration but where its folders go. Every
attack here worked before workloads ran as their users' own accounts: a member's job read
the database, the SSH keys, the administrator's password from its wrapper's environment and
another tenant's log, and SSH into one's own dev environment gave uid 0.
"""

import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh
import httpx
import psutil
import pytest
from agentpython import agent_python
from waiting import run_async, wait_for

from suanli.client import Client

if TYPE_CHECKING:  # the root conftest's; not importable by name from here
    from tests.conftest import RunningServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the default install runs as root")

ADMIN_PASSWORD = "admin-test-password"  # tests/conftest.py gives every test server this one
PASSWORD = "isolation-test-password"
SIMULATED = json.dumps([{"count": 2, "model": "Sim-80GB", "memory_bytes": 80 * 2**30}])
# What a tenant's job tries. Each line prints its marker only if the attack worked.
ATTACK = """
echo "uid=$(id -u) user=$(id -un)"
head -c 16 {data}/suanli.db && echo BROKE:read-database
cat {data}/ssh/gateway_ed25519_key >/dev/null && echo BROKE:read-gateway-key
cat {data}/ssh/host_ed25519_key >/dev/null && echo BROKE:read-host-key
ls {data} >/dev/null && echo BROKE:list-data-dir
tr '\\0' '\\n' < /proc/$PPID/environ | grep -q SUANLI_ && echo BROKE:wrapper-environment
env | grep -q ADMIN_PASSWORD && echo BROKE:own-environment
cat {work}/{other}/output.log && echo BROKE:read-other-log
ls {work} >/dev/null && echo BROKE:list-work-dir
kill -0 {server} && echo BROKE:signal-server
echo attack-over
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """Where the other users' accounts may reach (pytest's own folders are private)."""
    path = Path(tempfile.mkdtemp(prefix="suanli-isolation-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(base: Path, launch_server: Any) -> Iterator["RunningServer"]:
    data = base / "data"
    data.mkdir(mode=0o755)  # too open, as an administrator's mkdir leaves it
    data.chmod(0o755)
    env = {
        "SUANLI_WORKLOAD_IDENTITY": "own",  # the default, which the other suites turn off
        "SUANLI_WORK_DIR": str(base / "work"),
        "SUANLI_UNIX_HOME_ROOT": str(base / "home"),
        "SUANLI_SIMULATED_GPUS": SIMULATED,
        "SUANLI_DEVENV_AGENT_PYTHON": agent_python(),
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
    }
    server = launch_server(base, env, f"sqlite:///{data / 'suanli.db'}")
    yield server
    server.stop()
    _remove_accounts(base / "home")


def _remove_accounts(homes: Path) -> None:
    for home in homes.glob("sl-*"):
        subprocess.run(["userdel", "--remove", home.name], check=False, capture_output=True)


class Tenants:
    """Two projects, each with one member: alice in `pa`, bob in `pb`."""

    def __init__(self, server: "RunningServer") -> None:
        self.admin = server.login("admin", ADMIN_PASSWORD)
        self.alice_name, self.bob_name = unique("alice"), unique("bob")
        self.pa, self.pb = unique("pa"), unique("pb")
        for name, project in ((self.alice_name, self.pa), (self.bob_name, self.pb)):
            self.admin.users.create(name, PASSWORD)
            self.admin.projects.create(project, owner=name)
        self.alice = server.login(self.alice_name, PASSWORD)
        self.bob = server.login(self.bob_name, PASSWORD)


@pytest.fixture(scope="module")
def tenants(platform: "RunningServer") -> Tenants:
    return Tenants(platform)


def run(client: Client, project: str, script: str, **spec: Any) -> dict[str, Any]:
    job = client.jobs.submit({"project": project, "script": script, **spec})
    return {"id": job.id}


def ended(client: Client, job_id: int, timeout: float = 60) -> Any:
    return wait_for(
        lambda: (job := client.jobs.get(job_id)).state in ("succeeded", "failed") and job,
        timeout,
        f"job {job_id} to end",
    )


def log_of(client: Client, job_id: int) -> str:
    return client.jobs.logs(job_id).text


def test_the_platforms_files_are_private_from_the_start(platform: "RunningServer") -> None:
    data = platform.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "suanli.db").stat().st_mode) == 0o600
    wait_for(lambda: (data / "ssh" / "host_ed25519_key").exists(), 20, "the gateway's key")
    assert stat.S_IMODE((data / "ssh").stat().st_mode) == 0o700
    for key in (data / "ssh").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert any("was mode 755: now 700" in line for line in platform.output), platform.output


def test_a_tenants_job_reaches_nothing_of_the_platform_or_another_tenant(
    platform: "RunningServer", tenants: Tenants, base: Path
) -> None:
    secret = f"bob-secret-{secrets.token_hex(4)}"
    bobs = run(tenants.bob, tenants.pb, f"echo {secret}; sleep 60")
    wait_for(lambda: secret in log_of(tenants.bob, bobs["id"]), 30, "bob's job to print")
    attack = ATTACK.format(
        data=platform.data_dir,
        work=base / "work",
        other=bobs["id"],
        server=platform.process.pid,
    )
    alices = run(tenants.alice, tenants.pa, attack)
    job = ended(tenants.alice, alices["id"])
    output = log_of(tenants.alice, alices["id"])
    assert "attack-over" in output, output
    assert "BROKE:" not in output, output
    assert secret not in output and "SQLite format" not in output
    account = pwd.getpwnam(f"sl-{tenants.alice_name}")
    assert f"uid={account.pw_uid} user=sl-{tenants.alice_name}" in output
    assert account.pw_uid not in (0, os.geteuid())
    assert job.state == "succeeded"
    # Each user's own folder is theirs alone; bob's log is his to read through the API only.
    folder = base / "work" / str(alices["id"])
    assert folder.stat().st_uid == account.pw_uid
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert secret in log_of(tenants.bob, bobs["id"])
    tenants.bob.jobs.cancel(bobs["id"])


def test_a_wrapper_holds_none_of_the_servers_environment(
    platform: "RunningServer", tenants: Tenants
) -> None:
    """What /proc/$PPID/environ would show a job running as the server's user."""
    job = run(tenants.alice, tenants.pa, "echo up; sleep 60")
    wait_for(lambda: "up" in log_of(tenants.alice, job["id"]), 30, "the job to start")
    marker = f"/jobs/{job['id']}/attempt-1"
    wrappers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(marker in arg for arg in p.info["cmdline"] or ())
    ]
    assert len(wrappers) == 1
    environment = wrappers[0].environ()
    assert not [key for key in environment if key.startswith("SUANLI_")], environment
    assert ADMIN_PASSWORD not in json.dumps(environment)
    tenants.alice.jobs.cancel(job["id"])


def test_a_log_replaced_by_a_link_to_the_database_shows_nothing(
    platform: "RunningServer", tenants: Tenants, base: Path
) -> None:
    """The job's user owns its folder and may swap its log for a link to the platform's
    database: the server reads and writes logs without following links."""
    target = platform.data_dir / "suanli.db"
    job = run(tenants.alice, tenants.pa, f"rm -f output.log; ln -s {target} output.log")
    ended(tenants.alice, job["id"])
    assert (base / "work" / str(job["id"]) / "output.log").is_symlink()
    assert "SQLite" not in log_of(tenants.alice, job["id"])
    with closing(_browser(platform, tenants.alice_name, PASSWORD, "en")) as browser:
        download = browser.get(f"/jobs/{job['id']}/log.txt")
    assert download.status_code == 200 and "SQLite" not in download.text


def test_fractions_run_as_their_own_users_one_user_per_gpu(
    platform: "RunningServer", tenants: Tenants
) -> None:
    """No shared MPS identity: each user's fraction is theirs, and one GPU's fractions serve
    one account at a time (MPS's rule), so another user's fraction waits, saying why."""
    gpu = next(g.uuid for node in tenants.admin.nodes.list() for g in node.gpus)
    tenants.admin.nodes.update_gpu(gpu, shared=True)
    try:
        fraction = {"resources": {"gpu_memory": "10Gi", "gpu_compute_percent": 20}}
        alices = run(tenants.alice, tenants.pa, "id -un; echo up; sleep 60", **fraction)
        wait_for(lambda: "up" in log_of(tenants.alice, alices["id"]), 30, "alice's fraction")
        assert log_of(tenants.alice, alices["id"]).startswith(f"sl-{tenants.alice_name}\n")
        bobs = run(tenants.bob, tenants.pb, "id -un", **fraction)
        waiting = wait_for(lambda: (job := tenants.bob.jobs.get(bobs["id"])).pending and job, 20)
        assert waiting.state == "pending"
        assert waiting.pending.code == "gpu_shared_other_user", waiting.pending
        tenants.alice.jobs.cancel(alices["id"])
        ended(tenants.bob, bobs["id"])
        assert log_of(tenants.bob, bobs["id"]) == f"sl-{tenants.bob_name}\n"
    finally:
        tenants.admin.nodes.update_gpu(gpu, shared=False)


def test_ssh_into_ones_own_dev_environment_is_ones_own_account(
    platform: "RunningServer", tenants: Tenants
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    tenants.alice.request(
        "POST", "me/ssh-keys", json={"public_key": key.export_public_key().decode()}
    )
    env = tenants.alice.devenvs.create(
        {"project": tenants.pa, "name": unique("box"), "tools": ["ssh", "terminal"]}
    )
    wait_for(lambda: tenants.alice.devenvs.get(env.id).state == "running", 60, "running")
    ssh = tenants.alice.devenvs.get(env.id).ssh
    command = f"id -un; head -c 16 {platform.data_dir}/suanli.db || echo refused"

    async def session() -> str:
        async with asyncssh.connect(
            ssh.host, ssh.port, username=env.name, client_keys=[key], known_hosts=None,
            agent_path=None, config=(),
        ) as conn:  # fmt: skip
            return (await conn.run(command)).stdout

    output = wait_for(lambda: _attempt(lambda: run_async(session())), 60, "SSH to answer")
    assert output.splitlines()[0] == f"sl-{tenants.alice_name}"
    assert "refused" in output and "SQLite" not in output
    tenants.alice.devenvs.stop(env.id)


def test_an_environment_pointed_at_another_users_agent_gets_no_shell_there(
    platform: "RunningServer", tenants: Tenants, base: Path
) -> None:
    """Alice's agent writes where the gateway connects, in a folder she owns: she points her
    SSH at bob's agent (its port and host key are no secret on this host). The gateway's key
    is the same for every agent; the login it uses is not, and bob's agent takes only his."""
    keys = {}
    for who, client in (("alice", tenants.alice), ("bob", tenants.bob)):
        keys[who] = asyncssh.generate_private_key("ssh-ed25519")
        client.request(
            "POST", "me/ssh-keys", json={"public_key": keys[who].export_public_key().decode()}
        )
    alices = tenants.alice.devenvs.create(
        {"project": tenants.pa, "name": unique("mine"), "tools": ["ssh"]}
    )
    bobs = tenants.bob.devenvs.create(
        {"project": tenants.pb, "name": unique("his"), "tools": ["ssh"]}
    )
    for client, env in ((tenants.alice, alices), (tenants.bob, bobs)):
        wait_for(lambda c=client, e=env: c.devenvs.get(e.id).state == "running", 60, "running")
    his = json.loads(wait_for(lambda: _read(base / "work" / str(bobs.id) / "endpoints.json"), 30))
    ssh = tenants.alice.devenvs.get(alices.id).ssh
    wait_for(lambda: _read(base / "work" / str(alices.id) / "endpoints.json"), 30, "her agent")

    def run(command: str) -> str | None:
        async def session() -> str:
            async with asyncssh.connect(
                ssh.host, ssh.port, username=alices.name, client_keys=[keys["alice"]],
                known_hosts=None, agent_path=None, config=(),
            ) as conn:  # fmt: skip
                return (await conn.run(command)).stdout

        return _attempt(lambda: run_async(session()))

    where = base / "work" / str(alices.id) / "endpoints.json"
    mine = json.loads(wait_for(lambda: run(f"cat {where}"), 60, "SSH to answer"))
    forged = {**mine, "ports": {**mine["ports"], "ssh": his["ports"]["ssh"]}}
    forged["ssh_host_key"] = his["ssh_host_key"]
    assert run(f"printf '%s' '{json.dumps(forged)}' > {where} && echo written") == "written\n"
    assert json.loads(_read(where) or "{}") == forged
    output = run("id -un")
    assert output is None or f"sl-{tenants.bob_name}" not in output, output
    tenants.alice.devenvs.stop(alices.id)
    tenants.bob.devenvs.stop(bobs.id)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _attempt(action: Any) -> Any:
    try:
        return action()
    except (OSError, asyncssh.Error):
        return None


def test_mapped_accounts_hold_too(base: Path, launch_server: Any) -> None:
    """With `unix_users`, a user's work runs as the mapped account, which reaches none of the
    platform's files either (the data directory was 0755 and the database 0644 before)."""
    account = f"suanli-m{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", account], check=True)
    root = base / "mapped"
    root.mkdir(mode=0o755)
    env = {
        "SUANLI_WORKLOAD_IDENTITY": "own",
        "SUANLI_UNIX_USERS": json.dumps({"carol": account}),
        "SUANLI_WORK_DIR": str(root / "work"),
    }
    server = launch_server(root, env, f"sqlite:///{root / 'data' / 'suanli.db'}")
    try:
        admin = server.login("admin", ADMIN_PASSWORD)
        admin.users.create("carol", PASSWORD)
        admin.projects.create("pc", owner="carol")
        carol = server.login("carol", PASSWORD)
        job = run(carol, "pc", f"id -un; head -c 16 {server.data_dir}/suanli.db || echo refused")
        ended(carol, job["id"])
        output = log_of(carol, job["id"])
        assert output.splitlines()[0] == account and "refused" in output, output
        assert "SQLite" not in output
    finally:
        server.stop()
        subprocess.run(["userdel", account], check=False)


def test_administrators_are_told_when_isolation_does_not_hold(
    base: Path, launch_server: Any, platform: "RunningServer", tenants: Tenants
) -> None:
    """A server whose workloads run as its own user says so on every page administrators see,
    in their language; the isolated one has nothing to say; users never see it."""
    root = base / "workstation"
    root.mkdir(mode=0o755)
    server = launch_server(root, {"SUANLI_WORKLOAD_IDENTITY": "server"})
    try:
        for language, words in (("en", "Never use this"), ("zh-CN", "切勿")):
            page = _console(server, "admin", ADMIN_PASSWORD, language)
            assert 'data-isolation="web.isolation.server_identity"' in page
            assert words in page
        server.login("admin", ADMIN_PASSWORD).users.create("dave", PASSWORD)
        assert "data-isolation" not in _console(server, "dave", PASSWORD, "en")
    finally:
        server.stop()
    assert "data-isolation" not in _console(platform, "admin", ADMIN_PASSWORD, "en")


def _browser(server: "RunningServer", name: str, password: str, language: str) -> httpx.Client:
    """A cookie-keeping client signed in through the console's login form."""
    browser = httpx.Client(base_url=server.url, headers={"Accept-Language": language})
    form = browser.get("/login").text
    token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed_in = browser.post(
        "/login", data={"username": name, "password": password, "csrf_token": token}
    )
    assert signed_in.status_code == 303, signed_in.text[:300]
    return browser


def _console(server: "RunningServer", name: str, password: str, language: str) -> str:
    with closing(_browser(server, name, password, language)) as browser:
        return browser.get("/").text

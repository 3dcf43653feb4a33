"""The local backend with real processes: environment, logs, exit reasons, stopping with a
grace period, timeouts, re-adoption by a later server, lost wrappers and Unix users."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from localjobs import PY, Jobs, make_backend

from suanli.backends.base import Backend
from suanli.backends.local import state as job_state
from suanli.scheduler.model import DeviceShare, Placement

PRINT_ENV = [PY, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


def _env_of(log: str) -> dict[str, str]:
    return json.loads(log.strip().splitlines()[-1])


def test_it_is_a_backend(jobs: Jobs) -> None:
    backend: Backend = jobs.backend
    assert backend.name == "local"
    (host,) = backend.inventory()
    assert host.cpus >= 1 and host.memory_bytes > 0


def test_environment_devices_and_log(jobs: Jobs, monkeypatch) -> None:
    monkeypatch.setenv("SUANLI_ADMIN_PASSWORD", "server-secret")  # the server's, not the job's
    placement = Placement(
        "local", (DeviceShare("GPU-1111aaaa-0000"), DeviceShare("MIG-2222bbbb-0001"))
    )
    spec = jobs.spec(
        PRINT_ENV,
        placement=placement,
        env={"MY_SETTING": "x y", "CUDA_VISIBLE_DEVICES": "0"},  # the platform's value wins
    )
    started = time.monotonic()
    handle = jobs.launch(spec)
    assert time.monotonic() - started < 0.5  # returns at once
    assert set(handle) == {"pid", "pgid", "start_time", "state_dir"}
    assert handle["start_time"] == job_state.start_time(handle["pid"])
    assert json.loads(json.dumps(handle)) == handle  # storable as JSON

    status = jobs.wait(handle)
    assert status.exit is not None and status.exit.reason == "exit_code"
    assert status.exit.exit_code == 0 and status.warnings == ()
    env = _env_of(jobs.log(spec))
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-1111aaaa-0000,MIG-2222bbbb-0001"
    assert env["SUANLI_GPU_UUIDS"] == "GPU-1111aaaa-0000,MIG-2222bbbb-0001"
    assert env["SUANLI_JOB_ID"] == str(spec.job_id)
    assert env["MY_SETTING"] == "x y"
    assert "SUANLI_ADMIN_PASSWORD" not in env and "PYTHONPATH" not in env
    assert not any(k.startswith("CUDA_MPS_") for k in env)  # whole devices: no MPS
    assert env["HOME"] and env["USER"] and env["PATH"]


def test_no_gpu_hides_all_gpus_and_the_log_survives(jobs: Jobs) -> None:
    spec = jobs.spec(PRINT_ENV)
    assert jobs.run(spec).exit.exit_code == 0
    assert _env_of(jobs.log(spec))["CUDA_VISIBLE_DEVICES"] == ""
    # the log outlives the job, and a second run appends to it
    again = jobs.spec(["sh", "-c", "echo second run >&2"], log_path=spec.log_path)
    assert jobs.run(again).exit.exit_code == 0
    log = jobs.log(spec)
    assert "CUDA_VISIBLE_DEVICES" in log and log.endswith("second run\n")


def test_exit_code(jobs: Jobs) -> None:
    status = jobs.run(jobs.spec(["sh", "-c", "exit 3"]))
    assert (status.exit.reason, status.exit.exit_code, status.exit.signal) == ("exit_code", 3, None)
    assert status.exit.detail == "exited with code 3"


def test_killed_by_a_signal(jobs: Jobs) -> None:
    status = jobs.run(jobs.spec([PY, "-c", "import os, signal; os.kill(os.getpid(), 11)"]))
    assert status.exit.reason == "signal"
    assert status.exit.signal == signal.SIGSEGV and status.exit.exit_code is None
    assert "SIGSEGV" in status.exit.detail


def test_arguments_are_passed_literally(jobs: Jobs, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("still here")
    nasty = f"a; rm -f {victim} && echo $(whoami) `id` | cat > /dev/null * ' \" \\ $HOME"
    spec = jobs.spec(["printf", "%s\n", nasty, "--", "*"])
    assert jobs.run(spec).exit.exit_code == 0
    assert jobs.log(spec) == f"{nasty}\n--\n*\n"
    assert victim.read_text() == "still here"


def test_command_not_found_and_bad_workdir(jobs: Jobs, tmp_path: Path) -> None:
    spec = jobs.spec(["no-such-command-here", "x"])
    status = jobs.run(spec)
    assert (status.exit.reason, status.exit.exit_code) == ("exit_code", 127)
    assert "cannot execute 'no-such-command-here'" in status.exit.detail
    assert "did not start" in jobs.log(spec)

    spec = jobs.spec(["true"], workdir=tmp_path / "missing")
    status = jobs.run(spec)
    assert status.exit.exit_code == 125
    assert "cannot enter the working directory" in status.exit.detail


def test_max_duration_ends_as_timeout(jobs: Jobs) -> None:
    spec = jobs.spec(["sleep", "30"], max_duration=0.3)
    started = time.monotonic()
    status = jobs.run(spec)
    assert 0.3 <= time.monotonic() - started < 5
    assert status.exit.reason == "timeout" and status.exit.signal == signal.SIGTERM
    assert "maximum duration of 0.3 s" in status.exit.detail
    assert "maximum duration" in jobs.log(spec)


def test_timeout_kills_a_job_ignoring_sigterm(jobs: Jobs) -> None:
    # the backend's timeout grace is 0.5 s in these tests
    spec = jobs.spec(["sh", "-c", "trap '' TERM; echo armed; sleep 30"], max_duration=0.2)
    status = jobs.run(spec)
    assert status.exit.reason == "timeout" and status.exit.signal == signal.SIGKILL


def test_stop_gives_a_job_trapping_sigterm_its_grace(jobs: Jobs) -> None:
    script = "trap 'echo got-term; exit 0' TERM; echo armed; while :; do sleep 0.05; done"
    spec = jobs.spec(["sh", "-c", script])
    handle = jobs.launch(spec)
    jobs.wait_for_log(spec, "armed")
    started = time.monotonic()
    jobs.backend.stop(handle, reason="cancelled", grace_seconds=10)
    assert time.monotonic() - started < 0.2  # stop returns at once
    status = jobs.wait(handle)
    assert time.monotonic() - started < 5  # ended by itself, well inside the grace
    assert status.exit.reason == "cancelled" and status.exit.exit_code == 0
    assert "got-term" in jobs.log(spec)


def test_stop_kills_a_job_ignoring_sigterm_after_the_grace(jobs: Jobs) -> None:
    spec = jobs.spec(["sh", "-c", "trap '' TERM; echo armed; sleep 30"])
    handle = jobs.launch(spec)
    jobs.wait_for_log(spec, "armed")
    started = time.monotonic()
    jobs.backend.stop(handle, reason="preempted", grace_seconds=0.5)
    assert jobs.backend.poll(handle).running  # still inside its grace
    status = jobs.wait(handle)
    assert time.monotonic() - started >= 0.5
    assert status.exit.reason == "preempted" and status.exit.signal == signal.SIGKILL
    # a later stop changes nothing
    jobs.backend.stop(handle, reason="cancelled", grace_seconds=0)
    assert jobs.backend.poll(handle).exit.reason == "preempted"


def test_stop_right_after_launch(jobs: Jobs) -> None:
    """A stop that may reach the wrapper before it handles SIGTERM is not lost."""
    for _ in range(3):
        handle = jobs.launch(jobs.spec(["sleep", "30"]))
        jobs.backend.stop(handle, reason="cancelled", grace_seconds=1)
        status = jobs.wait(handle, timeout=5)
        assert status.exit.reason == "cancelled"


def test_the_whole_process_group_is_stopped(jobs: Jobs, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    spec = jobs.spec(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; echo armed; wait"])
    handle = jobs.launch(spec)
    jobs.wait_for_log(spec, "armed")
    grandchild = int(pid_file.read_text())
    jobs.backend.stop(handle, reason="cancelled", grace_seconds=2)
    jobs.wait(handle)
    assert not job_state.is_running(grandchild, None)


def test_leftover_processes_die_with_the_job(jobs: Jobs, tmp_path: Path) -> None:
    pid_file = tmp_path / "orphan"
    spec = jobs.spec(["sh", "-c", f"setsid sleep 30 & echo $! > {pid_file}; sleep 0.1"])
    assert jobs.run(spec).exit.exit_code == 0
    orphan = int(pid_file.read_text())
    # it left the process group and the session, but not the job's cgroups
    deadline = time.monotonic() + 2
    while job_state.is_running(orphan, None) and time.monotonic() < deadline:
        time.sleep(0.02)
    if jobs.backend.hierarchies.where:
        assert not job_state.is_running(orphan, None)
    else:  # no cgroups on this host: nothing can catch a process that left the session
        os.kill(orphan, signal.SIGKILL)


def test_launch_is_idempotent_per_state_dir(jobs: Jobs) -> None:
    spec = jobs.spec(["sh", "-c", "echo ran"])
    first = jobs.launch(spec)
    assert jobs.launch(spec) == first
    jobs.wait(first)
    assert jobs.launch(spec) == first
    assert jobs.log(spec) == "ran\n"  # once


SERVER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from suanli.backends.base import LaunchSpec, Limits
    from suanli.backends.local import LocalBackend
    from suanli.config import Settings
    from suanli.scheduler.model import Placement

    root, parent = Path(sys.argv[1]), sys.argv[2]
    settings = Settings(data_dir=root / "data", workload_identity="server")
    backend = LocalBackend(settings, cgroup_parent=parent)
    handles = {}
    for job_id, (name, script) in enumerate(
        [("long", "echo started; sleep 1.5; echo finished"), ("short", "echo quick; exit 4")]
    ):
        spec = LaunchSpec(
            job_id=job_id, argv=("sh", "-c", script), workdir=root, env={},
            placement=Placement("local"), limits=Limits(memory_bytes=2**30),
            log_path=root / f"{name}.log", state_dir=root / name,
        )
        handles[name] = backend.launch(spec)
    print(json.dumps(handles), flush=True)
    time.sleep(60)
    """
)


def test_a_new_server_re_adopts_jobs_after_sigkill(tmp_path: Path, cgroup_parent: str) -> None:
    server = subprocess.Popen(
        [PY, "-c", SERVER, str(tmp_path), cgroup_parent], stdout=subprocess.PIPE, text=True
    )
    handles = json.loads(server.stdout.readline())
    time.sleep(0.3)  # "short" ends while the server is being killed
    server.kill()
    server.wait()

    backend = make_backend(tmp_path, cgroup_parent)  # the restarted server
    jobs = Jobs(tmp_path, backend)
    long, short = handles["long"], handles["short"]
    assert backend.poll(long).running  # the wrapper outlived its server
    status = jobs.wait(short)
    assert (status.exit.reason, status.exit.exit_code) == ("exit_code", 4)
    status = jobs.wait(long)
    assert (status.exit.reason, status.exit.exit_code) == ("exit_code", 0)
    assert (tmp_path / "long.log").read_text() == "started\nfinished\n"
    # launching again from the restarted server does not run the job twice
    assert json.loads((tmp_path / "long" / "handle.json").read_text()) == long


def test_a_new_backend_stops_a_job_it_did_not_start(jobs: Jobs, tmp_path: Path) -> None:
    handle = jobs.launch(jobs.spec(["sleep", "30"]))
    jobs.process(handle)
    other = make_backend(tmp_path, jobs.backend.cgroup_parent)
    assert other.poll(handle).running
    other.stop(handle, reason="preempted", grace_seconds=0.2)
    assert jobs.wait(handle, backend=other).exit.reason == "preempted"
    assert jobs.backend.poll(handle).exit.reason == "preempted"


def test_a_wrapper_killed_without_status_is_lost(jobs: Jobs) -> None:
    spec = jobs.spec(["sh", "-c", "echo started; exec sleep 30"])
    handle = jobs.launch(spec)
    process = jobs.process(handle)
    # Kill the wrapper only once the job really runs: earlier, there is nothing left behind.
    jobs.wait_for_log(spec, "started")
    os.kill(handle["pid"], signal.SIGKILL)
    (Path(handle["state_dir"]) / job_state.STATUS).unlink(missing_ok=True)
    status = jobs.wait(handle)
    assert status.exit.reason == "lost"
    assert "recorded no exit status" in status.exit.detail
    assert "left behind were killed" in status.exit.detail
    deadline = time.monotonic() + 2
    while job_state.is_running(process["pgid"], process["start_time"]):
        assert time.monotonic() < deadline, "the job outlived its lost wrapper"
        time.sleep(0.02)
    assert jobs.backend.poll(handle).exit.reason == "lost"  # and it stays so


def test_run_as_a_unix_user(jobs: Jobs, unix_user: str) -> None:
    spec = jobs.spec(
        ["sh", "-c", 'id -un; id -u; echo "$HOME $USER"'], run_as=unix_user, workdir=Path("/")
    )
    status = jobs.run(spec)
    assert status.exit.exit_code == 0, jobs.log(spec)
    name, uid, env = jobs.log(spec).splitlines()
    assert name == unix_user and int(uid) != os.geteuid()
    assert env == f"/nonexistent {unix_user}"


def test_run_as_a_user_that_does_not_exist(jobs: Jobs) -> None:
    spec = jobs.spec(["true"], run_as="no-such-user-here")
    status = jobs.run(spec)
    assert (status.exit.reason, status.exit.exit_code) == ("exit_code", 125)
    assert status.exit.detail == "the Unix user 'no-such-user-here' does not exist"
    assert "does not exist" in jobs.log(spec)


def test_never_run_as_the_servers_own_user(jobs: Jobs) -> None:
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    status = jobs.run(jobs.spec(["true"], run_as=me))
    assert status.exit.exit_code == 125 and "the server's own user" in status.exit.detail


def test_a_module_import_does_not_load_the_server() -> None:
    """The wrapper starts light: no pydantic, FastAPI or SQLAlchemy in its process."""
    code = (
        "import sys, suanli.backends.local.wrapper;"
        "print(sorted(m for m in ('pydantic', 'fastapi', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

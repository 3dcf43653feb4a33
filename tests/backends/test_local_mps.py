"""GPU fractions: the MPS environment of a job, fractions run as their own users, and the
per-GPU control daemons' life cycle (with a stand-in for nvidia-cuda-mps-control: no GPU
here)."""

import json
import stat
import time
from pathlib import Path

import pytest
from fakenvml import FakeGpu, FakeNvml
from localjobs import PY, Jobs, make_backend

from suanli.backends.local.mps import MpsDaemons, device_environment, mps_paths
from suanli.scheduler.model import DeviceShare, Placement

PRINT_ENV = [PY, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
GiB = 2**30


def test_whole_devices_get_no_mps(tmp_path: Path) -> None:
    env = device_environment(
        7, Placement("n", (DeviceShare("GPU-a"), DeviceShare("MIG-b"))), tmp_path
    )
    assert env == {
        "CUDA_VISIBLE_DEVICES": "GPU-a,MIG-b",
        "SUANLI_JOB_ID": "7",
        "SUANLI_GPU_UUIDS": "GPU-a,MIG-b",
    }
    assert device_environment(8, Placement("n"), tmp_path)["CUDA_VISIBLE_DEVICES"] == ""


def test_a_fraction_gets_its_mps_daemon_and_share(tmp_path: Path) -> None:
    share = DeviceShare("GPU-a", memory_bytes=20 * GiB, compute_percent=30)
    env = device_environment(7, Placement("n", (share,)), tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-a"
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(tmp_path / "mps" / "GPU-a" / "pipe")
    assert env["CUDA_MPS_LOG_DIRECTORY"] == str(tmp_path / "mps" / "GPU-a" / "log")
    # keyed by the ordinal the job sees: its one device is device 0
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20480M"
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "30"


def test_a_compute_only_or_memory_only_fraction(tmp_path: Path) -> None:
    env = device_environment(
        1, Placement("n", (DeviceShare("GPU-a", compute_percent=50),)), tmp_path
    )
    assert "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT" not in env
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    env = device_environment(1, Placement("n", (DeviceShare("GPU-a", memory_bytes=GiB),)), tmp_path)
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=1024M"
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env


@pytest.mark.parametrize(
    "devices",
    [
        (DeviceShare("GPU-a", memory_bytes=GiB), DeviceShare("GPU-b", memory_bytes=GiB)),
        (DeviceShare("GPU-a", memory_bytes=GiB), DeviceShare("GPU-b")),
    ],
)
def test_mps_cannot_serve_a_fraction_with_other_devices(tmp_path: Path, devices) -> None:
    with pytest.raises(ValueError, match="only device"):
        device_environment(1, Placement("n", devices), tmp_path)


def test_fraction_on_a_simulated_gpu(jobs: Jobs) -> None:
    share = DeviceShare("GPU-sim-box-0", memory_bytes=8 * GiB, compute_percent=25)
    spec = jobs.spec(PRINT_ENV, placement=Placement("box", (share,)), env={
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=999999M"  # a job cannot raise its own share
    })  # fmt: skip
    status = jobs.run(spec)
    assert status.exit.exit_code == 0
    env = json.loads(jobs.log(spec))
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-sim-box-0"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=8192M"
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    work_dir = jobs.backend.work_dir
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(work_dir / "mps" / "GPU-sim-box-0" / "pipe")
    assert status.warnings == (
        "GPU share on GPU-sim-box-0 is not enforced: the device is simulated",
    )
    assert not (work_dir / "mps").exists()  # no daemon for a simulated GPU


def test_fractions_run_as_their_own_user(jobs: Jobs, unix_user: str) -> None:
    """No shared MPS identity: a fraction's job is its user's like any other (the scheduler
    keeps fractions of two users off one GPU at a time)."""
    share = DeviceShare("GPU-sim-box-0", memory_bytes=GiB)
    spec = jobs.spec(
        ["id", "-un"], placement=Placement("box", (share,)), run_as=unix_user, workdir=Path("/")
    )
    assert jobs.run(spec).exit.exit_code == 0
    assert jobs.log(spec) == f"{unix_user}\n"


FAKE_CONTROL = """#!/bin/sh
# Stands in for nvidia-cuda-mps-control: "-d" starts a daemon, "quit" on stdin stops it.
if [ "$1" = "-d" ]; then
  echo "$CUDA_VISIBLE_DEVICES" >> "$CUDA_MPS_LOG_DIRECTORY/started"
  sleep 300 >/dev/null 2>&1 &
  echo $! > "$CUDA_MPS_PIPE_DIRECTORY/nvidia-cuda-mps-control.pid"
  exit 0
fi
read command
if [ "$command" = "quit" ]; then
  kill "$(cat "$CUDA_MPS_PIPE_DIRECTORY/nvidia-cuda-mps-control.pid")"
  echo quit >> "$CUDA_MPS_LOG_DIRECTORY/quit"
fi
"""


@pytest.fixture
def control(tmp_path: Path) -> str:
    path = tmp_path / "nvidia-cuda-mps-control"
    path.write_text(FAKE_CONTROL)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _wait_stopped(daemons: MpsDaemons, uuid: str) -> None:
    deadline = time.monotonic() + 5
    while daemons.running(uuid):
        assert time.monotonic() < deadline, "the daemon did not stop"
        time.sleep(0.02)


def test_one_daemon_per_shared_gpu_while_fractions_use_it(
    tmp_path: Path, cgroup_parent: str, control: str
) -> None:
    gpu = FakeGpu("GPU-real-0")  # a real GPU as NVML would report it
    work_dir = tmp_path / "data" / "work"  # the backend's: make_backend's settings
    daemons = MpsDaemons(work_dir, control=control)
    backend = make_backend(tmp_path, cgroup_parent, nvml=FakeNvml([gpu]), mps=daemons)
    jobs = Jobs(tmp_path, backend)
    share = Placement("box", (DeviceShare("GPU-real-0", memory_bytes=GiB),))

    first = jobs.spec(["sh", "-c", "echo armed; sleep 30"], placement=share)
    second = jobs.spec(PRINT_ENV, placement=share)
    first_handle = jobs.launch(first)
    jobs.wait_for_log(first, "armed")
    assert daemons.running("GPU-real-0")
    status = jobs.run(second)
    assert status.warnings == ()  # enforced: no warning
    paths = mps_paths(work_dir, "GPU-real-0")
    assert (paths.log_dir / "started").read_text() == "GPU-real-0\n"  # started once
    env = json.loads(jobs.log(second))
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(paths.pipe_dir)
    assert daemons.running("GPU-real-0")  # the first job still uses it

    backend.stop(first_handle, reason="cancelled", grace_seconds=0)
    jobs.wait(first_handle)
    _wait_stopped(daemons, "GPU-real-0")
    assert (paths.log_dir / "quit").read_text() == "quit\n"
    assert daemons.clients("GPU-real-0") == []


def test_a_daemon_left_by_a_crashed_server_is_stopped(tmp_path: Path, control: str) -> None:
    daemons = MpsDaemons(tmp_path / "data", control=control)
    ended, running = tmp_path / "ended", tmp_path / "running"
    ended.mkdir()
    (ended / "status.json").write_text("{}")
    assert daemons.acquire("GPU-x", "k1", ended) is None
    assert daemons.acquire("GPU-y", "k2", running) is None
    daemons.reconcile(lambda state_dir: state_dir == running)
    _wait_stopped(daemons, "GPU-x")
    assert daemons.running("GPU-y") and daemons.clients("GPU-y") == ["k2"]
    daemons.release("GPU-y", "k2")
    _wait_stopped(daemons, "GPU-y")


def test_a_starting_backend_stops_the_daemons_a_crash_left(
    tmp_path: Path, cgroup_parent: str, control: str
) -> None:
    """A server killed while a fraction ran, restarted after the job ended: the backend's
    first inventory reaps the daemon nobody needs any more."""
    daemons = MpsDaemons(tmp_path / "data" / "work", control=control)
    ended = tmp_path / "ended"
    ended.mkdir()
    (ended / "status.json").write_text("{}")
    assert daemons.acquire("GPU-real-0", "k1", ended) is None
    assert daemons.running("GPU-real-0")
    restarted = MpsDaemons(tmp_path / "data" / "work", control=control)  # a new process's
    nvml = FakeNvml([FakeGpu("GPU-real-0")])
    make_backend(tmp_path, cgroup_parent, nvml=nvml, mps=restarted).inventory()
    _wait_stopped(daemons, "GPU-real-0")
    assert daemons.clients("GPU-real-0") == []


def test_without_the_mps_binary_the_share_is_not_enforced(tmp_path: Path) -> None:
    daemons = MpsDaemons(tmp_path, control="no-such-nvidia-cuda-mps-control")
    warning = daemons.acquire("GPU-real-0", "k", tmp_path)
    assert warning == (
        "GPU share on GPU-real-0 is not enforced by MPS: no-such-nvidia-cuda-mps-control is "
        "not installed (only the GPU memory watchdog applies)"
    )

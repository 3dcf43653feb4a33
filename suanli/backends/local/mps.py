"""GPU fractions with CUDA MPS: one MPS control daemon per shared GPU, run by the backend.

How a fraction is enforced
    Every shared GPU that runs a fractional job gets its own control daemon
    (`nvidia-cuda-mps-control -d`), started by the server with `CUDA_VISIBLE_DEVICES=<that
    GPU's UUID>` and its own pipe and log directories, `<work_dir>/mps/<uuid>/{pipe,log}`
    (outside the data directory: every fractional job's account must reach the pipes). A
    fractional job is pointed at that daemon (`CUDA_MPS_PIPE_DIRECTORY`,
    `CUDA_MPS_LOG_DIRECTORY`) and carries its share: `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`
    (memory; CUDA refuses allocations beyond it) and `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`
    (compute). The memory limit is keyed by the device's ordinal as the job sees it
    ("0=20480M"): the job sees exactly its own device, and limits keyed by UUID have been
    reported not to apply (NVIDIA k8s-device-plugin 0.15). The daemon is stopped (`quit`) when
    no fractional job on the GPU remains. The NVML watchdog (`watchdog.py`) catches what MPS
    does not limit (e.g. memory outside the pinned allocations) and stops the job with reason
    `oom`.

The identity rule
    MPS runs one server per GPU for one Unix user at a time: the control daemon (the
    server's, root) starts an MPS server as the first client's user, and a client of another
    user waits until every client of that server has finished. Fractional jobs run as their
    own users' accounts like every other job (one shared identity would let tenants read
    each other's processes and files), so the scheduler never places fractions of two
    accounts on one GPU at the same time (`Workload.identity`): a GPU's fractions serve one
    account, and another's wait with a reason that says so.

Simulated GPUs get the same environment (so everything above is tested without a GPU) but no
daemon; the job's warnings say that the share is not enforced.
"""

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from suanli.backends.local.state import is_running
from suanli.scheduler.model import Placement

log = logging.getLogger(__name__)

MPS_CONTROL = "nvidia-cuda-mps-control"


@dataclass(frozen=True)
class MpsPaths:
    root: Path
    pipe_dir: Path
    log_dir: Path
    clients_dir: Path  # one file per fractional job using the daemon


def mps_paths(work_dir: Path, uuid: str) -> MpsPaths:
    root = Path(work_dir) / "mps" / uuid
    return MpsPaths(root, root / "pipe", root / "log", root / "clients")


def fractional_shares(placement: Placement) -> list:
    return [share for share in placement.devices if not share.whole]


def device_environment(job_id: int, placement: Placement, work_dir: Path) -> dict[str, str]:
    """The variables Suanli sets for a job's devices. They override the job's own `env`.

    Raises ValueError for a placement MPS cannot serve: more than one fractional device, or a
    fraction together with whole devices (one client talks to one MPS daemon)."""
    uuids = [share.device for share in placement.devices]
    env = {
        "CUDA_VISIBLE_DEVICES": ",".join(uuids),
        "SUANLI_JOB_ID": str(job_id),
        "SUANLI_GPU_UUIDS": ",".join(uuids),
    }
    fractions = fractional_shares(placement)
    if not fractions:
        return env
    if len(placement.devices) != 1:
        raise ValueError(
            "a GPU fraction must be the job's only device (one MPS daemon serves one GPU)"
        )
    share = fractions[0]
    paths = mps_paths(work_dir, share.device)
    env["CUDA_MPS_PIPE_DIRECTORY"] = str(paths.pipe_dir)
    env["CUDA_MPS_LOG_DIRECTORY"] = str(paths.log_dir)
    if share.memory_bytes > 0:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={max(1, share.memory_bytes // 2**20)}M"
    if share.compute_percent > 0:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(min(100, share.compute_percent))
    return env


Runner = Callable[..., subprocess.CompletedProcess]


class MpsDaemons:
    """Starts and stops the per-GPU control daemons. Which jobs use a daemon is kept on disk
    (`clients/<key>` files), so a restarted server knows when a daemon is no longer needed."""

    def __init__(
        self, work_dir: Path, *, control: str = MPS_CONTROL, run: Runner = subprocess.run
    ) -> None:
        self.work_dir = Path(work_dir)
        self.control = control
        self._run = run

    def binary(self) -> str | None:
        return shutil.which(self.control)

    def _env(self, uuid: str) -> dict[str, str]:
        paths = mps_paths(self.work_dir, uuid)
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CUDA_VISIBLE_DEVICES": uuid,
            "CUDA_MPS_PIPE_DIRECTORY": str(paths.pipe_dir),
            "CUDA_MPS_LOG_DIRECTORY": str(paths.log_dir),
        }

    def running(self, uuid: str) -> bool:
        pid_file = mps_paths(self.work_dir, uuid).pipe_dir / "nvidia-cuda-mps-control.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return False
        return is_running(pid, None)  # a zombie (not yet reaped) has quit

    def acquire(self, uuid: str, key: str, state_dir: Path) -> str | None:
        """Register job `key` (whose state directory is `state_dir`) on the GPU and make sure
        its daemon runs. Returns None, or a warning in plain words when the daemon cannot be
        started."""
        paths = mps_paths(self.work_dir, uuid)
        paths.clients_dir.mkdir(parents=True, exist_ok=True)
        for directory in (paths.pipe_dir, paths.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
            # The daemon runs as the server's user; clients (every account) need the pipes.
            os.chmod(directory, 0o755)  # noqa: S103 - readable pipes, no secrets
        (paths.clients_dir / key).write_text(str(state_dir))
        if self.running(uuid):
            return None
        binary = self.binary()
        if binary is None:
            return (
                f"GPU share on {uuid} is not enforced by MPS: {self.control} is not installed "
                "(only the GPU memory watchdog applies)"
            )
        result = self._run(
            [binary, "-d"], env=self._env(uuid), capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            why = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
            return f"GPU share on {uuid} is not enforced by MPS: the daemon did not start ({why})"
        log.info("started the MPS control daemon for GPU %s", uuid)
        return None

    def release(self, uuid: str, key: str) -> None:
        """Job `key` no longer uses the GPU; the daemon stops when it was the last one."""
        paths = mps_paths(self.work_dir, uuid)
        with contextlib.suppress(FileNotFoundError):
            (paths.clients_dir / key).unlink()
        if self.clients(uuid):
            return
        self.stop(uuid)

    def clients(self, uuid: str) -> list[str]:
        try:
            return sorted(p.name for p in mps_paths(self.work_dir, uuid).clients_dir.iterdir())
        except FileNotFoundError:
            return []

    def gpus(self) -> list[str]:
        try:
            return sorted(p.name for p in (self.work_dir / "mps").iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def stop(self, uuid: str) -> None:
        if not self.running(uuid):
            return
        binary = self.binary()
        if binary is None:
            return
        result = self._run(
            [binary], input="quit\n", env=self._env(uuid), capture_output=True, text=True,
            timeout=30,
        )  # fmt: skip
        if result.returncode != 0:
            log.warning("the MPS daemon of GPU %s did not quit: %s", uuid, result.stderr)
        else:
            log.info("stopped the MPS control daemon for GPU %s", uuid)

    def reconcile(self, still_used: Callable[[Path], bool]) -> None:
        """Drop registrations of jobs that ended (`still_used(state_dir)` is False) and stop
        daemons nobody needs; for a server that restarts."""
        for uuid in self.gpus():
            clients_dir = mps_paths(self.work_dir, uuid).clients_dir
            for key in self.clients(uuid):
                try:
                    state_dir = Path((clients_dir / key).read_text().strip())
                except OSError:
                    continue
                if not still_used(state_dir):
                    with contextlib.suppress(FileNotFoundError):
                        (clients_dir / key).unlink()
            if not self.clients(uuid):
                self.stop(uuid)

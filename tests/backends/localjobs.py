"""Helpers for the local backend's tests: specs, waiting for jobs, reading their logs."""

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from suanli.backends.base import Handle, LaunchSpec, Limits, Status
from suanli.backends.local import LocalBackend
from suanli.backends.local import state as job_state
from suanli.config import Settings
from suanli.scheduler.model import Placement

PY = sys.executable


@dataclass
class Jobs:
    root: Path
    backend: LocalBackend
    handles: list[Handle] = field(default_factory=list)
    next_id: int = 1

    def spec(
        self,
        argv: list[str] | tuple[str, ...],
        *,
        placement: Placement | None = None,
        limits: Limits | None = None,
        env: dict[str, str] | None = None,
        **kwargs,
    ) -> LaunchSpec:
        job_id = self.next_id
        self.next_id += 1
        values = {
            "workdir": self.root,
            "log_path": self.root / "logs" / f"{job_id}.log",
            "state_dir": self.root / "state" / str(job_id),
            **kwargs,
        }
        return LaunchSpec(
            job_id=job_id,
            argv=tuple(argv),
            env=env or {},
            placement=placement or Placement("local"),
            limits=limits or Limits(),
            **values,
        )

    def launch(self, spec: LaunchSpec, backend: LocalBackend | None = None) -> Handle:
        handle = (backend or self.backend).launch(spec)
        self.handles.append(handle)
        return handle

    def wait(self, handle: Handle, timeout: float = 15.0, backend: LocalBackend | None = None):
        deadline = time.monotonic() + timeout
        while True:
            status: Status = (backend or self.backend).poll(handle)
            if not status.running:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"job still running after {timeout} s: {handle}")
            time.sleep(0.02)

    def run(self, spec: LaunchSpec, timeout: float = 15.0) -> Status:
        return self.wait(self.launch(spec), timeout)

    @staticmethod
    def log(spec: LaunchSpec) -> str:
        return Path(spec.log_path).read_text()

    @staticmethod
    def wait_for_log(spec: LaunchSpec, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if text in Path(spec.log_path).read_text():
                    return
            time.sleep(0.02)
        raise AssertionError(f"{text!r} never appeared in {spec.log_path}")

    @staticmethod
    def process(handle: Handle, timeout: float = 10.0) -> dict:
        """The wrapper's process.json (the job's process group), once it exists."""
        path = Path(handle["state_dir"]) / job_state.PROCESS
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = job_state.read_json(path)
            if found:
                return found
            time.sleep(0.01)
        raise AssertionError(f"no {path}")


def make_backend(root: Path, cgroup_parent: str, **kwargs) -> LocalBackend:
    kwargs.setdefault("timeout_grace_seconds", 0.5)
    settings = kwargs.pop("settings", None) or Settings(
        data_dir=root / "data", workload_identity="server"
    )
    return LocalBackend(settings, cgroup_parent=cgroup_parent, **kwargs)

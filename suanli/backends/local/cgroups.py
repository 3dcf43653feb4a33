"""Per-job limits through Linux control groups, v2 where the host has it, v1 otherwise.

Detection (`detect`, in the server) reads /proc/self/mounts and decides, per controller
(memory, cpu, pids), where it can be used: the unified (v2) hierarchy when that hierarchy
offers the controller in its cgroup.controllers, else the v1 hierarchy mounted for it. A
hybrid host (systemd's default on older distributions: v1 controllers, plus an empty
cgroup2 mount at /sys/fs/cgroup/unified) thus uses v1; a pure v2 host (current Ubuntu) v2.

At launch the backend makes each job its own cgroup, `<parent>/job-<id>-<8 hex digits of its
state directory>` under the root of each hierarchy (e.g. /sys/fs/cgroup/memory/suanli/
job-7-1a2b3c4d on v1, /sys/fs/cgroup/suanli/job-7-1a2b3c4d on v2) and writes the limits, so
what cannot be applied is known when `launch` returns. The wrapper moves the job's first
process in after fork and before exec, so everything the job ever starts is inside; when the
job ends it kills whatever is left in the cgroups, reads the OOM-kill counter, and removes
them.

Limits:
    memory  v2 memory.max (+ memory.swap.max 0, memory.oom.group 1)
            v1 memory.limit_in_bytes (+ memory.memsw.limit_in_bytes where swap is accounted)
    cpu     v2 cpu.max "<quota> <period>"; v1 cpu.cfs_quota_us / cpu.cfs_period_us
    pids    pids.max (both)
OOM: v2 memory.events `oom_kill`, v1 memory.oom_control `oom_kill` (kernel 4.13+).

A limit that cannot be applied (controller missing, no permission) never stops the job: it
runs without that limit and the reason is said in plain words (`Status.warnings`).
"""

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000

_NAMES = {"memory": "memory limit", "cpu": "CPU limit", "pids": "process limit"}


def _unescape(text: str) -> str:
    """Mount points in /proc/self/mounts escape space, tab, newline and backslash in octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


@dataclass(frozen=True)
class Hierarchies:
    """Where each controller can be used: `where[controller] = (version, mount point)`, and
    for the others why not."""

    where: dict[str, tuple[int, str]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def versions(self) -> set[int]:
        return {version for version, _ in self.where.values()}

    def describe(self) -> str:
        if not self.where:
            return "no usable cgroup controller"
        parts = [f"{c}: v{v} at {m}" for c, (v, m) in sorted(self.where.items())]
        parts += [f"{c}: {why}" for c, why in sorted(self.missing.items())]
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"where": {c: [v, m] for c, (v, m) in self.where.items()}, "missing": self.missing}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Hierarchies":
        return cls(
            where={c: (int(v), str(m)) for c, (v, m) in data.get("where", {}).items()},
            missing=dict(data.get("missing", {})),
        )


def detect(mounts: Path = Path("/proc/self/mounts")) -> Hierarchies:
    try:
        lines = mounts.read_text().splitlines()
    except OSError as error:
        why = f"cannot read {mounts} ({error.strerror})"
        return Hierarchies(missing=dict.fromkeys(CONTROLLERS, why))
    v1: dict[str, str] = {}
    v2: list[tuple[str, set[str]]] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        mount_point, fstype, options = _unescape(parts[1]), parts[2], parts[3].split(",")
        if fstype == "cgroup2":
            try:
                offered = set((Path(mount_point) / "cgroup.controllers").read_text().split())
            except OSError:
                offered = set()
            v2.append((mount_point, offered))
        elif fstype == "cgroup":
            for controller in CONTROLLERS:
                if controller in options:
                    v1.setdefault(controller, mount_point)
    where: dict[str, tuple[int, str]] = {}
    missing: dict[str, str] = {}
    for controller in CONTROLLERS:
        unified = [m for m, offered in v2 if controller in offered]
        if unified:
            where[controller] = (2, unified[0])
        elif controller in v1:
            where[controller] = (1, v1[controller])
        else:
            missing[controller] = f"the host has no cgroup {controller} controller available"
    return Hierarchies(where, missing)


def _gib(value: int) -> str:
    if value >= 2**30:
        return f"{value / 2**30:.1f} GiB"
    return f"{value / 2**20:.0f} MiB"


def describe_limit(controller: str, limits: dict[str, Any]) -> str:
    if controller == "memory":
        return f"memory limit ({_gib(int(limits['memory_bytes']))})"
    if controller == "cpu":
        return f"CPU limit ({float(limits['cpus']):g} CPUs)"
    return f"process limit ({int(limits['pids'])} processes)"


def _requested(limits: dict[str, Any]) -> dict[str, bool]:
    return {
        "memory": limits.get("memory_bytes") is not None,
        "cpu": limits.get("cpus") is not None,
        "pids": limits.get("pids") is not None,
    }


def _write(path: Path, value: str) -> None:
    with open(path, "w") as file:  # one write(2): cgroup files take one value per write
        file.write(value)


def _why(error: OSError) -> str:
    return error.strerror or str(error)


class JobCgroups:
    """The cgroups of one job (one directory per hierarchy used)."""

    def __init__(self, hierarchies: Hierarchies, parent: str, name: str) -> None:
        self.hierarchies = hierarchies
        self.parent = parent.strip("/")
        self.name = name
        # directory -> (version, controllers in it); filled by create()
        self.dirs: dict[Path, tuple[int, list[str]]] = {}

    @classmethod
    def existing(cls, hierarchies: Hierarchies, dirs: list[list[Any]]) -> "JobCgroups":
        """The cgroups a wrapper recorded (see `to_json`)."""
        job = cls(hierarchies, "", "")
        job.dirs = {Path(d): (int(v), list(cs)) for d, v, cs in dirs}
        return job

    def to_json(self) -> list[list[Any]]:
        return [[str(d), v, cs] for d, (v, cs) in self.dirs.items()]

    def _dir_for(self, version: int, mount: str) -> Path:
        return Path(mount) / self.parent / self.name

    def create(self, limits: dict[str, Any]) -> list[str]:
        """Make the cgroups and write the limits; returns a warning per limit not applied."""
        warnings: list[str] = []
        wanted = _requested(limits)
        for controller in CONTROLLERS:
            if controller not in self.hierarchies.where:
                if wanted[controller]:
                    why = self.hierarchies.missing.get(controller, "no controller")
                    warnings.append(f"{describe_limit(controller, limits)} not applied: {why}")
                continue
            version, mount = self.hierarchies.where[controller]
            directory = self._dir_for(version, mount)
            try:
                self._make(version, Path(mount), directory, controller)
            except OSError as error:
                if wanted[controller]:
                    warnings.append(
                        f"{describe_limit(controller, limits)} not applied: cannot create "
                        f"the cgroup {directory} ({_why(error)})"
                    )
                continue
            self.dirs.setdefault(directory, (version, []))[1].append(controller)
            if not wanted[controller]:
                continue
            try:
                self._limit(version, directory, controller, limits)
            except OSError as error:
                warnings.append(
                    f"{describe_limit(controller, limits)} not applied: cannot write it "
                    f"into {directory} ({_why(error)})"
                )
        return warnings

    def _make(self, version: int, mount: Path, directory: Path, controller: str) -> None:
        if version == 2:
            # Each level from the root down to the parent must hand the controller on.
            level = mount
            for part in [*Path(self.parent).parts]:
                self._enable(level, controller)
                level = level / part
                level.mkdir(exist_ok=True)
            self._enable(level, controller)
            directory.mkdir(exist_ok=True)
        else:
            directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _enable(level: Path, controller: str) -> None:
        control = level / "cgroup.subtree_control"
        if controller not in control.read_text().split():
            _write(control, f"+{controller}")

    @staticmethod
    def _limit(version: int, directory: Path, controller: str, limits: dict[str, Any]) -> None:
        if controller == "memory":
            memory = int(limits["memory_bytes"])
            if version == 2:
                _write(directory / "memory.max", str(memory))
                with contextlib.suppress(OSError):  # without swap accounting: no file
                    _write(directory / "memory.swap.max", "0")
                with contextlib.suppress(OSError):  # the whole job dies on OOM, not a part
                    _write(directory / "memory.oom.group", "1")
            else:
                _write(directory / "memory.limit_in_bytes", str(memory))
                with contextlib.suppress(OSError):  # swap accounting is often off
                    _write(directory / "memory.memsw.limit_in_bytes", str(memory))
        elif controller == "cpu":
            quota = max(1000, round(float(limits["cpus"]) * CPU_PERIOD_US))
            if version == 2:
                _write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(directory / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(directory / "cpu.cfs_quota_us", str(quota))
        else:
            _write(directory / "pids.max", str(int(limits["pids"])))

    def join(self, pid: int, limits: dict[str, Any]) -> list[str]:
        """Move `pid` (the job's process, not yet exec'd) into every cgroup."""
        warnings: list[str] = []
        wanted = _requested(limits)
        for directory, (_version, controllers) in list(self.dirs.items()):
            try:
                _write(directory / "cgroup.procs", str(pid))
            except OSError as error:
                del self.dirs[directory]
                with contextlib.suppress(OSError):
                    directory.rmdir()
                warnings += [
                    f"{describe_limit(c, limits)} not applied: cannot move the job into "
                    f"{directory} ({_why(error)})"
                    for c in controllers
                    if wanted[c]
                ]
        return warnings

    def _memory_dir(self) -> tuple[int, Path] | None:
        for directory, (version, controllers) in self.dirs.items():
            if "memory" in controllers:
                return version, directory
        return None

    def oom_kills(self) -> int:
        """How many processes of the job the kernel's OOM killer ended."""
        found = self._memory_dir()
        if found is None:
            return 0
        version, directory = found
        name = "memory.events" if version == 2 else "memory.oom_control"
        try:
            for line in (directory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
            if version == 1:  # kernels before 4.13: no counter; hitting the limit is a hint
                return 1 if int((directory / "memory.failcnt").read_text()) > 0 else 0
        except (OSError, ValueError):
            pass
        return 0

    def memory_peak(self) -> int | None:
        found = self._memory_dir()
        if found is None:
            return None
        version, directory = found
        name = "memory.peak" if version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((directory / name).read_text())
        except (OSError, ValueError):
            return None

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        return found

    def kill_all(self) -> None:
        """SIGKILL every process left in the job's cgroups (also those that left its process
        group or session)."""
        for directory, (version, _) in self.dirs.items():
            if version == 2 and (directory / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(directory / "cgroup.kill", "1")
        for _ in range(5):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self, timeout: float = 2.0) -> list[str]:
        """Remove the job's cgroups (the parent stays); returns those that would not go."""
        deadline = time.monotonic() + timeout
        left = []
        for directory in self.dirs:
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if time.monotonic() > deadline:  # still busy: dying processes
                        left.append(f"{directory} ({_why(error)})")
                        break
                    time.sleep(0.02)
        return left

"""The GPU memory watchdog: which fractional jobs use more GPU memory than their share.

MPS limits what a job allocates through CUDA (`CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`), but not
everything a job can hold on the GPU, and not at all where MPS could not be started. So the
backend samples, through NVML, the GPU memory of every process on each shared GPU, attributes
each process to a job by its process group or session (the wrapper's session holds all of a
job's processes unless one deliberately leaves it), sums per job and device, and stops a job
whose sum exceeds its share (plus a little slack for the CUDA context) with reason `oom`.

`offenders` is pure (tested with made-up samples); `sample` reads NVML and /proc.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from suanli.backends.local.state import proc_stat
from suanli.gpu.nvml import Nvml, NvmlError

DETAIL = "GPU memory share exceeded"


@dataclass(frozen=True)
class ProcessSample:
    """One process's memory on one GPU, with the process group and session it belongs to."""

    device: str  # GPU UUID
    pid: int
    used_bytes: int
    pgid: int
    sid: int


@dataclass(frozen=True)
class Share:
    """A fractional job's allowance on one GPU. `groups`: the process group and session ids
    its processes carry (the wrapper's session, the job's process group)."""

    job: str  # any key the caller recognises (the backend uses the state directory)
    device: str
    memory_bytes: int
    groups: frozenset[int]


@dataclass(frozen=True)
class Offence:
    job: str
    device: str
    used_bytes: int
    limit_bytes: int
    pids: tuple[int, ...]

    @property
    def detail(self) -> str:
        return (
            f"{DETAIL}: {self.used_bytes / 2**20:.0f} MiB used on {self.device}, "
            f"share {self.limit_bytes / 2**20:.0f} MiB"
        )


def offenders(
    samples: Iterable[ProcessSample], shares: Iterable[Share], *, slack_bytes: int = 0
) -> list[Offence]:
    """The jobs whose processes together use more than `memory_bytes + slack_bytes` on their
    share's device. A process counts for a job when its process group or session is one of
    the job's `groups`; processes of nobody's jobs (the MPS server, whole-GPU jobs, ...) are
    ignored. Shares without a memory limit (compute-only fractions) are never offended."""
    samples = list(samples)
    found: list[Offence] = []
    for share in shares:
        if share.memory_bytes <= 0:
            continue
        mine = [
            s
            for s in samples
            if s.device == share.device and (s.pgid in share.groups or s.sid in share.groups)
        ]
        used = sum(s.used_bytes for s in mine)
        if used > share.memory_bytes + slack_bytes:
            found.append(
                Offence(
                    share.job,
                    share.device,
                    used,
                    share.memory_bytes,
                    tuple(sorted(s.pid for s in mine)),
                )
            )
    return found


def sample(
    nvml: Nvml, devices: Sequence[str] | None = None, *, proc: Path = Path("/proc")
) -> list[ProcessSample]:
    """Per-process GPU memory on the GPUs whose UUIDs are in `devices` (all when None).
    Processes that ended between NVML's answer and the look-up in /proc are left out."""
    wanted = set(devices) if devices is not None else None
    found: list[ProcessSample] = []
    try:
        count = nvml.device_count()
    except NvmlError:
        return found
    for index in range(count):
        try:
            handle = nvml.device_handle(index)
            uuid = nvml.uuid(handle)
            if wanted is not None and uuid not in wanted:
                continue
            processes = nvml.running_processes(handle)
        except NvmlError:
            continue
        for pid, used in processes:
            fields = proc_stat(pid, proc)
            if fields is None or len(fields) <= 6:
                continue
            found.append(ProcessSample(uuid, pid, used, int(fields[5]), int(fields[6])))
    return found

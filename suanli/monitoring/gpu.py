"""GPU metrics: what NVML says about each real GPU, and plausible telemetry for simulated ones.

`GpuSampler.sample(now, gpus, busy)` returns the samples of the GPUs discovery found. Every
GPU sample carries the labels `node`, `gpu` (index), `uuid`, `model` and `simulated` ("1" or
"0"); MIG samples add `mig_uuid` and `mig_profile`, per-process memory adds `pid` and, for a
process of a job, `job`.

Real GPUs: every catalogue metric NVML answers for the GPU; one it does not support (a fan on
a passive board, retired pages after Volta, utilisation of a MIG-enabled GPU) is left out.
`gpu_present` is 1 while NVML answers for the GPU; a GPU NVML no longer answers for (fallen off
the bus, or gone from the driver's list) yields only `gpu_present` 0. A process's job is read
from its environment (`SUANLI_JOB_ID`, which the local backend sets in every job) in
/proc/<pid>/environ: readable for processes of the server's own user, or for all with root; a
process that vanished or cannot be read has no `job` label. NVML reports host PIDs, so a
server inside a container without the host's PID namespace finds no job.

Simulated GPUs (no NVML behind them) report telemetry derived from `busy`, the share of each
GPU that jobs hold (0..1): utilisation 100·busy %, memory used busy·total, temperature
34 + 48·busy °C, power 60 + 340·busy W of a 400 W limit, SM clock 1410 MHz when busy (210 when
idle), memory clock 1593 MHz, no ECC error, no retired page or remapped row, no fan (a passive
data-centre board), and `gpu_present` 1.

Overrides for simulated GPUs: the JSON file `<data_dir>/simulated-gpu-telemetry.json`, when it
exists, replaces values, so that a test (or someone trying the platform without a GPU) can
make a simulated GPU run hot or fall off the bus:

    {
      "GPU-sim-myhost-0": {"gpu_temperature_celsius": 92, "gpu_fan_percent": 100},
      "GPU-sim-myhost-1": {"gpu_present": 0},
      "GPU-sim-myhost-2": {"gpu_retired_pages": {"dbe": 3}, "gpu_ecc_uncorrected_volatile": 1},
      "*": {"gpu_power_limit_watts": 300}
    }

Keys are GPU UUIDs, or "*" for every simulated GPU (a UUID's own entry wins). Values map a
`gpu_*` metric name of the catalogue to a number, which replaces every sample of that metric
(and adds it when the GPU had none, for metrics without labels of their own), or to an object
that maps the value of the metric's own label (`cause`, `kind`, `mig_uuid`) to a number.
`gpu_present` 0 leaves only `gpu_present` 0, as for a lost real GPU. The file is read again
whenever it changes (its mtime, size or inode); a file that cannot be read or parsed counts as
empty and is reported once in the log.
"""

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from suanli.gpu.discovery import is_simulated_uuid
from suanli.gpu.model import Gpu
from suanli.gpu.nvml import Nvml, NvmlError
from suanli.monitoring.model import METRICS, Sample, labels_of

log = logging.getLogger(__name__)

OVERRIDES_FILE = "simulated-gpu-telemetry.json"
JOB_VARIABLE = b"SUANLI_JOB_ID="

# The simulated board: an idle A100-like card with a 400 W limit.
SIM_IDLE_CELSIUS = 34.0
SIM_BUSY_CELSIUS = 48.0  # added at full load
SIM_IDLE_WATTS = 60.0
SIM_LIMIT_WATTS = 400.0
SIM_SM_CLOCK_IDLE, SIM_SM_CLOCK_BUSY, SIM_MEMORY_CLOCK = 210, 1410, 1593
SIM_PCIE_TX, SIM_PCIE_RX = 0.5e9, 1.5e9  # bytes/s at full load
THROTTLE_GPU_IDLE = 0x1  # nvmlClocksEventReasonGpuIdle

# Labels that belong to the GPU rather than to one series of a metric.
GPU_LABELS = frozenset({"node", "gpu", "uuid", "model", "simulated"})


class GpuSampler:
    """The GPU metrics of this host. One instance per collector, called from one thread;
    `nvml` is kept open by its owner (None: no driver, so no real GPU answers)."""

    def __init__(self, node: str, nvml: Nvml | None, data_dir: Path, *, pcie: bool = True) -> None:
        self.node = node
        self.nvml = nvml
        # nvmlDeviceGetPcieThroughput samples for ≈ 20 ms per direction and GPU: 8 GPUs add
        # ≈ 0.3 s of wall time to every sample. pcie=False leaves the two PCIe metrics out.
        self.pcie = pcie
        self.data_dir = Path(data_dir)
        self._handles: dict[str, Any] = {}  # GPU uuid -> NVML handle
        self._mig_handles: dict[str, dict[str, Any]] = {}  # GPU uuid -> MIG uuid -> handle
        self._overrides: dict[str, dict[str, Any]] = {}
        self._overrides_key: tuple[int, int, int] | None = None
        self._warned: set[str] = set()

    def sample(self, now: float, gpus: Sequence[Gpu], busy: Mapping[str, float]) -> list[Sample]:
        out: list[Sample] = []
        jobs: dict[int, str | None] = {}  # pid -> job id, read once per call
        overrides: dict[str, dict[str, Any]] = {}
        if any(gpu.simulated or is_simulated_uuid(gpu.uuid) for gpu in gpus):
            try:
                overrides = self._read_overrides()
            except Exception:
                self._warn("overrides", "simulated GPU overrides unreadable", exc=True)
        for gpu in gpus:
            base = {
                "node": self.node,
                "gpu": str(gpu.index),
                "uuid": gpu.uuid,
                "model": gpu.model,
                "simulated": "1" if gpu.simulated or is_simulated_uuid(gpu.uuid) else "0",
            }
            try:
                if base["simulated"] == "1":
                    samples = self._simulated(gpu, base, busy.get(gpu.uuid, 0.0))
                    samples = _override(samples, base, overrides, gpu.uuid, self._warn)
                else:
                    samples = self._real(gpu, base, jobs)
            except Exception:  # a bug of ours must not cost the other GPUs their samples
                self._warn(f"gpu {gpu.uuid}", "GPU %s: telemetry failed", gpu.uuid, exc=True)
                continue  # nothing rather than a gpu_present 0 that would say "lost"
            out += samples
        return out

    # -- real GPUs ---------------------------------------------------------------------------
    def _handle(self, gpu: Gpu) -> Any:
        """The NVML handle of `gpu`, or None when NVML does not know it (any more)."""
        nvml = self.nvml
        if nvml is None:
            return None
        handle = self._handles.get(gpu.uuid)
        if handle is not None:
            return handle
        # Most likely at its discovery index; else look through all (indexes can move when
        # a GPU drops out of the driver's list).
        try:
            count = nvml.device_count()
        except NvmlError:
            return None
        for index in [gpu.index, *(i for i in range(count) if i != gpu.index)]:
            if not 0 <= index < count:
                continue
            try:
                candidate = nvml.device_handle(index)
                if nvml.uuid(candidate) == gpu.uuid:
                    self._handles[gpu.uuid] = candidate
                    return candidate
            except NvmlError:
                continue
        return None

    def _mig_handle(self, nvml: Nvml, parent: Any, gpu_uuid: str, mig_uuid: str) -> Any:
        cached = self._mig_handles.get(gpu_uuid, {})
        if mig_uuid not in cached:
            cached = {}
            try:
                for mig in nvml.mig_handles(parent):
                    try:
                        cached[nvml.uuid(mig)] = mig
                    except NvmlError:
                        continue
            except NvmlError:
                pass
            self._mig_handles[gpu_uuid] = cached
        return cached.get(mig_uuid)

    def _real(self, gpu: Gpu, base: dict[str, str], jobs: dict[int, str | None]) -> list[Sample]:
        nvml = self.nvml
        handle = self._handle(gpu)
        if nvml is None or handle is None:
            return [_sample("gpu_present", base, 0)]
        # Memory in use answers on every NVIDIA GPU, MIG or not: when it fails, the GPU is gone.
        try:
            memory_used = nvml.memory_used(handle)
        except NvmlError as error:
            self._handles.pop(gpu.uuid, None)  # look it up afresh next time
            self._mig_handles.pop(gpu.uuid, None)
            self._warn(f"lost {gpu.uuid}", "GPU %s does not answer: %s", gpu.uuid, error)
            return [_sample("gpu_present", base, 0)]
        self._warned.discard(f"lost {gpu.uuid}")
        out = [
            _sample("gpu_present", base, 1),
            _sample("gpu_memory_used_bytes", base, memory_used),
            _sample("gpu_memory_total_bytes", base, gpu.memory_bytes),
        ]

        def ask(function: Any, *args: Any) -> Any:
            try:
                return function(handle, *args)
            except NvmlError:  # not supported here: leave the metric out
                return None
            except Exception:  # an answer we cannot read: leave it out, say so once
                name = getattr(function, "__name__", "?")
                self._warn(f"{name} {gpu.uuid}", "GPU %s: %s failed", gpu.uuid, name, exc=True)
                return None

        def add(name: str, value: float | None, **labels: str) -> None:
            if value is not None:
                out.append(_sample(name, {**base, **labels}, value))

        utilization = ask(nvml.utilization)
        if utilization is not None:
            add("gpu_utilization_percent", utilization[0])
            add("gpu_memory_utilization_percent", utilization[1])
        add("gpu_temperature_celsius", ask(nvml.temperature))
        add("gpu_power_watts", ask(nvml.power_usage_watts))
        add("gpu_power_limit_watts", ask(nvml.power_limit_watts))
        clocks = ask(nvml.clocks)
        if clocks is not None:
            add("gpu_sm_clock_mhz", clocks[0])
            add("gpu_memory_clock_mhz", clocks[1])
        add("gpu_fan_percent", ask(nvml.fan_percent))
        for kind in ("corrected", "uncorrected"):
            for counter in ("volatile", "aggregate"):
                add(f"gpu_ecc_{kind}_{counter}", ask(nvml.ecc_errors, kind, counter))
        for cause in ("sbe", "dbe"):
            add("gpu_retired_pages", ask(nvml.retired_pages, cause), cause=cause)
        rows = ask(nvml.remapped_rows)
        if rows is not None:
            for kind, value in rows._asdict().items():
                add("gpu_remapped_rows", value, kind=kind)
        add("gpu_throttle_reasons", ask(nvml.throttle_reasons))
        pcie = ask(nvml.pcie_throughput) if self.pcie else None
        if pcie is not None:
            add("gpu_pcie_tx_bytes_per_second", pcie[0])
            add("gpu_pcie_rx_bytes_per_second", pcie[1])
        # In MIG mode NVML lists a GPU's processes on the GPU's own handle only for root; each
        # MIG device lists its own for everyone. A process listed both ways counts once (a CUDA
        # process sees one MIG device at most, so the largest figure is its own).
        processes = dict(ask(nvml.running_processes) or ())
        for instance in gpu.mig_instances:
            mig = self._mig_handle(nvml, handle, gpu.uuid, instance.uuid)
            if mig is None:
                continue
            try:
                used = nvml.memory_used(mig)
            except NvmlError:
                continue
            add(
                "gpu_mig_memory_used_bytes",
                used,
                mig_uuid=instance.uuid,
                mig_profile=instance.profile,
            )
            try:
                for pid, memory in nvml.running_processes(mig):
                    processes[pid] = max(processes.get(pid, 0), memory)
            except NvmlError:
                continue
        for pid, used in sorted(processes.items()):
            if pid not in jobs:
                jobs[pid] = job_of(pid)
            job = jobs[pid]
            add("gpu_process_memory_bytes", used, pid=str(pid), **({"job": job} if job else {}))
        return out

    # -- simulated GPUs ----------------------------------------------------------------------
    def _simulated(self, gpu: Gpu, base: dict[str, str], share: float) -> list[Sample]:
        share = min(1.0, max(0.0, float(share)))
        values: list[tuple[str, float, dict[str, str]]] = [
            ("gpu_present", 1, {}),
            ("gpu_utilization_percent", round(100 * share), {}),
            ("gpu_memory_utilization_percent", round(60 * share), {}),
            ("gpu_memory_used_bytes", int(share * gpu.memory_bytes), {}),
            ("gpu_memory_total_bytes", gpu.memory_bytes, {}),
            ("gpu_temperature_celsius", round(SIM_IDLE_CELSIUS + SIM_BUSY_CELSIUS * share), {}),
            ("gpu_power_watts", SIM_IDLE_WATTS + share * (SIM_LIMIT_WATTS - SIM_IDLE_WATTS), {}),
            ("gpu_power_limit_watts", SIM_LIMIT_WATTS, {}),
            ("gpu_sm_clock_mhz", SIM_SM_CLOCK_BUSY if share > 0 else SIM_SM_CLOCK_IDLE, {}),
            ("gpu_memory_clock_mhz", SIM_MEMORY_CLOCK, {}),
            ("gpu_ecc_corrected_volatile", 0, {}),
            ("gpu_ecc_uncorrected_volatile", 0, {}),
            ("gpu_ecc_corrected_aggregate", 0, {}),
            ("gpu_ecc_uncorrected_aggregate", 0, {}),
            ("gpu_retired_pages", 0, {"cause": "sbe"}),
            ("gpu_retired_pages", 0, {"cause": "dbe"}),
            *(
                ("gpu_remapped_rows", 0, {"kind": kind})
                for kind in ("correctable", "uncorrectable", "pending", "failed")
            ),
            ("gpu_throttle_reasons", 0 if share > 0 else THROTTLE_GPU_IDLE, {}),
            ("gpu_pcie_tx_bytes_per_second", round(SIM_PCIE_TX * share), {}),
            ("gpu_pcie_rx_bytes_per_second", round(SIM_PCIE_RX * share), {}),
            *(
                (
                    "gpu_mig_memory_used_bytes",
                    int(share * instance.memory_bytes),
                    {"mig_uuid": instance.uuid, "mig_profile": instance.profile},
                )
                for instance in gpu.mig_instances
            ),
        ]
        return [_sample(name, {**base, **labels}, value) for name, value, labels in values]

    def _read_overrides(self) -> dict[str, dict[str, Any]]:
        path = self.data_dir / OVERRIDES_FILE
        try:
            stat = os.stat(path)
        except OSError:
            self._overrides, self._overrides_key = {}, None
            return self._overrides
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key == self._overrides_key:
            return self._overrides
        self._overrides_key = key
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise ValueError('expected {"<uuid>": {"<metric>": <value>, ...}, ...}')
        except (OSError, ValueError) as error:
            log.warning("%s is ignored: %s", path, error)
            data = {}
        self._overrides = data
        return data

    def _warn(self, key: str, message: str, *args: Any, exc: bool = False) -> None:
        """Log once per key, then quietly (debug) while the condition lasts."""
        if key in self._warned:
            log.debug(message, *args)
            return
        self._warned.add(key)
        log.warning(message, *args, exc_info=exc)


def _sample(name: str, labels: Mapping[str, str], value: float) -> Sample:
    return Sample(name, labels_of(labels), float(value))


def _override(
    samples: list[Sample],
    base: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]],
    uuid: str,
    warn: Any,
) -> list[Sample]:
    wanted = {**overrides.get("*", {}), **overrides.get(uuid, {})}
    if not wanted:
        return samples
    for name, value in wanted.items():
        if not name.startswith("gpu_") or name not in METRICS:
            warn(f"override {name}", "simulated GPU overrides: no GPU metric %r", name)
            continue
        if isinstance(value, Mapping):
            by_label = {str(key): val for key, val in value.items() if _number(val)}
            samples = [
                Sample(sample.name, sample.labels, float(by_label[own]))
                if sample.name == name and (own := _own_label(sample)) in by_label
                else sample
                for sample in samples
            ]
        elif _number(value):
            found = any(sample.name == name for sample in samples)
            samples = [
                Sample(sample.name, sample.labels, float(value)) if sample.name == name else sample
                for sample in samples
            ]
            if not found and name not in ("gpu_mig_memory_used_bytes", "gpu_process_memory_bytes"):
                samples.append(_sample(name, base, value))
        else:
            warn(f"override {name}={value!r}", "simulated GPU overrides: %s=%r", name, value)
    present = next((s.value for s in samples if s.name == "gpu_present"), 1.0)
    if present == 0:
        return [_sample("gpu_present", base, 0)]
    return samples


def _own_label(sample: Sample) -> str | None:
    """The value of the sample's one label beyond the GPU's (cause, kind, mig_uuid, ...)."""
    own = [value for key, value in sample.labels if key not in GPU_LABELS and key != "mig_profile"]
    return own[0] if len(own) == 1 else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float)  # true and false count as 1 and 0


def job_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The Suanli job a process belongs to (SUANLI_JOB_ID in its environment at exec), or
    None: not a job's, vanished, or not ours to read."""
    try:
        environ = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(JOB_VARIABLE):
            job = entry[len(JOB_VARIABLE) :].decode(errors="replace").strip()
            return job or None
    return None

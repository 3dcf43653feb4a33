"""An in-memory `Nvml` for the tests and bench/metrics_collect.py: a host with the GPUs, MIG
devices, NVLinks, PCIe topology and GPU processes you describe. Nothing here touches a driver.

    nvml = FakeNvml(
        [FakeGpu("GPU-0", bus_id="0000:17:00.0"), FakeGpu("GPU-1", bus_id="0000:18:00.0")],
        nvlinks={(0, 1)},
    )
    host = discover(settings, nvml=nvml)

Telemetry defaults to an idle A100 (35 °C, 60 W of a 400 W limit, 210/1593 MHz, no ECC
error); set the fields of a `FakeGpu` to change it, name methods in `FakeGpu.unsupported` to
make them raise `NvmlError` as NVML does for a feature the board lacks, and set
`FakeGpu.broken` (or call `FakeNvml.lose(index)`) for a GPU that fell off the bus.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from suanli.gpu.nvml import (
    TOPOLOGY_SYSTEM,
    EccCounter,
    EccKind,
    NvmlError,
    PageCause,
    RemappedRows,
)

MiB = 2**20
NO_REMAPPED_ROWS = RemappedRows(0, 0, 0, 0)


@dataclass
class FakeMig:
    uuid: str
    profile: str  # e.g. "1g.10gb"
    memory_bytes: int
    memory_used_bytes: int = 0


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB"
    memory_bytes: int = 80 * 2**30
    bus_id: str = "00000000:00:00.0"  # as NVML says it
    numa: int | None = 0  # None: NVML does not tell (discovery reads sysfs)
    mig_enabled: bool = False
    migs: list[FakeMig] = field(default_factory=list)
    # pid -> GPU memory in bytes, as NVML would report the compute processes
    processes: dict[int, int] = field(default_factory=dict)
    broken: bool = False  # every call about this GPU fails, as for a GPU fallen off the bus
    # Telemetry, as the `Nvml` methods of the same names return it.
    utilization: tuple[int, int] = (0, 0)  # SM %, memory controller %
    memory_used_bytes: int | None = None  # None: 4 MiB plus what the processes use
    temperature: int = 35
    power_usage_watts: float = 60.0
    power_limit_watts: float = 400.0
    clocks: tuple[int, int] = (210, 1593)  # SM, memory MHz
    fan_percent: int = 30
    ecc_errors: dict[tuple[EccKind, EccCounter], int] = field(default_factory=dict)  # else 0
    retired_pages: dict[PageCause, int] = field(default_factory=dict)  # else 0
    remapped_rows: RemappedRows = NO_REMAPPED_ROWS
    throttle_reasons: int = 0x1  # nvmlClocksEventReasonGpuIdle
    pcie_throughput: tuple[int, int] = (0, 0)  # tx, rx bytes/s
    # Names of `Nvml` methods that raise NvmlError("Not Supported") for this GPU.
    unsupported: set[str] = field(default_factory=set)


class FakeNvml:
    """`nvlinks`: pairs of GPU indexes joined by NVLink; `ancestors`: NVML_TOPOLOGY_* level per
    pair (others get `default_ancestor`)."""

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        nvlinks: Iterable[tuple[int, int]] = (),
        ancestors: dict[tuple[int, int], int] | None = None,
        default_ancestor: int = TOPOLOGY_SYSTEM,
        driver: str = "550.54.15",
    ) -> None:
        self.gpus = gpus
        self.nvlinks = {frozenset(pair) for pair in nvlinks}
        self.ancestors = {frozenset(pair): level for pair, level in (ancestors or {}).items()}
        self.default_ancestor = default_ancestor
        self.driver = driver
        self.shut_down = False

    def _gpu(self, handle: Any) -> FakeGpu:
        gpu = self.gpus[handle[1]]
        if gpu.broken:
            raise NvmlError("GPU is lost")
        return gpu

    def _mig(self, handle: Any) -> FakeMig:
        return self._gpu(("gpu", handle[1])).migs[handle[2]]

    def driver_version(self) -> str:
        return self.driver

    def device_count(self) -> int:
        return len(self.gpus)

    def device_handle(self, index: int) -> Any:
        if not 0 <= index < len(self.gpus):
            raise NvmlError("invalid argument")
        handle = ("gpu", index)
        self._gpu(handle)
        return handle

    def uuid(self, handle: Any) -> str:
        return self._mig(handle).uuid if handle[0] == "mig" else self._gpu(handle).uuid

    def name(self, handle: Any) -> str:
        if handle[0] == "mig":
            return f"{self._gpu(('gpu', handle[1])).name} MIG {self._mig(handle).profile}"
        return self._gpu(handle).name

    def memory_total(self, handle: Any) -> int:
        if handle[0] == "mig":
            return self._mig(handle).memory_bytes
        return self._gpu(handle).memory_bytes

    def pci_bus_id(self, handle: Any) -> str:
        return self._gpu(handle).bus_id

    def numa_node(self, handle: Any) -> int | None:
        return self._gpu(handle).numa

    def mig_enabled(self, handle: Any) -> bool:
        return self._gpu(handle).mig_enabled

    def mig_handles(self, handle: Any) -> list[Any]:
        gpu = self._gpu(handle)
        if not gpu.mig_enabled:
            raise NvmlError("not supported")
        return [("mig", handle[1], j) for j in range(len(gpu.migs))]

    def mig_profile(self, mig_handle: Any) -> str:
        return self._mig(mig_handle).profile

    def common_ancestor(self, a: Any, b: Any) -> int:
        self._gpu(a), self._gpu(b)
        return self.ancestors.get(frozenset((a[1], b[1])), self.default_ancestor)

    def nvlink_connected(self, a: Any, b: Any) -> bool:
        return frozenset((a[1], b[1])) in self.nvlinks

    def lose(self, index: int) -> None:
        """GPU `index` falls off the bus: every call about it fails from now on."""
        self.gpus[index].broken = True

    def running_processes(self, handle: Any) -> list[tuple[int, int]]:
        return sorted(self._supported(handle, "running_processes").processes.items())

    def _supported(self, handle: Any, method: str) -> FakeGpu:
        gpu = self._gpu(("gpu", handle[1]))
        if method in gpu.unsupported:
            raise NvmlError(f"{method}: Not Supported")
        return gpu

    def utilization(self, handle: Any) -> tuple[int, int]:
        return self._supported(handle, "utilization").utilization

    def memory_used(self, handle: Any) -> int:
        gpu = self._supported(handle, "memory_used")
        if handle[0] == "mig":
            return self._mig(handle).memory_used_bytes
        if gpu.memory_used_bytes is not None:
            return gpu.memory_used_bytes
        return 4 * MiB + sum(gpu.processes.values())

    def temperature(self, handle: Any) -> int:
        return self._supported(handle, "temperature").temperature

    def power_usage_watts(self, handle: Any) -> float:
        return self._supported(handle, "power_usage_watts").power_usage_watts

    def power_limit_watts(self, handle: Any) -> float:
        return self._supported(handle, "power_limit_watts").power_limit_watts

    def clocks(self, handle: Any) -> tuple[int, int]:
        return self._supported(handle, "clocks").clocks

    def fan_percent(self, handle: Any) -> int:
        return self._supported(handle, "fan_percent").fan_percent

    def ecc_errors(self, handle: Any, kind: EccKind, counter: EccCounter) -> int:
        return self._supported(handle, "ecc_errors").ecc_errors.get((kind, counter), 0)

    def retired_pages(self, handle: Any, cause: PageCause) -> int:
        return self._supported(handle, "retired_pages").retired_pages.get(cause, 0)

    def remapped_rows(self, handle: Any) -> RemappedRows:
        return self._supported(handle, "remapped_rows").remapped_rows

    def throttle_reasons(self, handle: Any) -> int:
        return self._supported(handle, "throttle_reasons").throttle_reasons

    def pcie_throughput(self, handle: Any) -> tuple[int, int]:
        return self._supported(handle, "pcie_throughput").pcie_throughput

    def shutdown(self) -> None:
        self.shut_down = True

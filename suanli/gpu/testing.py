"""An in-memory `Nvml` for tests and demos: a host with the GPUs, MIG devices, NVLinks, PCIe
topology and GPU processes you describe. Nothing here touches a driver.

    nvml = FakeNvml(
        [FakeGpu("GPU-0", bus_id="0000:17:00.0"), FakeGpu("GPU-1", bus_id="0000:18:00.0")],
        nvlinks={(0, 1)},
    )
    host = discover(settings, nvml=nvml)
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from suanli.gpu.nvml import TOPOLOGY_SYSTEM, NvmlError


@dataclass
class FakeMig:
    uuid: str
    profile: str  # e.g. "1g.10gb"
    memory_bytes: int


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

    def running_processes(self, handle: Any) -> list[tuple[int, int]]:
        return sorted(self._gpu(handle).processes.items())

    def shutdown(self) -> None:
        self.shut_down = True

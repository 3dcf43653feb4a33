"""The few NVML calls Suanli uses, behind a small interface.

Discovery, the GPU memory watchdog and monitoring (the telemetry calls) speak to `Nvml`, never
to `pynvml` directly, so tests can hand them a test double that mimics a multi-GPU host (MIG,
NVLink, PCIe switches, telemetry) and the real `pynvml` module plugs in through
`PynvmlAdapter`. Handles are opaque to the callers: whatever `device_handle` and `mig_handles`
return is passed back unchanged.

`pynvml` (package `nvidia-ml-py`) is imported lazily: a host without the package, without the
driver library or without a working driver simply has no NVML (`load_nvml` returns None).
"""

import contextlib
import functools
import logging
import math
import re
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol

log = logging.getLogger(__name__)

# nvmlDeviceGetTopologyCommonAncestor levels (NVML_TOPOLOGY_*), from closest to farthest.
TOPOLOGY_INTERNAL = 0  # the same board (e.g. a dual-GPU card)
TOPOLOGY_SINGLE = 10  # one PCIe switch
TOPOLOGY_MULTIPLE = 20  # several PCIe switches, no host bridge crossed
TOPOLOGY_HOSTBRIDGE = 30  # one PCIe host bridge
TOPOLOGY_NODE = 40  # one NUMA node (several host bridges)
TOPOLOGY_SYSTEM = 50  # across NUMA nodes / sockets (SMP interconnect)


class NvmlError(Exception):
    """An NVML call failed (not supported, not found, GPU lost, ...)."""


class RemappedRows(NamedTuple):
    """nvmlDeviceGetRemappedRows (Ampere and later): rows remapped for correctable and for
    uncorrectable errors, whether a remapping waits for the next GPU reset (1/0), and whether
    one failed (1/0: the GPU should be replaced)."""

    correctable: int
    uncorrectable: int
    pending: int
    failed: int


EccKind = Literal["corrected", "uncorrected"]
EccCounter = Literal["volatile", "aggregate"]  # since the driver loaded | over the GPU's life
PageCause = Literal["sbe", "dbe"]  # multiple single-bit errors | a double-bit error


class Nvml(Protocol):
    """What Suanli asks of NVML. Every method may raise `NvmlError`."""

    def driver_version(self) -> str: ...

    def device_count(self) -> int: ...

    def device_handle(self, index: int) -> Any: ...

    def uuid(self, handle: Any) -> str: ...

    def name(self, handle: Any) -> str: ...

    def memory_total(self, handle: Any) -> int: ...

    def pci_bus_id(self, handle: Any) -> str:
        """As NVML says it, e.g. "00000000:3B:00.0"."""
        ...

    def numa_node(self, handle: Any) -> int | None:
        """None when NVML cannot tell (older drivers); discovery then reads sysfs."""
        ...

    def mig_enabled(self, handle: Any) -> bool: ...

    def mig_handles(self, handle: Any) -> Sequence[Any]:
        """Handles of the MIG devices (compute instances) that exist on this GPU."""
        ...

    def mig_profile(self, mig_handle: Any) -> str:
        """e.g. "1g.10gb"."""
        ...

    def common_ancestor(self, a: Any, b: Any) -> int:
        """One of the TOPOLOGY_* levels above."""
        ...

    def nvlink_connected(self, a: Any, b: Any) -> bool: ...

    def running_processes(self, handle: Any) -> Sequence[tuple[int, int]]:
        """(pid, used GPU memory in bytes) of the compute processes on this GPU, MPS clients
        included; processes whose usage NVML does not report are left out."""
        ...

    # Telemetry (monitoring). A GPU or driver without the feature raises NvmlError ("Not
    # Supported"); a GPU fallen off the bus raises it for every call.

    def utilization(self, handle: Any) -> tuple[int, int]:
        """(SM %, memory controller %) over the driver's last sample period."""
        ...

    def memory_used(self, handle: Any) -> int:
        """Framebuffer memory in use, bytes; `handle` may be a GPU's or a MIG device's."""
        ...

    def temperature(self, handle: Any) -> int:
        """The GPU die's temperature, °C."""
        ...

    def power_usage_watts(self, handle: Any) -> float: ...

    def power_limit_watts(self, handle: Any) -> float:
        """The enforced power limit."""
        ...

    def clocks(self, handle: Any) -> tuple[int, int]:
        """(SM clock, memory clock), MHz."""
        ...

    def fan_percent(self, handle: Any) -> int:
        """Fan speed as a share of its maximum; passively cooled boards do not support it."""
        ...

    def ecc_errors(self, handle: Any, kind: EccKind, counter: EccCounter) -> int: ...

    def retired_pages(self, handle: Any, cause: PageCause) -> int:
        """How many pages were retired for `cause` (before Ampere; later GPUs remap rows)."""
        ...

    def remapped_rows(self, handle: Any) -> RemappedRows: ...

    def throttle_reasons(self, handle: Any) -> int:
        """The bit mask of why the clocks are held down (nvmlClocksEventReason*)."""
        ...

    def pcie_throughput(self, handle: Any) -> tuple[int, int]:
        """(transmit, receive) over PCIe, bytes per second. NVML samples it for about 20 ms
        per direction on every call: the slowest of these calls by far."""
        ...

    def shutdown(self) -> None: ...


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_MIG_NAME = re.compile(r"\bMIG\s+(\d+g\.\d+gb(?:\+\w+)?)", re.IGNORECASE)


def mig_profile_from(name: str, slices: int | None = None, memory_mb: int | None = None) -> str:
    """A MIG device's profile: from its NVML name ("NVIDIA A100-SXM4-80GB MIG 1g.10gb"), or
    else from its slice count and memory (NVIDIA rounds the memory up to whole GB: 9728 MB is
    "1g.10gb")."""
    match = _MIG_NAME.search(name)
    if match:
        return match.group(1).lower()
    if slices and memory_mb:
        return f"{slices}g.{math.ceil(memory_mb / 1024)}gb"
    return "unknown"


class PynvmlAdapter:
    """`Nvml` on top of the `pynvml` module. Construct with `load_nvml()`."""

    def __init__(self, pynvml: Any) -> None:
        self._nv = pynvml

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._nv, name)(*args)
        except self._nv.NVMLError as error:
            raise NvmlError(f"{name}: {error}") from error

    def driver_version(self) -> str:
        return _text(self._call("nvmlSystemGetDriverVersion"))

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def device_handle(self, index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def uuid(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetUUID", handle))

    def name(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetName", handle))

    def memory_total(self, handle: Any) -> int:
        return int(self._call("nvmlDeviceGetMemoryInfo", handle).total)

    def pci_bus_id(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetPciInfo", handle).busId)

    def numa_node(self, handle: Any) -> int | None:
        if not hasattr(self._nv, "nvmlDeviceGetNumaNodeId"):
            return None
        try:
            node = int(self._call("nvmlDeviceGetNumaNodeId", handle))
        except NvmlError:
            return None
        return node if node >= 0 else None

    def mig_enabled(self, handle: Any) -> bool:
        try:
            current, _pending = self._call("nvmlDeviceGetMigMode", handle)
        except NvmlError:  # not MIG-capable
            return False
        return current == self._nv.NVML_DEVICE_MIG_ENABLE

    def mig_handles(self, handle: Any) -> list[Any]:
        handles = []
        for index in range(int(self._call("nvmlDeviceGetMaxMigDeviceCount", handle))):
            try:
                handles.append(self._call("nvmlDeviceGetMigDeviceHandleByIndex", handle, index))
            except NvmlError:  # an empty slot
                continue
        return handles

    def mig_profile(self, mig_handle: Any) -> str:
        name = self.name(mig_handle)
        slices = memory_mb = None
        try:
            attributes = self._call("nvmlDeviceGetAttributes", mig_handle)
            slices = int(attributes.gpuInstanceSliceCount)
            memory_mb = int(attributes.memorySizeMB)
        except NvmlError:
            pass
        return mig_profile_from(name, slices, memory_mb)

    def common_ancestor(self, a: Any, b: Any) -> int:
        return int(self._call("nvmlDeviceGetTopologyCommonAncestor", a, b))

    def nvlink_connected(self, a: Any, b: Any) -> bool:
        # P2P over NVLink covers direct links and NVSwitch fabrics alike.
        try:
            status = self._call("nvmlDeviceGetP2PStatus", a, b, self._nv.NVML_P2P_CAPS_INDEX_NVLINK)
            return status == self._nv.NVML_P2P_STATUS_OK
        except NvmlError:
            pass
        # Older drivers: look for an active link whose far end is the other GPU.
        try:
            target = normalise_bus_id(self.pci_bus_id(b))
        except NvmlError:
            return False
        for link in range(int(getattr(self._nv, "NVML_NVLINK_MAX_LINKS", 18))):
            try:
                if self._call("nvmlDeviceGetNvLinkState", a, link) != 1:
                    continue
                remote = self._call("nvmlDeviceGetNvLinkRemotePciInfo", a, link)
            except NvmlError:
                continue
            if normalise_bus_id(_text(remote.busId)) == target:
                return True
        return False

    def running_processes(self, handle: Any) -> list[tuple[int, int]]:
        used: dict[int, int] = {}
        for call in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetMPSComputeRunningProcesses",
        ):
            if not hasattr(self._nv, call):
                continue
            try:
                processes = self._call(call, handle)
            except NvmlError:
                continue
            for process in processes:
                memory = getattr(process, "usedGpuMemory", None)
                if memory is None:  # not reported (no permission, or Windows WDDM)
                    continue
                used[int(process.pid)] = max(used.get(int(process.pid), 0), int(memory))
        return sorted(used.items())

    def utilization(self, handle: Any) -> tuple[int, int]:
        rates = self._call("nvmlDeviceGetUtilizationRates", handle)
        return int(rates.gpu), int(rates.memory)

    def memory_used(self, handle: Any) -> int:
        return int(self._call("nvmlDeviceGetMemoryInfo", handle).used)

    def temperature(self, handle: Any) -> int:
        return int(self._call("nvmlDeviceGetTemperature", handle, self._nv.NVML_TEMPERATURE_GPU))

    def power_usage_watts(self, handle: Any) -> float:
        return int(self._call("nvmlDeviceGetPowerUsage", handle)) / 1000  # mW

    def power_limit_watts(self, handle: Any) -> float:
        return int(self._call("nvmlDeviceGetEnforcedPowerLimit", handle)) / 1000  # mW

    def clocks(self, handle: Any) -> tuple[int, int]:
        sm = self._call("nvmlDeviceGetClockInfo", handle, self._nv.NVML_CLOCK_SM)
        memory = self._call("nvmlDeviceGetClockInfo", handle, self._nv.NVML_CLOCK_MEM)
        return int(sm), int(memory)

    def fan_percent(self, handle: Any) -> int:
        return int(self._call("nvmlDeviceGetFanSpeed", handle))

    def ecc_errors(self, handle: Any, kind: EccKind, counter: EccCounter) -> int:
        error_type = (
            self._nv.NVML_MEMORY_ERROR_TYPE_CORRECTED
            if kind == "corrected"
            else self._nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        )
        counter_type = (
            self._nv.NVML_VOLATILE_ECC if counter == "volatile" else self._nv.NVML_AGGREGATE_ECC
        )
        return int(self._call("nvmlDeviceGetTotalEccErrors", handle, error_type, counter_type))

    def retired_pages(self, handle: Any, cause: PageCause) -> int:
        source = (
            self._nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
            if cause == "sbe"
            else self._nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
        )
        return len(self._call("nvmlDeviceGetRetiredPages", handle, source))

    def remapped_rows(self, handle: Any) -> RemappedRows:
        correctable, uncorrectable, pending, failed = self._call(
            "nvmlDeviceGetRemappedRows", handle
        )
        return RemappedRows(int(correctable), int(uncorrectable), int(pending), int(failed))

    def throttle_reasons(self, handle: Any) -> int:
        # Renamed "clocks event reasons" in driver 535; older drivers know only the old name
        # (the new one then fails as "function not found").
        if hasattr(self._nv, "nvmlDeviceGetCurrentClocksEventReasons"):
            try:
                return int(self._call("nvmlDeviceGetCurrentClocksEventReasons", handle))
            except NvmlError:
                pass
        return int(self._call("nvmlDeviceGetCurrentClocksThrottleReasons", handle))

    def pcie_throughput(self, handle: Any) -> tuple[int, int]:
        tx = self._call("nvmlDeviceGetPcieThroughput", handle, self._nv.NVML_PCIE_UTIL_TX_BYTES)
        rx = self._call("nvmlDeviceGetPcieThroughput", handle, self._nv.NVML_PCIE_UTIL_RX_BYTES)
        return int(tx) * 1024, int(rx) * 1024  # KB/s

    def shutdown(self) -> None:
        with contextlib.suppress(self._nv.NVMLError):
            self._nv.nvmlShutdown()


def normalise_bus_id(bus_id: str) -> str:
    """NVML's "00000000:3B:00.0" as sysfs names it: "0000:3b:00.0"."""
    bus_id = bus_id.strip().lower()
    domain, sep, rest = bus_id.partition(":")
    if not sep:
        return bus_id
    if rest.count(":") == 0:  # "3b:00.0" without a domain
        return f"0000:{bus_id}"
    return f"{int(domain, 16):04x}:{rest}"


def load_nvml() -> Nvml | None:
    """NVML of this host, initialised, or None when there is no usable driver (the package,
    the library or the kernel driver missing, or NVML failing to initialise). Callers ask
    again at every inventory; the log says why there is none once per process."""
    try:
        import pynvml  # optional: most test machines have no GPU
    except ImportError:
        _no_driver("the nvidia-ml-py package (pynvml) is not installed")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        _no_driver(f"NVML: {error}")
        return None
    except OSError as error:  # a broken library on some systems
        _no_driver(f"NVML could not be loaded: {error}")
        return None
    return PynvmlAdapter(pynvml)


@functools.cache
def _no_driver(why: str) -> None:
    """Said once per process (and reason): a host without a driver stays without one."""
    log.info("No NVIDIA driver found (%s): this host has no real GPUs", why)

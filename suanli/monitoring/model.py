"""What monitoring speaks: samples of named metrics with labels, and the catalogue of metrics.

A sample is one value of one series (a metric name plus labels) at one moment; collectors
return lists of them, the store keeps them as time series, `/metrics` exposes the latest, the
alert rules watch them. Names are Suanli's own (`node_*`, `gpu_*`, `job_*`, `suanli_*`); the
GPU metrics also carry the dcgm-exporter name under which `/metrics` publishes them, so
dashboards made for NVIDIA's exporter work.

Labels: node metrics carry `node` (and `cpu`, `mount`, `interface`, `proto` where they apply);
GPU metrics carry `node`, `gpu` (index), `uuid`, `model` and `simulated` ("1" or "0"); MIG
metrics add `mig_uuid`, `mig_profile`; per-process GPU memory adds `pid` and, where the
process belongs to a job, `job`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Labels = tuple[tuple[str, str], ...]


def labels_of(values: Mapping[str, object]) -> Labels:
    """Labels in their one canonical form: sorted, values as text."""
    return tuple(sorted((key, str(value)) for key, value in values.items()))


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)


@dataclass(frozen=True)
class Metric:
    help: str
    unit: str  # "percent", "bytes", "bytes_per_second", "celsius", "watts", "mhz", "count", ...
    kind: Literal["gauge", "counter"] = "gauge"
    dcgm: str = ""  # the dcgm-exporter name, where one exists


METRICS: dict[str, Metric] = {
    # Node (psutil). Rates are per second over the collection interval.
    "node_cpu_percent": Metric(
        "CPU busy, per core (label cpu) and in total (no cpu label)", "percent"
    ),
    "node_load1": Metric("Load average over 1 minute", "count"),
    "node_load5": Metric("Load average over 5 minutes", "count"),
    "node_load15": Metric("Load average over 15 minutes", "count"),
    "node_memory_total_bytes": Metric("Memory in total", "bytes"),
    "node_memory_used_bytes": Metric("Memory in use (total minus available)", "bytes"),
    "node_memory_percent": Metric("Memory in use", "percent"),
    "node_swap_total_bytes": Metric("Swap in total", "bytes"),
    "node_swap_used_bytes": Metric("Swap in use", "bytes"),
    "node_disk_total_bytes": Metric("Size of the filesystem, per mount", "bytes"),
    "node_disk_used_bytes": Metric("Used space, per mount", "bytes"),
    "node_disk_percent": Metric(
        "Used space, per mount (mount=data: the data directory)", "percent"
    ),
    "node_disk_read_bytes_per_second": Metric("Disk reads, per mount's device", "bytes_per_second"),
    "node_disk_write_bytes_per_second": Metric(
        "Disk writes, per mount's device", "bytes_per_second"
    ),
    "node_network_receive_bytes_per_second": Metric("Received, per interface", "bytes_per_second"),
    "node_network_transmit_bytes_per_second": Metric("Sent, per interface", "bytes_per_second"),
    "node_connections": Metric("Open connections by protocol (proto=tcp|udp)", "count"),
    "node_cpu_temperature_celsius": Metric(
        "CPU temperature, per sensor, where sensors exist", "celsius"
    ),
    # GPU (NVML, or the simulated devices' telemetry).
    "gpu_present": Metric("1 while NVML answers for the GPU, 0 once it is lost", "count"),
    "gpu_utilization_percent": Metric(
        "SM (compute) utilisation", "percent", dcgm="DCGM_FI_DEV_GPU_UTIL"
    ),
    "gpu_memory_utilization_percent": Metric(
        "Memory controller utilisation", "percent", dcgm="DCGM_FI_DEV_MEM_COPY_UTIL"
    ),
    "gpu_memory_used_bytes": Metric("Framebuffer memory used", "bytes", dcgm="DCGM_FI_DEV_FB_USED"),
    "gpu_memory_total_bytes": Metric("Framebuffer memory in total", "bytes"),
    "gpu_temperature_celsius": Metric("GPU temperature", "celsius", dcgm="DCGM_FI_DEV_GPU_TEMP"),
    "gpu_power_watts": Metric("Power draw", "watts", dcgm="DCGM_FI_DEV_POWER_USAGE"),
    "gpu_power_limit_watts": Metric(
        "Enforced power limit", "watts", dcgm="DCGM_FI_DEV_POWER_MGMT_LIMIT"
    ),
    "gpu_sm_clock_mhz": Metric("SM clock", "mhz", dcgm="DCGM_FI_DEV_SM_CLOCK"),
    "gpu_memory_clock_mhz": Metric("Memory clock", "mhz", dcgm="DCGM_FI_DEV_MEM_CLOCK"),
    "gpu_fan_percent": Metric(
        "Fan speed, where the board has a fan", "percent", dcgm="DCGM_FI_DEV_FAN_SPEED"
    ),
    "gpu_ecc_corrected_volatile": Metric(
        "Corrected (single-bit) ECC errors since the driver loaded",
        "count",
        "counter",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    ),
    "gpu_ecc_uncorrected_volatile": Metric(
        "Uncorrected (double-bit) ECC errors since the driver loaded",
        "count",
        "counter",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    ),
    "gpu_ecc_corrected_aggregate": Metric(
        "Corrected ECC errors over the GPU's life",
        "count",
        "counter",
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    ),
    "gpu_ecc_uncorrected_aggregate": Metric(
        "Uncorrected ECC errors over the GPU's life",
        "count",
        "counter",
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    ),
    "gpu_retired_pages": Metric("Retired memory pages (cause=sbe|dbe)", "count", "counter"),
    "gpu_remapped_rows": Metric(
        "Remapped memory rows (kind=correctable|uncorrectable|pending|failed)", "count", "counter"
    ),
    "gpu_throttle_reasons": Metric(
        "Clock throttle reasons, the NVML bit mask",
        "count",
        dcgm="DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
    ),
    "gpu_pcie_tx_bytes_per_second": Metric(
        "PCIe transmit throughput", "bytes_per_second", dcgm="DCGM_FI_PROF_PCIE_TX_BYTES"
    ),
    "gpu_pcie_rx_bytes_per_second": Metric(
        "PCIe receive throughput", "bytes_per_second", dcgm="DCGM_FI_PROF_PCIE_RX_BYTES"
    ),
    "gpu_mig_memory_used_bytes": Metric("Memory used on a MIG instance", "bytes"),
    "gpu_process_memory_bytes": Metric(
        "GPU memory used by a process (job: the job it belongs to)", "bytes"
    ),
    # Jobs: CPU and memory from the backend; GPU figures derived from the GPU samples and the
    # placements.
    "job_cpu_percent": Metric("CPU used by the job's processes (100 = one core)", "percent"),
    "job_memory_bytes": Metric("Resident memory of the job's processes", "bytes"),
    "job_gpu_utilization_percent": Metric("Mean SM utilisation over the job's GPUs", "percent"),
    "job_gpu_memory_used_bytes": Metric("GPU memory used by the job's processes", "bytes"),
    "job_gpu_power_watts": Metric(
        "Power of the job's GPUs (a fraction: its compute share)", "watts"
    ),
    "job_energy_wh": Metric("Energy of the job's GPUs since it started", "watt_hours", "counter"),
}

"""Node metrics: CPU, load, memory, swap, disks, network, connections and CPU temperature of
this host, read with psutil (and /proc where that is cheaper).

`NodeSampler.sample(now)` returns one list of samples per call; the collector calls it on its
timer. Rates (CPU busy %, disk and network bytes per second) are differences of the kernel's
counters between two calls divided by the `now` difference, so the first call has none. A
metric the host lacks (no swap, no sensors, a mount gone, a /proc file missing in a container)
is left out, never an error. Every sample carries the label `node`.

Nothing here needs root: psutil reads /proc and /sys files that everyone may read. The
slowest parts on a big server are `sensors_temperatures` (a few files per sensor under
/sys/class/hwmon) and `disk_usage` (one statfs per mount); see bench/README.md for figures.
"""

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

from suanli.monitoring.model import Sample, labels_of

log = logging.getLogger(__name__)

# Filesystems that are not disks: listed by disk_partitions(all=False) on some systems anyway
# (squashfs of snaps, overlays of containers, in-memory ones).
PSEUDO_FSTYPES = frozenset(
    {
        "squashfs",
        "overlay",
        "overlayfs",
        "aufs",
        "tmpfs",
        "devtmpfs",
        "ramfs",
        "iso9660",
        "fuse.lxcfs",
        "fuse.snapfuse",
        "nsfs",
        "autofs",
    }
)
PSEUDO_MOUNT_PREFIXES = (
    "/snap/",
    "/var/snap/",
    "/var/lib/docker/",
    "/var/lib/kubelet/",
    "/proc/",
    "/sys/",
)
SENSOR_RETRY_SECONDS = 600.0  # a host without CPU sensors is asked again this much later

# hwmon chips that measure the CPU (Intel, AMD, ARM SoCs); others (nvme, drivetemp, GPUs,
# acpitz, ...) measure something else.
CPU_SENSOR_CHIPS = frozenset(
    {
        "coretemp",
        "k10temp",
        "zenpower",
        "k8temp",
        "cpu_thermal",
        "cpu-thermal",
        "x86_pkg_temp",
        "soc_thermal",
        "cpu0_thermal",
    }
)


def _existing(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _cpu_busy_total(times: Any) -> tuple[float, float]:
    """(busy, total) seconds of one CPU (a psutil `scputimes`), as psutil counts them: guest
    time is already part of user time, and iowait is idle."""
    fields = times._asdict()
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


def connection_counts(proc: Path = Path("/proc")) -> dict[str, int]:
    """TCP and UDP sockets of this host's network namespace, IPv4 and IPv6 together.

    Read from /proc/net/sockstat and sockstat6: the kernel keeps these counts, so reading them
    costs the same with 10 or 100 000 connections, where `psutil.net_connections` walks every
    process's file descriptors (slow, and incomplete without root) and /proc/net/tcp{,6} has
    the kernel format one line per socket. TCP counts the sockets in use (listening,
    established, closing) plus those in TIME_WAIT: the same number as the lines of
    /proc/net/tcp and tcp6 or `len(psutil.net_connections("tcp"))`. Without sockstat the
    lines are counted instead."""
    counts: dict[str, int] = {}
    try:
        fields: dict[str, dict[str, int]] = {}
        for name in ("sockstat", "sockstat6"):
            for line in (proc / "net" / name).read_text().splitlines():
                key, _, rest = line.partition(":")
                values = rest.split()
                fields[key] = {values[i]: int(values[i + 1]) for i in range(0, len(values) - 1, 2)}
        counts["tcp"] = (
            fields["TCP"]["inuse"] + fields["TCP"].get("tw", 0) + fields["TCP6"]["inuse"]
        )
        counts["udp"] = fields["UDP"]["inuse"] + fields["UDP6"]["inuse"]
        return counts
    except (OSError, KeyError, ValueError, IndexError):
        pass
    for proto in ("tcp", "udp"):
        total, found = 0, False
        for name in (proto, f"{proto}6"):
            try:
                with open(proc / "net" / name, "rb") as file:
                    total += max(0, sum(1 for _ in file) - 1)  # less the header line
                found = True
            except OSError:
                continue
        if found:
            counts[proto] = total
    return counts


def _block_device_name(device: str, mountpoint: str) -> str | None:
    """The kernel's name of a mount's block device, as /proc/diskstats has it ("nvme0n1p2",
    "dm-0"): from the device node, or else from the mount's st_dev (for "/dev/root")."""
    if device.startswith("/dev/"):
        real = os.path.realpath(device)
        if real.startswith("/dev/") and os.path.exists(real):
            return os.path.basename(real)
    try:
        st_dev = os.stat(mountpoint).st_dev
    except OSError:
        return None
    if os.major(st_dev) == 0:  # btrfs subvolumes, ZFS, NFS: no block device of its own
        return None
    try:
        link = os.readlink(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}")
    except OSError:
        return None
    return os.path.basename(link)


class NodeSampler:
    """The node metrics of this host. Keeps the previous call's counters for the rates; one
    instance per collector, called from one thread."""

    def __init__(self, node: str, data_dir: Path) -> None:
        self.node = node
        self.data_dir = Path(data_dir)
        self._base = {"node": node}
        self._last_now: float | None = None
        self._cpu: list[tuple[float, float]] | None = None  # (busy, total) per CPU
        self._disk: dict[str, tuple[int, int]] = {}  # device -> (read bytes, written bytes)
        self._net: dict[str, tuple[int, int]] = {}  # interface -> (received, sent)
        self._warned: set[str] = set()
        self._now = 0.0
        self._no_sensors_until: float | None = None

    def sample(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        elapsed = None if self._last_now is None else now - self._last_now
        if elapsed is not None and elapsed <= 0:
            elapsed = None  # a clock step back: no rates this time, fresh counters
        self._last_now = self._now = now
        parts: Iterable[tuple[str, Callable[[list[Sample], float | None], None]]] = (
            ("cpu", self._sample_cpu),
            ("load", self._sample_load),
            ("memory", self._sample_memory),
            ("disks", self._sample_disks),
            ("network", self._sample_network),
            ("connections", self._sample_connections),
            ("temperature", self._sample_temperatures),
        )
        for part, function in parts:
            try:
                function(out, elapsed)
            except Exception as error:  # a host without the metric: leave it out
                if part not in self._warned:
                    self._warned.add(part)
                    log.info("node metrics: no %s on this host (%s)", part, error)
        return out

    def _add(self, out: list[Sample], name: str, value: float, **labels: str) -> None:
        out.append(Sample(name, labels_of({**self._base, **labels}), float(value)))

    def _sample_cpu(self, out: list[Sample], elapsed: float | None) -> None:
        current = [_cpu_busy_total(times) for times in psutil.cpu_times(percpu=True)]
        previous, self._cpu = self._cpu, current
        if elapsed is None or previous is None:
            return
        busy_sum = total_sum = 0.0
        for cpu, ((busy, total), (busy_0, total_0)) in enumerate(
            zip(current, previous, strict=False)
        ):
            d_total = total - total_0
            if d_total <= 0:
                continue
            # The kernel's per-CPU counters can step back a little (iowait notably, and on
            # virtual machines): clamp rather than drop the core from the chart.
            d_busy = min(max(busy - busy_0, 0.0), d_total)
            busy_sum += d_busy
            total_sum += d_total
            self._add(out, "node_cpu_percent", _percent(d_busy, d_total), cpu=str(cpu))
        if total_sum > 0:
            self._add(out, "node_cpu_percent", _percent(busy_sum, total_sum))

    def _sample_load(self, out: list[Sample], _elapsed: float | None) -> None:
        load1, load5, load15 = psutil.getloadavg()
        self._add(out, "node_load1", load1)
        self._add(out, "node_load5", load5)
        self._add(out, "node_load15", load15)

    def _sample_memory(self, out: list[Sample], _elapsed: float | None) -> None:
        memory = psutil.virtual_memory()
        used = memory.total - memory.available
        self._add(out, "node_memory_total_bytes", memory.total)
        self._add(out, "node_memory_used_bytes", used)
        self._add(out, "node_memory_percent", _percent(used, memory.total))
        swap = psutil.swap_memory()
        if swap.total > 0:  # no swap configured: leave swap out
            self._add(out, "node_swap_total_bytes", swap.total)
            self._add(out, "node_swap_used_bytes", swap.used)

    def mounts(self) -> dict[str, str | None]:
        """mount label -> block device name ("vda", None when it has none): the real mounts,
        one per device (the shortest mount point of a device mounted several times, as bind
        mounts do), and the data directory's filesystem as "data"."""
        by_device: dict[str, str] = {}
        for partition in psutil.disk_partitions(all=False):
            mountpoint = partition.mountpoint
            if partition.fstype in PSEUDO_FSTYPES or partition.device.startswith("/dev/loop"):
                continue
            if mountpoint.startswith(PSEUDO_MOUNT_PREFIXES):
                continue
            known = by_device.get(partition.device)
            if known is None or (len(mountpoint), mountpoint) < (len(known), known):
                by_device[partition.device] = mountpoint
        mounts = {
            mountpoint: _block_device_name(device, mountpoint)
            for device, mountpoint in by_device.items()
        }
        data = str(_existing(self.data_dir))
        mounts["data"] = _block_device_name("", data)
        return dict(sorted(mounts.items()))

    def _sample_disks(self, out: list[Sample], elapsed: float | None) -> None:
        mounts = self.mounts()
        data_path = str(_existing(self.data_dir))
        for mount in mounts:
            try:
                usage = psutil.disk_usage(data_path if mount == "data" else mount)
            except OSError:  # unmounted meanwhile, or not ours to read
                continue
            self._add(out, "node_disk_total_bytes", usage.total, mount=mount)
            self._add(out, "node_disk_used_bytes", usage.used, mount=mount)
            self._add(out, "node_disk_percent", usage.percent, mount=mount)
        counters = psutil.disk_io_counters(perdisk=True) or {}
        previous = self._disk
        self._disk = {
            name: (counter.read_bytes, counter.write_bytes) for name, counter in counters.items()
        }
        if elapsed is None:
            return
        for mount, device in mounts.items():
            if device is None or device not in self._disk or device not in previous:
                continue
            (read, written), (read_0, written_0) = self._disk[device], previous[device]
            if read < read_0 or written < written_0:  # the counters were reset
                continue
            self._add(
                out, "node_disk_read_bytes_per_second", (read - read_0) / elapsed, mount=mount
            )
            self._add(
                out,
                "node_disk_write_bytes_per_second",
                (written - written_0) / elapsed,
                mount=mount,
            )

    def _sample_network(self, out: list[Sample], elapsed: float | None) -> None:
        counters = psutil.net_io_counters(pernic=True)
        previous = self._net
        self._net = {
            name: (counter.bytes_recv, counter.bytes_sent)
            for name, counter in counters.items()
            if name != "lo"
        }
        if elapsed is None:
            return
        for interface, (received, sent) in sorted(self._net.items()):
            if interface not in previous:
                continue
            received_0, sent_0 = previous[interface]
            if received < received_0 or sent < sent_0:  # interface recreated, counters reset
                continue
            self._add(
                out,
                "node_network_receive_bytes_per_second",
                (received - received_0) / elapsed,
                interface=interface,
            )
            self._add(
                out,
                "node_network_transmit_bytes_per_second",
                (sent - sent_0) / elapsed,
                interface=interface,
            )

    def _sample_connections(self, out: list[Sample], _elapsed: float | None) -> None:
        for proto, count in sorted(connection_counts().items()):
            self._add(out, "node_connections", count, proto=proto)

    def _sample_temperatures(self, out: list[Sample], _elapsed: float | None) -> None:
        if not hasattr(psutil, "sensors_temperatures"):
            return
        if self._no_sensors_until is not None and self._now < self._no_sensors_until:
            return  # found none a moment ago: reading every hwmon file again costs for nothing
        self._no_sensors_until = self._now + SENSOR_RETRY_SECONDS
        seen: dict[str, int] = {}
        for chip, readings in sorted(psutil.sensors_temperatures().items()):
            if chip not in CPU_SENSOR_CHIPS:
                continue
            for number, reading in enumerate(readings):
                sensor = f"{chip}/{reading.label or number}"
                seen[sensor] = seen.get(sensor, 0) + 1
                if seen[sensor] > 1:  # two sockets: "coretemp/Core 0" twice
                    sensor = f"{sensor} ({seen[sensor]})"
                self._add(out, "node_cpu_temperature_celsius", reading.current, sensor=sensor)
        if seen:
            self._no_sensors_until = None


def _percent(part: float, whole: float) -> float:
    return min(100.0, max(0.0, 100.0 * part / whole)) if whole > 0 else 0.0

"""Node metrics on this very machine: psutil and /proc as they are here, no stand-ins (except
where a test needs a host that lacks something)."""

import os
import shutil
import socket
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from suanli.monitoring import node as node_module
from suanli.monitoring.model import METRICS, Sample
from suanli.monitoring.node import NodeSampler, connection_counts

# psutil's result shapes (the fields the sampler reads), for hosts this machine is not.
Netio = namedtuple("Netio", "bytes_sent bytes_recv packets_sent packets_recv")
Swap = namedtuple("Swap", "total used free percent sin sout")
Temperature = namedtuple("Temperature", "label current high critical")
Partition = namedtuple("Partition", "device mountpoint fstype opts")

RATES = {
    "node_cpu_percent",
    "node_disk_read_bytes_per_second",
    "node_disk_write_bytes_per_second",
    "node_network_receive_bytes_per_second",
    "node_network_transmit_bytes_per_second",
}


def by_name(samples: list[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.name, []).append(sample)
    return grouped


def one(samples: list[Sample], name: str, **labels: str) -> float:
    found = [
        s.value
        for s in samples
        if s.name == name and all(s.label(k) == v for k, v in labels.items())
        and len(s.labels) == len(labels) + 1  # node
    ]  # fmt: skip
    assert len(found) == 1, (name, labels, found)
    return found[0]


def busy_for(seconds: float) -> None:
    import time

    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_two_samples_of_this_machine(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # does not exist yet: its filesystem is that of tmp_path
    sampler = NodeSampler("node-a", data_dir)
    first = sampler.sample(100.0)
    assert {s.name for s in first} & RATES == set()  # no rates from the first call
    target = tmp_path / "written"
    with open(target, "wb") as file:  # something for the disk write counter to see
        file.write(os.urandom(4 * 2**20))
        file.flush()
        os.fsync(file.fileno())
    busy_for(0.3)
    second = sampler.sample(101.0)

    for samples in (first, second):
        assert {s.name for s in samples} <= set(METRICS)
        assert all(s.label("node") == "node-a" for s in samples)
        assert len({(s.name, s.labels) for s in samples}) == len(samples)  # no duplicate series

    got = by_name(second)
    cpus = psutil.cpu_count()
    per_core = [s for s in got["node_cpu_percent"] if s.label("cpu")]
    assert sorted(int(s.label("cpu")) for s in per_core) == list(range(cpus))
    assert all(0 <= s.value <= 100 for s in got["node_cpu_percent"])
    assert one(second, "node_cpu_percent") > 0  # this process just spun for 0.3 s

    assert one(second, "node_load1") == pytest.approx(os.getloadavg()[0], abs=2)
    assert one(second, "node_load15") >= 0
    total = one(second, "node_memory_total_bytes")
    assert total == psutil.virtual_memory().total
    assert 0 < one(second, "node_memory_used_bytes") < total
    assert 0 < one(second, "node_memory_percent") < 100
    if psutil.swap_memory().total:
        assert 0 <= one(second, "node_swap_used_bytes") <= one(second, "node_swap_total_bytes")
    else:
        assert "node_swap_total_bytes" not in got

    disk = shutil.disk_usage(tmp_path)
    assert one(second, "node_disk_total_bytes", mount="data") == disk.total
    assert 0 < one(second, "node_disk_percent", mount="data") < 100
    assert one(second, "node_disk_total_bytes", mount="/") == shutil.disk_usage("/").total
    mounts = {s.label("mount") for s in got["node_disk_total_bytes"]}
    assert not any(m.startswith("/snap/") or m.startswith("/proc") for m in mounts)
    # our 4 MiB reached the data directory's device (this machine has one under the data dir)
    if sampler.mounts()["data"] is not None:
        assert one(second, "node_disk_write_bytes_per_second", mount="data") >= 4 * 2**20
        assert one(second, "node_disk_read_bytes_per_second", mount="data") >= 0

    interfaces = {s.label("interface") for s in got["node_network_receive_bytes_per_second"]}
    assert "lo" not in interfaces
    assert interfaces == set(psutil.net_io_counters(pernic=True)) - {"lo"}
    assert all(s.value >= 0 for s in got["node_network_transmit_bytes_per_second"])

    assert {s.label("proto") for s in got["node_connections"]} == {"tcp", "udp"}


def test_rates_divide_by_the_time_between_calls(tmp_path: Path, monkeypatch) -> None:
    """Counters that advance by known amounts: the rate is their difference over `now`'s."""
    counters = {"eth0": [1000, 5000], "lo": [1, 1]}

    def net_io_counters(pernic: bool):
        return {name: Netio(sent, recv, 0, 0) for name, (recv, sent) in counters.items()}

    monkeypatch.setattr(node_module.psutil, "net_io_counters", net_io_counters)
    sampler = NodeSampler("n", tmp_path)
    sampler.sample(10.0)
    counters["eth0"] = [1000 + 4000, 5000 + 1000]
    second = sampler.sample(12.0)  # 2 s later
    assert one(second, "node_network_receive_bytes_per_second", interface="eth0") == 2000
    assert one(second, "node_network_transmit_bytes_per_second", interface="eth0") == 500
    counters["eth0"] = [10, 10]  # the interface came back: counters from zero, no rate
    third = sampler.sample(14.0)
    assert not [s for s in third if s.name.startswith("node_network")]
    assert sampler.sample(14.0)  # the same `now` again: no rates, but no error either


def test_connection_counts_match_the_kernel_tables() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        counts = connection_counts()

        def lines(*names: str) -> int:
            total = 0
            for name in names:
                path = Path("/proc/net") / name
                if path.exists():
                    total += len(path.read_text().splitlines()) - 1
            return total

        # the tables move under other processes' feet: compare with slack
        assert counts["tcp"] >= 3
        assert abs(counts["tcp"] - lines("tcp", "tcp6")) <= 20
        assert counts["udp"] >= 1
        assert abs(counts["udp"] - lines("udp", "udp6")) <= 5
    finally:
        for sock in (client, server, listener, udp):
            sock.close()


def test_connection_counts_without_sockstat_count_the_lines(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    header = "  sl  local_address rem_address   st ...\n"
    (net / "tcp").write_text(header + "0: a\n1: b\n2: c\n")
    (net / "tcp6").write_text(header + "0: d\n")
    (net / "udp").write_text(header)
    assert connection_counts(tmp_path) == {"tcp": 4, "udp": 0}  # no udp6: counted without
    (net / "sockstat").write_text("TCP: inuse 5 orphan 0 tw 7 alloc 6 mem 1\nUDP: inuse 2 mem 0\n")
    (net / "sockstat6").write_text("TCP6: inuse 3\nUDP6: inuse 1\n")
    assert connection_counts(tmp_path) == {"tcp": 15, "udp": 3}


def test_a_host_without_a_metric_leaves_it_out(tmp_path: Path, monkeypatch) -> None:
    def missing(*_args, **_kwargs):
        raise OSError("no such file: /proc/loadavg")

    monkeypatch.setattr(node_module.psutil, "getloadavg", missing)
    no_swap = Swap(0, 0, 0, 0, 0, 0)
    monkeypatch.setattr(node_module.psutil, "swap_memory", lambda: no_swap)
    monkeypatch.setattr(node_module.psutil, "sensors_temperatures", lambda: {})
    samples = NodeSampler("n", tmp_path).sample(1.0)
    names = {s.name for s in samples}
    assert not names & {"node_load1", "node_load5", "node_load15"}
    assert not names & {"node_swap_total_bytes", "node_swap_used_bytes"}
    assert "node_cpu_temperature_celsius" not in names
    assert {"node_memory_total_bytes", "node_disk_total_bytes"} <= names  # the rest is there


def test_cpu_temperatures_per_sensor(tmp_path: Path, monkeypatch) -> None:
    shwtemp = Temperature
    readings = {
        "coretemp": [
            shwtemp("Package id 0", 51.0, 100.0, 100.0),
            shwtemp("Core 0", 48.0, 100.0, 100.0),
            shwtemp("Package id 1", 55.0, 100.0, 100.0),
            shwtemp("Core 0", 53.0, 100.0, 100.0),  # the second socket's core 0
        ],
        "k10temp": [shwtemp("", 61.5, None, None)],
        "nvme": [shwtemp("Composite", 40.0, 80.0, 85.0)],  # not a CPU
    }
    calls = []

    def sensors():
        calls.append(1)
        return readings

    monkeypatch.setattr(node_module.psutil, "sensors_temperatures", sensors, raising=False)
    samples = NodeSampler("n", tmp_path).sample(1.0)
    temperatures = {
        s.label("sensor"): s.value for s in samples if s.name == "node_cpu_temperature_celsius"
    }
    assert temperatures == {
        "coretemp/Package id 0": 51.0,
        "coretemp/Core 0": 48.0,
        "coretemp/Package id 1": 55.0,
        "coretemp/Core 0 (2)": 53.0,
        "k10temp/0": 61.5,
    }

    # a host without CPU sensors is asked again only every SENSOR_RETRY_SECONDS
    readings.clear()
    sampler = NodeSampler("n", tmp_path)
    calls.clear()
    sampler.sample(1.0)
    sampler.sample(2.0)
    assert len(calls) == 1
    sampler.sample(2.0 + node_module.SENSOR_RETRY_SECONDS)
    assert len(calls) == 2


def test_mounts_skip_pseudo_filesystems_and_bind_mount_duplicates(
    tmp_path: Path, monkeypatch
) -> None:
    part = Partition
    partitions = [
        part("/dev/vda1", "/", "ext4", "rw"),
        part("/dev/vda1", "/etc/hosts", "ext4", "rw"),  # a container's bind mount
        part("/dev/vda1", "/var/lib/docker/overlay2", "ext4", "rw"),
        part("/dev/loop3", "/snap/core/1234", "squashfs", "ro"),
        part("overlay", "/merged", "overlay", "rw"),
        part("/dev/nvme0n1p1", "/boot/efi", "vfat", "rw"),
        part("/dev/sdb1", "/srv/scratch", "xfs", "rw"),
    ]
    monkeypatch.setattr(node_module.psutil, "disk_partitions", lambda all=False: partitions)
    mounts = NodeSampler("n", tmp_path).mounts()
    assert set(mounts) == {"/", "/boot/efi", "/srv/scratch", "data"}


def test_a_cpu_counter_that_steps_back_still_reports_the_core(monkeypatch, tmp_path) -> None:
    """Per-CPU counters can go back a little (iowait, VMs): the core reads 0 %, it is not
    dropped from the chart."""
    times = namedtuple("scputimes", "user system idle iowait")
    calls = iter(
        [
            [times(100.0, 50.0, 1000.0, 5.0), times(10.0, 5.0, 1000.0, 0.0)],
            [times(99.5, 50.0, 1100.0, 5.0), times(60.0, 5.0, 1050.0, 0.0)],
        ]
    )
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=False: next(calls))
    sampler = NodeSampler("node-a", tmp_path)
    sampler._sample_cpu([], None)
    out: list = []
    sampler._sample_cpu(out, 1.0)
    per_core = {s.label("cpu"): s.value for s in out if s.label("cpu")}
    assert per_core == {"0": 0.0, "1": 50.0}

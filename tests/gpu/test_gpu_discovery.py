"""Discovery: CPUs, memory and disk of this host; GPUs through an NVML test double that mimics
an 8-GPU server (NVLink, PCIe switches, two sockets, MIG); simulated GPUs without a driver."""

import logging
import re
import sys
import types
from pathlib import Path

import pytest
from fakenvml import FakeGpu, FakeMig, FakeNvml

from suanli.config import Settings
from suanli.gpu import discovery, nvml
from suanli.gpu.discovery import discover, is_simulated_uuid, topology_groups
from suanli.gpu.model import MigInstance
from suanli.gpu.nvml import (
    TOPOLOGY_HOSTBRIDGE,
    TOPOLOGY_MULTIPLE,
    TOPOLOGY_NODE,
    TOPOLOGY_SINGLE,
    TOPOLOGY_SYSTEM,
    NvmlError,
    PynvmlAdapter,
    load_nvml,
    mig_profile_from,
    normalise_bus_id,
)

GiB = 2**30


def server() -> FakeNvml:
    """GPUs 0-3: one NVLink domain on socket 0. GPUs 4-5: one PCIe switch on socket 1.
    GPU 6: MIG mode with two instances, socket 1, NUMA only in sysfs. GPU 7: alone."""
    gpus = [
        FakeGpu(f"GPU-{i:08x}", bus_id=f"00000000:{0x17 + i:02X}:00.0", numa=0) for i in range(4)
    ]
    gpus += [
        FakeGpu("GPU-0000000a", name="NVIDIA L40S", memory_bytes=48 * GiB,
                bus_id="00000000:8A:00.0", numa=1),
        FakeGpu("GPU-0000000b", name="NVIDIA L40S", memory_bytes=48 * GiB,
                bus_id="00000000:8B:00.0", numa=1),
        FakeGpu(
            "GPU-0000000c",
            bus_id="00000000:AC:00.0",
            numa=None,
            mig_enabled=True,
            migs=[
                FakeMig("MIG-c-2", "3g.40gb", 40 * GiB),
                FakeMig("MIG-c-1", "1g.10gb", 10 * GiB),
            ],
        ),
        FakeGpu("GPU-0000000d", bus_id="00000000:CD:00.0", numa=1),
    ]  # fmt: skip
    nvlinks = {(a, b) for a in range(4) for b in range(a + 1, 4)}
    ancestors = {(4, 5): TOPOLOGY_SINGLE, (5, 6): TOPOLOGY_NODE, (4, 6): TOPOLOGY_HOSTBRIDGE}
    for a in range(4):
        ancestors[(a, (a + 1) % 4)] = TOPOLOGY_NODE  # hidden behind NVLink anyway
    ancestors[(6, 7)] = TOPOLOGY_NODE
    ancestors[(4, 7)] = ancestors[(5, 7)] = TOPOLOGY_NODE
    return FakeNvml(gpus, nvlinks=nvlinks, ancestors=ancestors)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    device = root / "bus" / "pci" / "devices" / "0000:ac:00.0"
    device.mkdir(parents=True)
    (device / "numa_node").write_text("1\n")
    return root


def test_host_facts_come_from_this_machine(settings: Settings, monkeypatch) -> None:
    monkeypatch.setattr(discovery, "load_nvml", lambda: None)
    host = discover(settings, hostname="box")
    assert host.name == "box"
    assert host.cpus >= 1
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    assert host.memory_bytes == int(meminfo[1]) * 1024
    assert 0 < host.disk_free_bytes <= host.disk_total_bytes  # of a data dir not yet created
    assert host.gpus == () and host.driver == "" and host.links == {}


def test_gpus_mig_numa_and_topology_from_nvml(settings: Settings, sysfs: Path) -> None:
    fake = server()
    host = discover(settings, nvml=fake, sysfs=sysfs, hostname="box")
    assert not fake.shut_down  # the caller's NVML stays open
    assert host.driver == "550.54.15"
    assert [g.index for g in host.gpus] == list(range(8))
    first = host.gpus[0]
    assert (first.uuid, first.model, first.memory_bytes) == (
        "GPU-00000000",
        "NVIDIA A100-SXM4-80GB",
        80 * GiB,
    )
    assert first.pci_bus_id == "0000:17:00.0"  # sysfs spelling
    assert not first.simulated and not first.mig_enabled and first.mig_instances == ()
    assert host.gpus[4].model == "NVIDIA L40S" and host.gpus[4].memory_bytes == 48 * GiB

    mig = host.gpus[6]
    assert mig.mig_enabled
    assert mig.mig_instances == (
        MigInstance("MIG-c-1", "1g.10gb", 10 * GiB),
        MigInstance("MIG-c-2", "3g.40gb", 40 * GiB),
    )
    assert mig.numa_node == 1  # NVML did not say; sysfs did
    assert [g.numa_node for g in host.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]

    assert host.links[(0, 1)] == "nvlink" and host.links[(2, 3)] == "nvlink"
    assert host.links[(4, 5)] == "pcie-switch"
    assert host.links[(5, 6)] == "same-socket" and host.links[(4, 6)] == "same-socket"
    assert host.links[(0, 4)] == "cross-socket"  # default ancestor: across sockets
    assert len(host.links) == 8 * 7 // 2
    assert all(a < b for a, b in host.links)

    groups = [g.group for g in host.gpus]
    assert groups == ["nvlink-0"] * 4 + ["pcie-0"] * 2 + ["gpu-6", "gpu-7"]


def test_pcie_levels_map_to_links(settings: Settings) -> None:
    gpus = [FakeGpu(f"GPU-{i}", bus_id=f"0000:{i + 1:02x}:00.0") for i in range(5)]
    fake = FakeNvml(
        gpus,
        ancestors={
            (0, 1): TOPOLOGY_MULTIPLE,
            (1, 2): TOPOLOGY_HOSTBRIDGE,
            (2, 3): TOPOLOGY_NODE,
            (3, 4): TOPOLOGY_SYSTEM,
        },
    )
    host = discover(settings, nvml=fake)
    links = host.links
    assert links[(0, 1)] == "pcie-switch"
    assert links[(1, 2)] == "same-socket" and links[(2, 3)] == "same-socket"
    assert links[(3, 4)] == "cross-socket"
    assert [g.group for g in host.gpus] == ["pcie-0", "pcie-0", "gpu-2", "gpu-3", "gpu-4"]


def test_topology_groups_join_transitively_and_name_stably() -> None:
    links = {(0, 1): "pcie-switch", (1, 2): "nvlink", (3, 4): "pcie-switch", (2, 3): "same-socket"}
    assert topology_groups([4, 3, 2, 1, 0], links) == {
        0: "nvlink-0",
        1: "nvlink-0",
        2: "nvlink-0",
        3: "pcie-0",
        4: "pcie-0",
    }


def test_a_broken_gpu_is_left_out_and_said(settings: Settings, caplog) -> None:
    fake = FakeNvml([FakeGpu("GPU-a"), FakeGpu("GPU-b", broken=True), FakeGpu("GPU-c")])
    with caplog.at_level(logging.WARNING):
        host = discover(settings, nvml=fake)
    assert [g.uuid for g in host.gpus] == ["GPU-a", "GPU-c"]
    assert [g.index for g in host.gpus] == [0, 2]  # NVML's indexes, not renumbered
    assert "GPU 1 is left out" in caplog.text


def test_simulated_gpus_without_driver(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(discovery, "load_nvml", lambda: None)
    settings = Settings(
        data_dir=tmp_path,
        simulated_gpus=[
            {"count": 6, "model": "Simulated A100", "memory_bytes": 80 * GiB},
            {"count": 2, "model": "Simulated L4", "memory_bytes": 24 * GiB},
        ],
    )
    host = discover(settings, hostname="box")
    assert [g.uuid for g in host.gpus] == [f"GPU-sim-box-{i}" for i in range(8)]
    assert all(g.simulated and is_simulated_uuid(g.uuid) for g in host.gpus)
    assert [g.model for g in host.gpus] == ["Simulated A100"] * 6 + ["Simulated L4"] * 2
    assert host.gpus[7].memory_bytes == 24 * GiB
    # groups of four, never mixing two declarations; first half of the groups on socket 0
    assert [g.group for g in host.gpus] == ["sim-0"] * 4 + ["sim-1"] * 2 + ["sim-2"] * 2
    assert [g.numa_node for g in host.gpus] == [0] * 4 + [0] * 2 + [1] * 2
    assert host.links[(0, 3)] == "pcie-switch"
    assert host.links[(0, 4)] == "same-socket"
    assert host.links[(0, 6)] == "cross-socket"
    assert host.driver == ""
    # deterministic: the same machine gets the same devices
    assert discover(settings, hostname="box").gpus == host.gpus


def test_real_gpus_win_over_simulated_ones(tmp_path: Path, caplog) -> None:
    settings = Settings(data_dir=tmp_path, simulated_gpus=[{"count": 4}])
    with caplog.at_level(logging.WARNING):
        host = discover(settings, nvml=FakeNvml([FakeGpu("GPU-real")]))
    assert [g.uuid for g in host.gpus] == ["GPU-real"]
    assert not host.gpus[0].simulated
    assert "4 simulated GPUs (Simulated GPU) declared but ignored" in caplog.text


def test_driver_without_gpus_uses_simulated_ones(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, simulated_gpus=[{"count": 2}])
    host = discover(settings, nvml=FakeNvml([]), hostname="h")
    assert [g.uuid for g in host.gpus] == ["GPU-sim-h-0", "GPU-sim-h-1"]
    assert host.driver == "550.54.15"  # the driver is real; the GPUs are simulated


def test_no_driver_means_no_gpus(settings: Settings, monkeypatch) -> None:
    monkeypatch.setattr(discovery, "load_nvml", lambda: None)
    assert discover(settings).gpus == ()


def test_discover_shuts_down_the_nvml_it_loaded(settings: Settings, monkeypatch) -> None:
    fake = FakeNvml([FakeGpu("GPU-x")])
    monkeypatch.setattr(discovery, "load_nvml", lambda: fake)
    assert [g.uuid for g in discover(settings).gpus] == ["GPU-x"]
    assert fake.shut_down


# -- loading NVML -------------------------------------------------------------------------


def test_load_nvml_without_the_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert load_nvml() is None


def _fake_pynvml(**functions) -> types.ModuleType:
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    module.NVMLError = NVMLError
    module.NVML_DEVICE_MIG_ENABLE = 1
    module.NVML_P2P_CAPS_INDEX_NVLINK = 2
    module.NVML_P2P_STATUS_OK = 0
    module.NVML_NVLINK_MAX_LINKS = 4
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def test_load_nvml_when_init_fails(monkeypatch) -> None:
    module = _fake_pynvml()

    def init() -> None:
        raise module.NVMLError("Driver Not Loaded")

    module.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert load_nvml() is None


def test_load_nvml_on_this_machine() -> None:
    """Real pynvml here: this machine has no NVIDIA driver, so no NVML (on a GPU machine the
    same call must succeed)."""
    has_driver = Path("/dev/nvidiactl").exists()
    loaded = load_nvml()
    try:
        assert (loaded is not None) == has_driver
    finally:
        if loaded is not None:
            loaded.shutdown()


def test_pynvml_adapter_translates_calls_and_errors() -> None:
    class Pci:
        busId = b"00000000:3B:00.0"

    class Memory:
        total = 80 * GiB

    class Attributes:
        gpuInstanceSliceCount = 1
        memorySizeMB = 9728

    class Process:
        def __init__(self, pid, used):
            self.pid, self.usedGpuMemory = pid, used

    module = _fake_pynvml()

    def not_supported(*_args):
        raise module.NVMLError("Not Supported")

    def remote(handle, link):
        class Remote:
            busId = "00000000:3C:00.0" if link == 2 else "00000000:99:00.0"

        return Remote()

    functions = {
        "nvmlSystemGetDriverVersion": lambda: b"550.54.15",
        "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": lambda i: f"h{i}",
        "nvmlDeviceGetUUID": lambda h: f"GPU-{h}",
        "nvmlDeviceGetName": lambda h: "NVIDIA A100-SXM4-80GB",
        "nvmlDeviceGetMemoryInfo": lambda h: Memory(),
        "nvmlDeviceGetPciInfo": lambda h: Pci(),
        "nvmlDeviceGetNumaNodeId": not_supported,
        "nvmlDeviceGetMigMode": lambda h: (1, 1) if h == "h0" else not_supported(),
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 3,
        "nvmlDeviceGetMigDeviceHandleByIndex": lambda h, i: (
            f"{h}m{i}" if i != 1 else not_supported()
        ),
        "nvmlDeviceGetAttributes": lambda h: Attributes(),
        "nvmlDeviceGetTopologyCommonAncestor": lambda a, b: 10,
        "nvmlDeviceGetP2PStatus": not_supported,
        "nvmlDeviceGetNvLinkState": lambda h, link: 1,
        "nvmlDeviceGetNvLinkRemotePciInfo": remote,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [Process(10, 100), Process(11, None)],
        "nvmlDeviceGetMPSComputeRunningProcesses": lambda h: [Process(10, 300), Process(12, 5)],
        "nvmlShutdown": lambda: None,
    }
    for name, function in functions.items():
        setattr(module, name, function)
    adapter = PynvmlAdapter(module)
    assert adapter.driver_version() == "550.54.15"
    assert adapter.device_count() == 2
    handle = adapter.device_handle(0)
    assert adapter.uuid(handle) == "GPU-h0"
    assert adapter.pci_bus_id(handle) == "00000000:3B:00.0"
    assert adapter.numa_node(handle) is None
    assert adapter.mig_enabled("h0") and not adapter.mig_enabled("h1")
    assert adapter.mig_handles("h0") == ["h0m0", "h0m2"]  # slot 1 is empty
    assert adapter.mig_profile("h0m0") == "1g.10gb"  # from the attributes: the name lacks it
    assert adapter.common_ancestor("h0", "h1") == TOPOLOGY_SINGLE
    # P2P status unsupported: falls back to the NVLink remote ends (link 2 reaches 3C)
    module.nvmlDeviceGetPciInfo = lambda h: type("P", (), {"busId": "00000000:3C:00.0"})()
    assert adapter.nvlink_connected("h0", "h1")
    assert adapter.running_processes("h0") == [(10, 300), (12, 5)]
    with pytest.raises(NvmlError, match="nvmlDeviceGetMigDeviceHandleByIndex"):
        adapter._call("nvmlDeviceGetMigDeviceHandleByIndex", "h0", 1)
    adapter.shutdown()


def test_the_adapter_only_calls_what_pynvml_has() -> None:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is a dependency of suanli")
    source = Path(nvml.__file__).read_text()
    called = set(re.findall(r'"(nvml[A-Za-z_0-9]+)"', source))
    assert "nvmlDeviceGetTopologyCommonAncestor" in called
    assert {name for name in called if not hasattr(pynvml, name)} == set()
    for constant in ("NVML_DEVICE_MIG_ENABLE", "NVML_P2P_CAPS_INDEX_NVLINK", "NVML_P2P_STATUS_OK"):
        assert hasattr(pynvml, constant)


def test_mig_profiles_and_bus_ids() -> None:
    assert mig_profile_from("NVIDIA A100-SXM4-80GB MIG 3g.40gb") == "3g.40gb"
    assert mig_profile_from("NVIDIA H100 80GB HBM3 MIG 1g.10gb+me") == "1g.10gb+me"
    assert mig_profile_from("NVIDIA A100-PCIE-40GB", 1, 4864) == "1g.5gb"
    assert mig_profile_from("NVIDIA H100", 2, 19968) == "2g.20gb"
    assert mig_profile_from("x") == "unknown"
    assert normalise_bus_id("00000000:3B:00.0") == "0000:3b:00.0"
    assert normalise_bus_id("0000:3b:00.0") == "0000:3b:00.0"
    assert normalise_bus_id("3B:00.0") == "0000:3b:00.0"

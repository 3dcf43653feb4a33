"""GPU telemetry: the NVML calls behind `Nvml` (through a stand-in pynvml module, since this
machine has no driver), the FakeNvml test double, and `GpuSampler` over both real (FakeNvml)
and simulated GPUs."""

import json
import logging
import os
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
from fakenvml import FakeGpu, FakeMig, FakeNvml

from suanli.gpu.model import Gpu, MigInstance
from suanli.gpu.nvml import NvmlError, PynvmlAdapter, RemappedRows
from suanli.monitoring.gpu import OVERRIDES_FILE, GpuSampler, job_of
from suanli.monitoring.model import METRICS, Sample

GiB = 2**30
MiB = 2**20

# The pynvml constants the adapter's telemetry passes; the real module must have them all.
CONSTANTS = {
    "NVML_TEMPERATURE_GPU": 0,
    "NVML_CLOCK_SM": 1,
    "NVML_CLOCK_MEM": 2,
    "NVML_MEMORY_ERROR_TYPE_CORRECTED": 0,
    "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1,
    "NVML_VOLATILE_ECC": 0,
    "NVML_AGGREGATE_ECC": 1,
    "NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS": 0,
    "NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR": 1,
    "NVML_PCIE_UTIL_TX_BYTES": 0,
    "NVML_PCIE_UTIL_RX_BYTES": 1,
}


def test_the_real_pynvml_has_the_constants_and_values_the_adapter_assumes() -> None:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is a dependency of suanli")
    assert {name: getattr(pynvml, name, None) for name in CONSTANTS} == CONSTANTS


def _stand_in_pynvml(**functions) -> types.ModuleType:
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    module.NVMLError = NVMLError
    for name, value in CONSTANTS.items():
        setattr(module, name, value)
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def test_the_adapter_converts_units_and_maps_errors() -> None:
    module = _stand_in_pynvml()

    def fail(message: str):
        def raiser(*_args):
            raise module.NVMLError(message)

        return raiser

    ecc = {(0, 0): 3, (1, 0): 1, (0, 1): 30, (1, 1): 2}
    retired = {0: [0x1000, 0x2000], 1: [0x3000]}
    functions = {
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(gpu=87, memory=41),
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(
            total=80 * GiB, used=(5 * GiB if h == "h0" else 7 * GiB), free=0
        ),
        "nvmlDeviceGetTemperature": lambda h, sensor: 61 if sensor == 0 else -1,
        "nvmlDeviceGetPowerUsage": lambda h: 312_456,  # mW
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 400_000,
        "nvmlDeviceGetClockInfo": lambda h, clock: {1: 1410, 2: 1593}[clock],
        "nvmlDeviceGetFanSpeed": fail("Not Supported"),
        "nvmlDeviceGetTotalEccErrors": lambda h, kind, counter: ecc[(kind, counter)],
        "nvmlDeviceGetRetiredPages": lambda h, cause: retired[cause],
        "nvmlDeviceGetRemappedRows": lambda h: (2, 1, 1, 0),
        "nvmlDeviceGetCurrentClocksEventReasons": fail("Function Not Found"),
        "nvmlDeviceGetCurrentClocksThrottleReasons": lambda h: 0x4 | 0x20,
        "nvmlDeviceGetPcieThroughput": lambda h, counter: (1000, 250_000)[counter],  # KB/s
    }
    for name, function in functions.items():
        setattr(module, name, function)
    adapter = PynvmlAdapter(module)
    assert adapter.utilization("h0") == (87, 41)
    assert adapter.memory_used("h0") == 5 * GiB
    assert adapter.memory_used("h0-mig") == 7 * GiB  # a MIG device's handle works alike
    assert adapter.temperature("h0") == 61
    assert adapter.power_usage_watts("h0") == pytest.approx(312.456)
    assert adapter.power_limit_watts("h0") == 400.0
    assert adapter.clocks("h0") == (1410, 1593)
    with pytest.raises(NvmlError, match="nvmlDeviceGetFanSpeed: Not Supported"):
        adapter.fan_percent("h0")
    assert adapter.ecc_errors("h0", "corrected", "volatile") == 3
    assert adapter.ecc_errors("h0", "uncorrected", "volatile") == 1
    assert adapter.ecc_errors("h0", "corrected", "aggregate") == 30
    assert adapter.ecc_errors("h0", "uncorrected", "aggregate") == 2
    assert adapter.retired_pages("h0", "sbe") == 2
    assert adapter.retired_pages("h0", "dbe") == 1
    assert adapter.remapped_rows("h0") == RemappedRows(2, 1, 1, 0)
    # an older driver: the new "clocks event" name fails, the old "throttle" name answers
    assert adapter.throttle_reasons("h0") == 0x24
    module.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x1
    assert adapter.throttle_reasons("h0") == 0x1
    assert adapter.pcie_throughput("h0") == (1000 * 1024, 250_000 * 1024)
    module.nvmlDeviceGetTemperature = fail("GPU is lost")
    with pytest.raises(NvmlError, match="GPU is lost"):
        adapter.temperature("h0")


def test_fake_nvml_telemetry_defaults_settings_unsupported_and_lost() -> None:
    nvml = FakeNvml(
        [
            FakeGpu("GPU-a", processes={100: 2 * GiB}),
            FakeGpu(
                "GPU-b",
                temperature=88,
                unsupported={"fan_percent", "retired_pages"},
                ecc_errors={("uncorrected", "volatile"): 2},
                mig_enabled=True,
                migs=[FakeMig("MIG-b-0", "3g.40gb", 40 * GiB, memory_used_bytes=GiB)],
            ),
        ]
    )
    a, b = nvml.device_handle(0), nvml.device_handle(1)
    # an idle A100: 35 °C, 60 W of 400 W, idle clocks, no ECC error, memory of its processes
    assert (nvml.temperature(a), nvml.power_usage_watts(a), nvml.power_limit_watts(a)) == (
        35,
        60.0,
        400.0,
    )
    assert nvml.memory_used(a) == 4 * MiB + 2 * GiB
    assert nvml.ecc_errors(a, "uncorrected", "aggregate") == 0
    assert nvml.throttle_reasons(a) == 0x1  # GPU idle
    assert nvml.temperature(b) == 88
    assert nvml.ecc_errors(b, "uncorrected", "volatile") == 2
    assert nvml.memory_used(nvml.mig_handles(b)[0]) == GiB
    with pytest.raises(NvmlError, match="Not Supported"):
        nvml.fan_percent(b)
    with pytest.raises(NvmlError):
        nvml.retired_pages(b, "dbe")
    nvml.lose(0)
    for call in (nvml.temperature, nvml.memory_used, nvml.utilization, nvml.running_processes):
        with pytest.raises(NvmlError, match="lost"):
            call(a)
    with pytest.raises(NvmlError):
        nvml.device_handle(0)
    assert nvml.temperature(b) == 88  # the others still answer


# -- GpuSampler over FakeNvml ------------------------------------------------------------------

GPU_METRICS = {name for name in METRICS if name.startswith("gpu_")}
PER_GPU = GPU_METRICS - {"gpu_mig_memory_used_bytes", "gpu_process_memory_bytes"}


def of(samples: list[Sample], uuid: str) -> list[Sample]:
    return [s for s in samples if s.label("uuid") == uuid]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [
        s.value
        for s in samples
        if s.name == name and all(s.label(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def gpu_of(fake: FakeGpu, index: int) -> Gpu:
    """The Gpu discovery would have made of a FakeGpu."""
    return Gpu(
        index=index,
        uuid=fake.uuid,
        model=fake.name,
        memory_bytes=fake.memory_bytes,
        mig_enabled=fake.mig_enabled,
        mig_instances=tuple(MigInstance(m.uuid, m.profile, m.memory_bytes) for m in fake.migs),
    )


@pytest.fixture
def job_process():
    """A real process of job 42, and one of nobody's job."""
    env = {k: v for k, v in os.environ.items() if k != "SUANLI_JOB_ID"}
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    job = subprocess.Popen(sleep, env={**env, "SUANLI_JOB_ID": "42"})
    other = subprocess.Popen(sleep, env=env)
    try:
        yield job.pid, other.pid
    finally:
        for process in (job, other):
            process.kill()
            process.wait()


def vanished_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_real_gpus_report_what_nvml_answers(tmp_path: Path, job_process) -> None:
    job_pid, other_pid = job_process
    gone = vanished_pid()
    fakes = [
        FakeGpu(
            "GPU-aaaa",
            processes={job_pid: 3 * GiB, other_pid: GiB, gone: 5 * MiB},
            utilization=(97, 55),
            power_usage_watts=385.5,
            temperature=71,
            clocks=(1410, 1593),
            throttle_reasons=0x4,
            pcie_throughput=(2_000_000, 9_000_000),
        ),
        FakeGpu(
            "GPU-bbbb",
            mig_enabled=True,
            migs=[
                FakeMig("MIG-b-0", "3g.40gb", 40 * GiB, memory_used_bytes=7 * GiB),
                FakeMig("MIG-b-1", "1g.10gb", 10 * GiB, memory_used_bytes=GiB),
            ],
            unsupported={"utilization", "fan_percent", "retired_pages"},
        ),
        FakeGpu(
            "GPU-cccc",
            name="NVIDIA L40S",
            memory_bytes=48 * GiB,
            ecc_errors={("corrected", "aggregate"): 12, ("uncorrected", "volatile"): 1},
            retired_pages={"dbe": 2},
            remapped_rows=RemappedRows(3, 1, 1, 0),
        ),
    ]
    nvml = FakeNvml(fakes)
    gpus = [gpu_of(fake, i) for i, fake in enumerate(fakes)]
    samples = GpuSampler("node-a", nvml, tmp_path).sample(1.0, gpus, {"GPU-aaaa": 1.0})

    assert {s.name for s in samples} <= GPU_METRICS
    assert len({(s.name, s.labels) for s in samples}) == len(samples)
    for s in samples:
        assert s.label("node") == "node-a" and s.label("simulated") == "0"
        gpu = next(g for g in gpus if g.uuid == s.label("uuid"))
        assert (s.label("gpu"), s.label("model")) == (str(gpu.index), gpu.model)

    a = of(samples, "GPU-aaaa")
    assert {s.name for s in a} == GPU_METRICS - {"gpu_mig_memory_used_bytes"}
    assert value(a, "gpu_present") == 1
    assert value(a, "gpu_utilization_percent") == 97
    assert value(a, "gpu_memory_utilization_percent") == 55
    assert value(a, "gpu_memory_used_bytes") == 4 * MiB + 4 * GiB + 5 * MiB
    assert value(a, "gpu_memory_total_bytes") == 80 * GiB
    assert value(a, "gpu_temperature_celsius") == 71
    assert value(a, "gpu_power_watts") == 385.5
    assert value(a, "gpu_power_limit_watts") == 400
    assert value(a, "gpu_sm_clock_mhz") == 1410
    assert value(a, "gpu_throttle_reasons") == 0x4
    assert value(a, "gpu_pcie_tx_bytes_per_second") == 2_000_000
    assert value(a, "gpu_pcie_rx_bytes_per_second") == 9_000_000
    processes = {
        s.label("pid"): (s.label("job", None), s.value)
        for s in a
        if s.name == "gpu_process_memory_bytes"
    }
    assert processes == {
        str(job_pid): ("42", 3 * GiB),
        str(other_pid): (None, GiB),
        str(gone): (None, 5 * MiB),  # vanished meanwhile: its memory, but no job
    }

    b = of(samples, "GPU-bbbb")
    names = {s.name for s in b}
    assert not names & {"gpu_utilization_percent", "gpu_fan_percent", "gpu_retired_pages"}
    assert {"gpu_temperature_celsius", "gpu_remapped_rows", "gpu_present"} <= names
    mig = {
        (s.label("mig_uuid"), s.label("mig_profile")): s.value
        for s in b
        if s.name == "gpu_mig_memory_used_bytes"
    }
    assert mig == {("MIG-b-0", "3g.40gb"): 7 * GiB, ("MIG-b-1", "1g.10gb"): GiB}

    c = of(samples, "GPU-cccc")
    assert value(c, "gpu_ecc_corrected_aggregate") == 12
    assert value(c, "gpu_ecc_uncorrected_volatile") == 1
    assert value(c, "gpu_ecc_corrected_volatile") == 0
    assert value(c, "gpu_retired_pages", cause="dbe") == 2
    assert value(c, "gpu_retired_pages", cause="sbe") == 0
    assert {s.label("kind"): s.value for s in c if s.name == "gpu_remapped_rows"} == {
        "correctable": 3,
        "uncorrectable": 1,
        "pending": 1,
        "failed": 0,
    }
    assert value(c, "gpu_memory_total_bytes") == 48 * GiB


def test_processes_of_mig_devices_count_once(tmp_path: Path) -> None:
    """Without root, NVML lists a MIG GPU's processes only on its MIG devices."""

    class MigOnly(FakeNvml):
        def running_processes(self, handle):
            if handle[0] == "gpu":
                return []  # not root
            return {0: [(100, 3 * GiB)], 1: [(101, GiB), (102, 2 * GiB)]}[handle[2]]

    fake = FakeGpu(
        "GPU-m",
        mig_enabled=True,
        migs=[FakeMig("MIG-0", "3g.40gb", 40 * GiB), FakeMig("MIG-1", "3g.40gb", 40 * GiB)],
    )
    for nvml in (MigOnly([fake]), FakeNvml([replace(fake, processes={100: 3 * GiB})])):
        samples = GpuSampler("n", nvml, tmp_path).sample(1.0, [gpu_of(fake, 0)], {})
        processes = {
            int(s.label("pid")): s.value for s in samples if s.name == "gpu_process_memory_bytes"
        }
        if isinstance(nvml, MigOnly):
            assert processes == {100: 3 * GiB, 101: GiB, 102: 2 * GiB}
        else:  # root: listed on the GPU and on each MIG device (as FakeNvml does): once
            assert processes == {100: 3 * GiB}


def test_pcie_throughput_can_be_left_out(tmp_path: Path) -> None:
    class Counting(FakeNvml):
        calls = 0

        def pcie_throughput(self, handle):
            Counting.calls += 1
            return super().pcie_throughput(handle)

    nvml = Counting([FakeGpu("GPU-0")])
    gpus = [gpu_of(nvml.gpus[0], 0)]
    samples = GpuSampler("n", nvml, tmp_path, pcie=False).sample(1.0, gpus, {})
    assert not [s for s in samples if "pcie" in s.name] and Counting.calls == 0
    assert value(samples, "gpu_temperature_celsius") == 35


def test_a_lost_gpu_reports_only_that_it_is_gone(tmp_path: Path, caplog) -> None:
    fakes = [FakeGpu("GPU-0"), FakeGpu("GPU-1", processes={1: GiB}), FakeGpu("GPU-2")]
    nvml = FakeNvml(fakes)
    gpus = [gpu_of(fake, i) for i, fake in enumerate(fakes)]
    sampler = GpuSampler("n", nvml, tmp_path)
    assert value(of(sampler.sample(1.0, gpus, {}), "GPU-1"), "gpu_present") == 1

    nvml.lose(1)  # after its handle was cached: the calls on the handle fail
    with caplog.at_level(logging.WARNING, logger="suanli.monitoring.gpu"):
        samples = sampler.sample(2.0, gpus, {})
        lost = of(samples, "GPU-1")
        assert [(s.name, s.value) for s in lost] == [("gpu_present", 0.0)]
        assert dict(lost[0].labels) == {
            "node": "n",
            "gpu": "1",
            "uuid": "GPU-1",
            "model": "NVIDIA A100-SXM4-80GB",
            "simulated": "0",
        }
        assert len(of(samples, "GPU-0")) > 20 and len(of(samples, "GPU-2")) > 20
        sampler.sample(3.0, gpus, {})  # lost still; looked up afresh, and said only once
    assert sum("GPU-1" in r.getMessage() for r in caplog.records) == 1
    assert [s.name for s in of(sampler.sample(4.0, gpus, {}), "GPU-1")] == ["gpu_present"]

    nvml.gpus[1].broken = False  # back after a reset
    assert value(of(sampler.sample(5.0, gpus, {}), "GPU-1"), "gpu_present") == 1

    # no NVML at all (the driver went away): real GPUs are not present
    samples = GpuSampler("n", None, tmp_path).sample(6.0, gpus, {})
    assert [(s.name, s.value) for s in samples] == [("gpu_present", 0.0)] * 3


def test_handles_are_found_by_uuid_and_cached(tmp_path: Path) -> None:
    class Counting(FakeNvml):
        lookups = 0

        def device_handle(self, index: int):
            Counting.lookups += 1
            return super().device_handle(index)

    # discovery's index 0 is NVML's index 1 now (a GPU dropped out of the list before it)
    nvml = Counting([FakeGpu("GPU-x", temperature=40), FakeGpu("GPU-y", temperature=50)])
    gpus = [Gpu(0, "GPU-y", "NVIDIA A100-SXM4-80GB", 80 * GiB)]
    sampler = GpuSampler("n", nvml, tmp_path)
    assert value(sampler.sample(1.0, gpus, {}), "gpu_temperature_celsius") == 50
    lookups = Counting.lookups
    for now in (2.0, 3.0, 4.0):
        assert value(sampler.sample(now, gpus, {}), "gpu_temperature_celsius") == 50
    assert Counting.lookups == lookups
    # a GPU NVML never heard of is not present
    samples = sampler.sample(5.0, [Gpu(3, "GPU-zzz", "X", GiB)], {})
    assert [(s.name, s.value) for s in samples] == [("gpu_present", 0.0)]


def test_a_failing_metric_or_gpu_costs_only_itself(tmp_path: Path, caplog) -> None:
    class Odd(FakeNvml):
        def temperature(self, handle):
            if handle[1] == 0:
                raise TypeError("an answer of an unexpected shape")
            return super().temperature(handle)

    nvml = Odd([FakeGpu("GPU-0"), FakeGpu("GPU-1")])
    gpus = [gpu_of(g, i) for i, g in enumerate(nvml.gpus)]
    with caplog.at_level(logging.WARNING):
        samples = GpuSampler("n", nvml, tmp_path).sample(1.0, gpus, {})
    names_0 = {s.name for s in of(samples, "GPU-0")}
    assert "gpu_temperature_celsius" not in names_0 and "gpu_power_watts" in names_0
    assert value(of(samples, "GPU-1"), "gpu_temperature_celsius") == 35
    assert any("temperature" in r.getMessage() for r in caplog.records)


def test_job_of_reads_the_environment(job_process) -> None:
    job_pid, other_pid = job_process
    assert job_of(job_pid) == "42"
    assert job_of(other_pid) is None
    assert job_of(vanished_pid()) is None
    assert job_of(1) is None  # init: no job's, and unreadable without root: never an error


# -- simulated GPUs ----------------------------------------------------------------------------


def simulated(count: int = 3) -> list[Gpu]:
    return [
        Gpu(i, f"GPU-sim-h-{i}", "NVIDIA A100-PCIE-40GB", 40 * GiB, simulated=True)
        for i in range(count)
    ]


def test_simulated_gpus_follow_their_busy_share(tmp_path: Path) -> None:
    gpus = simulated()
    busy = {"GPU-sim-h-1": 0.5, "GPU-sim-h-2": 1.0}  # GPU 0 idle (not in the map)
    samples = GpuSampler("h", FakeNvml([]), tmp_path).sample(1.0, gpus, busy)
    assert {s.name for s in samples} <= GPU_METRICS
    assert all(s.label("simulated") == "1" and s.label("node") == "h" for s in samples)
    idle, half, full = (of(samples, g.uuid) for g in gpus)
    assert {s.name for s in idle} == PER_GPU - {"gpu_fan_percent"}  # a passive board
    for gpu, share in ((idle, 0.0), (half, 0.5), (full, 1.0)):
        assert value(gpu, "gpu_present") == 1
        assert value(gpu, "gpu_utilization_percent") == pytest.approx(100 * share)
        assert value(gpu, "gpu_memory_used_bytes") == pytest.approx(share * 40 * GiB)
        assert value(gpu, "gpu_memory_total_bytes") == 40 * GiB
        assert value(gpu, "gpu_temperature_celsius") == pytest.approx(34 + 48 * share)
        assert value(gpu, "gpu_power_watts") == pytest.approx(60 + share * 340)
        assert value(gpu, "gpu_power_limit_watts") == 400
        assert value(gpu, "gpu_ecc_uncorrected_volatile") == 0
        assert value(gpu, "gpu_retired_pages", cause="dbe") == 0
    assert value(idle, "gpu_sm_clock_mhz") < value(full, "gpu_sm_clock_mhz")
    assert value(idle, "gpu_throttle_reasons") == 1  # idle
    assert value(full, "gpu_throttle_reasons") == 0


def test_simulated_mig_instances_report_memory(tmp_path: Path) -> None:
    gpu = Gpu(
        0,
        "GPU-sim-h-0",
        "NVIDIA A100-SXM4-80GB",
        80 * GiB,
        mig_enabled=True,
        mig_instances=(MigInstance("MIG-sim-0", "3g.40gb", 40 * GiB),),
        simulated=True,
    )
    samples = GpuSampler("h", None, tmp_path).sample(1.0, [gpu], {"GPU-sim-h-0": 0.25})
    assert value(samples, "gpu_mig_memory_used_bytes", mig_uuid="MIG-sim-0") == 10 * GiB


def test_the_override_file_makes_simulated_gpus_hot_or_lost(tmp_path: Path, caplog) -> None:
    gpus = simulated()
    sampler = GpuSampler("h", None, tmp_path)
    path = tmp_path / OVERRIDES_FILE
    path.write_text(
        json.dumps(
            {
                "GPU-sim-h-0": {"gpu_temperature_celsius": 92, "gpu_fan_percent": 100},
                "GPU-sim-h-1": {"gpu_present": 0},
                "GPU-sim-h-2": {
                    "gpu_retired_pages": {"dbe": 3},
                    "gpu_ecc_uncorrected_volatile": 1,
                    "gpu_power_limit_watts": 250,
                },
                "*": {"gpu_power_limit_watts": 300},
            }
        )
    )
    samples = sampler.sample(1.0, gpus, {"GPU-sim-h-0": 1.0})
    hot, lost, faulty = (of(samples, g.uuid) for g in gpus)
    assert value(hot, "gpu_temperature_celsius") == 92
    assert value(hot, "gpu_fan_percent") == 100  # absent before: added
    assert value(hot, "gpu_utilization_percent") == 100  # the rest still from busy
    assert value(hot, "gpu_power_limit_watts") == 300  # from "*"
    assert [(s.name, s.value) for s in lost] == [("gpu_present", 0.0)]
    assert value(faulty, "gpu_retired_pages", cause="dbe") == 3
    assert value(faulty, "gpu_retired_pages", cause="sbe") == 0
    assert value(faulty, "gpu_ecc_uncorrected_volatile") == 1
    assert value(faulty, "gpu_power_limit_watts") == 250  # its own entry wins over "*"

    # a change of the file is seen at the next sample (even within the same second)
    stat = path.stat()
    path.write_text(json.dumps({"GPU-sim-h-1": {"gpu_temperature_celsius": 85}}))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    samples = sampler.sample(2.0, gpus, {})
    assert value(of(samples, "GPU-sim-h-1"), "gpu_present") == 1
    assert value(of(samples, "GPU-sim-h-1"), "gpu_temperature_celsius") == 85
    assert value(of(samples, "GPU-sim-h-0"), "gpu_temperature_celsius") == 34

    # broken JSON or unknown names: ignored, said in the log, never an error
    with caplog.at_level(logging.WARNING, logger="suanli.monitoring.gpu"):
        path.write_text('{"GPU-sim-h-0": {"gpu_temperature_celsius": 9')
        samples = sampler.sample(3.0, gpus, {})
        assert value(of(samples, "GPU-sim-h-0"), "gpu_temperature_celsius") == 34
        path.write_text(
            json.dumps(
                {"GPU-sim-h-0": {"node_load1": 5, "gpu_nonsense": 1, "gpu_fan_percent": "x"}}
            )
        )
        samples = sampler.sample(4.0, gpus, {})
    assert {s.name for s in samples} <= GPU_METRICS
    assert "gpu_fan_percent" not in {s.name for s in samples}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert OVERRIDES_FILE in messages and "node_load1" in messages and "gpu_nonsense" in messages

    path.unlink()  # gone: back to the derived values
    samples = sampler.sample(5.0, gpus, {"GPU-sim-h-1": 0.5})
    assert value(of(samples, "GPU-sim-h-1"), "gpu_temperature_celsius") == 58


def test_overrides_do_not_touch_real_gpus(tmp_path: Path) -> None:
    (tmp_path / OVERRIDES_FILE).write_text(json.dumps({"GPU-real": {"gpu_present": 0}}))
    fake = FakeGpu("GPU-real")
    samples = GpuSampler("h", FakeNvml([fake]), tmp_path).sample(1.0, [gpu_of(fake, 0)], {})
    assert value(samples, "gpu_present") == 1

"""GPU telemetry: the NVML calls behind `Nvml` (through a stand-in pynvml module, since this
machine has no driver), the FakeNvml test double, and `GpuSampler` over both real (FakeNvml)
and simulated GPUs."""

import types

import pytest

from suanli.gpu.nvml import NvmlError, PynvmlAdapter, RemappedRows
from suanli.gpu.testing import FakeGpu, FakeMig, FakeNvml

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

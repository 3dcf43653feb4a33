"""What the server says about GPUs in its log: once at start, not at every inventory or
metrics tick, and simulated GPUs named when they stand in for real ones."""

import json
import time

from suanli.gpu.nvml import load_nvml

SIMULATED_A100S = json.dumps([{"count": 4, "model": "A100-SXM4-80GB", "memory_bytes": 80 * 2**30}])


def real_gpus() -> int:
    nvml = load_nvml()
    if nvml is None:
        return 0
    try:
        return nvml.device_count()
    finally:
        nvml.shutdown()


def test_gpus_are_spoken_of_once_and_simulated_ones_by_name(server_factory) -> None:
    server = server_factory(
        {
            "SUANLI_LOG_LEVEL": "info",
            "SUANLI_SIMULATED_GPUS": SIMULATED_A100S,
            # Discovery and sampling run every second: each would repeat a message said
            # at every run.
            "SUANLI_INVENTORY_INTERVAL_SECONDS": "1",
            "SUANLI_METRICS_INTERVAL_SECONDS": "1",
        }
    )
    time.sleep(5)
    server.stop()
    assert server.process.stdout is not None
    log = "".join(server.output) + server.process.stdout.read()
    assert "NVML is not available" not in log
    if real_gpus():
        assert log.count("4 simulated GPUs (A100-SXM4-80GB) declared but ignored") == 1, log
    else:
        assert log.count("No NVIDIA driver found") == 1, log
        line = "4 simulated GPUs (A100-SXM4-80GB) declared; nothing runs on real GPUs"
        assert log.count(line) == 1, log

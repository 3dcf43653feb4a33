"""CPU cost of metric collection (issue 5): NodeSampler and GpuSampler, one sample at a time.

Each scenario takes `--samples` samples in a row (after 3 discarded warm-up samples), with
`now` advancing 10 s per sample so that every rate is computed, and measures the process CPU
time (`time.process_time()`: user + system, all threads) and the wall time per sample. That
is repeated `--repeats` times; the figures are the median and the range over repetitions.
The CPU share of one core that collecting costs is the CPU time per sample divided by the
interval: at 10 s (the default interval) and at 1 s. The goal in the issue: < 1 % of a core
at 10 s.

    python bench/metrics_collect.py                 # all scenarios, 500 samples × 5
    python bench/metrics_collect.py --samples 200 --repeats 3

Scenarios:
- `node`: NodeSampler on this machine (psutil and /proc, as they are here).
- `gpu fake-nvml x8`: GpuSampler over FakeNvml with 8 GPUs: every telemetry call answered, one
  GPU in MIG mode with 2 instances, 2 processes per GPU whose job is looked up in
  /proc/<pid>/environ. FakeNvml answers from memory, so this is Suanli's own cost; a real
  driver adds its ioctls (and nvmlDeviceGetPcieThroughput waits ≈ 20 ms per direction).
- `gpu simulated x8`: GpuSampler with 8 simulated GPUs, busy shares, and an override file.
- `node + ...`: both samplers, as the local backend's `telemetry()` runs them.
Then the node sampler's parts one by one, to show where its time goes.
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The fake NVML is a test helper (tests/fakenvml.py), not part of the package.
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))

import psutil
from fakenvml import FakeGpu, FakeMig, FakeNvml

from suanli.gpu.model import Gpu, MigInstance
from suanli.monitoring.gpu import OVERRIDES_FILE, GpuSampler
from suanli.monitoring.node import NodeSampler

GIB = 2**30
INTERVAL = 10.0  # seconds of `now` between samples


def fake_host(count: int) -> tuple[FakeNvml, list[Gpu]]:
    pids = [os.getpid(), os.getppid()]
    fakes = []
    for i in range(count):
        mig = i == count - 1  # the last GPU in MIG mode, two instances
        fakes.append(
            FakeGpu(
                f"GPU-{i:08x}-bench",
                processes={pid: (i + 1) * GIB for pid in pids},
                utilization=(90, 40),
                temperature=60 + i,
                power_usage_watts=300.0,
                mig_enabled=mig,
                migs=[FakeMig(f"MIG-{i}-{j}", "3g.40gb", 40 * GIB) for j in range(2 if mig else 0)],
            )
        )
    gpus = [
        Gpu(
            index=i,
            uuid=fake.uuid,
            model=fake.name,
            memory_bytes=fake.memory_bytes,
            mig_enabled=fake.mig_enabled,
            mig_instances=tuple(MigInstance(m.uuid, m.profile, m.memory_bytes) for m in fake.migs),
        )
        for i, fake in enumerate(fakes)
    ]
    return FakeNvml(fakes), gpus


def simulated_host(count: int, data_dir: Path) -> tuple[list[Gpu], dict[str, float]]:
    gpus = [
        Gpu(i, f"GPU-sim-bench-{i}", "NVIDIA A100-PCIE-40GB", 40 * GIB, simulated=True)
        for i in range(count)
    ]
    busy = {gpu.uuid: (i % 4) / 4 for i, gpu in enumerate(gpus)}
    overrides = {gpus[0].uuid: {"gpu_temperature_celsius": 92}, "*": {"gpu_fan_percent": 40}}
    (data_dir / OVERRIDES_FILE).write_text(json.dumps(overrides))
    return gpus, busy


def advancing_cpu_times(cores: int | None = None) -> Callable[..., object]:
    """psutil.cpu_times, read for real, plus 10 s of made-up CPU time per call (5 % busy): the
    samples come microseconds apart here, less than the kernel's tick, and the sampler would
    otherwise skip its CPU percentages. `cores`: repeat this machine's CPUs up to that many,
    for the cost on a big server."""
    real = psutil.cpu_times
    calls = itertools.count(1)

    def cpu_times(percpu: bool = False) -> object:
        n = next(calls)
        times = real(percpu=percpu)
        if not percpu:
            return times._replace(user=times.user + n * 0.5, idle=times.idle + n * 9.5)
        if cores:
            times = [times[i % len(times)] for i in range(cores)]
        return [t._replace(user=t.user + n * 0.5, idle=t.idle + n * 9.5) for t in times]

    return cpu_times


def measure(take: Callable[[float], int], samples: int) -> tuple[float, float, int]:
    """(CPU ms per sample, wall ms per sample, samples per call) over `samples` calls."""
    now = 1_000_000.0
    for _ in range(3):  # warm-up: first rates, caches, handles
        now += INTERVAL
        take(now)
    count = 0
    cpu_0, wall_0 = time.process_time(), time.perf_counter()
    for _ in range(samples):
        now += INTERVAL
        count = take(now)
    cpu, wall = time.process_time() - cpu_0, time.perf_counter() - wall_0
    return cpu / samples * 1000, wall / samples * 1000, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="suanli-bench-metrics-") as tmp:
        data_dir = Path(tmp)
        psutil.cpu_times = advancing_cpu_times()
        node = NodeSampler("bench", data_dir)
        big = NodeSampler("bench", data_dir)
        big_cpu_times = advancing_cpu_times(cores=128)
        real_cpu_times = psutil.cpu_times

        def take_big(now: float) -> int:
            psutil.cpu_times = big_cpu_times
            try:
                return len(big.sample(now))
            finally:
                psutil.cpu_times = real_cpu_times

        nvml, real = fake_host(args.gpus)
        fake_sampler = GpuSampler("bench", nvml, data_dir)
        sims, busy = simulated_host(args.gpus, data_dir)
        sim_sampler = GpuSampler("bench", None, data_dir)
        scenarios: dict[str, Callable[[float], int]] = {
            "node": lambda now: len(node.sample(now)),
            "node, 128 CPUs": take_big,
            f"gpu fake-nvml x{args.gpus}": lambda now: len(fake_sampler.sample(now, real, {})),
            f"gpu simulated x{args.gpus}": lambda now: len(sim_sampler.sample(now, sims, busy)),
            f"node + gpu fake-nvml x{args.gpus}": lambda now: (
                len(node.sample(now)) + len(fake_sampler.sample(now, real, {}))
            ),
            f"node + gpu simulated x{args.gpus}": lambda now: (
                len(node.sample(now)) + len(sim_sampler.sample(now, sims, busy))
            ),
        }
        parts: dict[str, Callable[[float], int]] = {}
        for part in ("cpu", "load", "memory", "disks", "network", "connections", "temperatures"):
            function = getattr(node, f"_sample_{part}")

            def take(now: float, function=function) -> int:
                out: list = []
                function(out, INTERVAL)
                return len(out)

            parts[f"  node: {part}"] = take

        print(
            f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
            f"{psutil.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"psutil {psutil.__version__}, load {os.getloadavg()[0]:.2f}, "
            f"{args.samples} samples × {args.repeats}"
        )
        print(
            f"{'scenario':<34} {'samples':>7} {'CPU ms/sample':>20} {'wall ms':>8} "
            f"{'% core @10 s':>13} {'% core @1 s':>12}"
        )
        for name, take in {**scenarios, **parts}.items():
            cpu_ms, wall_ms, count = [], [], 0
            for _ in range(args.repeats):
                cpu, wall, count = measure(take, args.samples)
                cpu_ms.append(cpu)
                wall_ms.append(wall)
            median = statistics.median(cpu_ms)
            spread = f"{median:.3f} ({min(cpu_ms):.3f}–{max(cpu_ms):.3f})"
            print(
                f"{name:<34} {count:>7} {spread:>20} {statistics.median(wall_ms):>8.3f} "
                f"{median / (INTERVAL * 1000) * 100:>12.4f}% {median / 1000 * 100:>11.3f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The whole collection tick as the server runs it: sample the node and 8 GPUs, derive job
series, store the points (SQLite), evaluate the alert rules — CPU time per tick, as % of one
core at 10 s and 1 s intervals. (bench/metrics_collect.py measures the samplers alone.)

    python bench/metrics_tick.py --ticks 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suanli.app import prepare
from suanli.backends.local.backend import LocalBackend
from suanli.config import Settings
from suanli.controllers import metrics
from suanli.controllers.metrics import MetricsController
from suanli.db.engine import Database
from suanli.services.nodes import record_inventory


class Clock:
    """Stands in for the time module in the controller: every call is 10 s later, so every
    tick stores new points and rolls up as the real one does over time."""

    def __init__(self, start: float):
        self.now = start

    def time(self) -> float:
        self.now += 10
        return self.now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        gpus = [{"count": 8, "model": "A100", "memory_bytes": 80 * 2**30}]
        os.environ["SUANLI_SIMULATED_GPUS"] = json.dumps(gpus)
        settings = Settings(data_dir=Path(directory), admin_password="bench-password")
        database = Database(settings.effective_database_url)
        prepare(settings, database)
        backend = LocalBackend(settings)
        with database.writing() as session:
            record_inventory(session, backend.name, backend.inventory())
        controller = MetricsController(settings, database, backend)
        clock = Clock(time.time())
        metrics.time = clock  # type: ignore[assignment]  # each tick 10 s after the last
        controller.tick()  # the first tick creates the series; rates start at the second
        costs = []
        for _ in range(options.repeat):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(options.ticks):
                controller.tick()
            costs.append((time.process_time() - cpu) / options.ticks * 1000)
            print(f"  {options.ticks} ticks in {time.perf_counter() - wall:.1f} s")
        samples = len(controller.latest)
        database.dispose()
    median = statistics.median(costs)
    print(f"samples per tick: {samples}")
    print("| CPU ms per tick (median of runs) | % of a core at 10 s | % of a core at 1 s |")
    print("|---|---|---|")
    print(f"| {median:.2f} | {median / 10_000 * 100:.3f} % | {median / 1000 * 100:.2f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

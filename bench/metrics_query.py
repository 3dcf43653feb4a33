"""Time-series query time: 7 days of metrics of 8 GPUs, as the store keeps them.

Fills a fresh database (SQLite, and PostgreSQL with --postgres URL) the way a week of
collection leaves it: raw 10 s points for the last day, one-minute means for the week, hourly
means too, for 8 GPUs × `--metrics` GPU metrics (plus the series of the other metrics, so the
label filter has to pick). Then times `store.query` for the charts the console draws: the
last hour (raw), the last day (raw, thinned), the last 7 days (minute tier) — one GPU and all 8.
The goal in issue 5: < 200 ms.

    python bench/metrics_query.py --repeat 20
    python bench/metrics_query.py --postgres postgresql+psycopg://user@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suanli.db import migrate
from suanli.db.engine import Database
from suanli.db.models import MetricPoint
from suanli.monitoring import store
from suanli.monitoring.model import Sample, labels_of

GPU_METRICS = [
    "gpu_utilization_percent",
    "gpu_temperature_celsius",
    "gpu_power_watts",
    "gpu_memory_used_bytes",
    "gpu_sm_clock_mhz",
    "gpu_memory_utilization_percent",
]
DAY, WEEK = 86_400, 7 * 86_400


def fill(database: Database, now: int, metrics: int) -> int:
    """Write a week of points for 8 GPUs; returns the number of points."""
    ids = store.SeriesIds()
    samples = [
        Sample(name, labels_of({"node": "gpu-01", "gpu": g, "uuid": f"GPU-{g}"}), 0.0)
        for name in GPU_METRICS[:metrics]
        for g in range(8)
    ]
    total = 0
    with database.writing() as session:
        resolved = ids.resolve(session, samples)
        series = list(resolved.values())
        batches = (
            (store.RAW, now - DAY, now, 10),
            (store.MINUTE, now - WEEK, now - now % 60, 60),
            (store.HOUR, now - WEEK, now - now % 3600, 3600),
        )
        for tier, start, end, step in batches:
            rows = [
                {"series_id": sid, "tier": tier, "at": at, "value": float(at % 97)}
                for sid in series
                for at in range(start - start % step, end, step)
            ]
            for i in range(0, len(rows), 50_000):
                session.execute(insert(MetricPoint), rows[i : i + 50_000])
            total += len(rows)
        session.commit()
    return total


def timed(database: Database, repeat: int, *args: object) -> tuple[float, float, int]:
    times, points = [], 0
    for _ in range(repeat):
        with database.reading() as session:
            started = time.perf_counter()
            found = store.query(session, *args)  # type: ignore[arg-type]
            times.append((time.perf_counter() - started) * 1000)
        points = sum(len(s.points) for s in found)
    return statistics.median(times), max(times), points


def run(url: str, label: str, repeat: int, metrics: int) -> None:
    database = Database(url)
    migrate.upgrade(database.engine)
    now = int(time.time())
    started = time.perf_counter()
    total = fill(database, now, metrics)
    print(f"{label}: {total:,} points written in {time.perf_counter() - started:.1f} s")
    cases = [
        ("1 h, GPU 0, raw", {"gpu": "0"}, now - 3600, 10),
        ("1 h, 8 GPUs, raw", {}, now - 3600, 10),
        ("24 h, 8 GPUs, 5 min", {}, now - DAY, 300),
        ("7 d, GPU 0, 1 h", {"gpu": "0"}, now - WEEK, 3600),
        ("7 d, 8 GPUs, 10 min", {}, now - WEEK + 3600, 600),
        ("7 d, 8 GPUs, 1 h", {}, now - WEEK + 3600, 3600),
    ]
    print("| backend | query | median ms | max ms | points |\n|---|---|---|---|---|")
    for name, match, start, step in cases:
        median, worst, points = timed(
            database, repeat, "gpu_temperature_celsius", match, start, now, step, now
        )
        print(f"| {label} | {name} | {median:.1f} | {worst:.1f} | {points} |")
    database.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=len(GPU_METRICS))
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL (a database to fill)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        run(f"sqlite:///{directory}/bench.db", "sqlite", options.repeat, options.metrics)
    if options.postgres:
        run(options.postgres, "postgresql", options.repeat, options.metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

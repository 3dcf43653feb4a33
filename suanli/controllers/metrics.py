"""Collects node and GPU telemetry, stores it, accounts jobs' GPU use and energy, and
evaluates the alert rules: one tick per collection interval (10 s by default).

Notifications are only queued here (rows in `notifications`); the notifier delivers them in a
loop of its own, so a slow webhook never delays collection.
"""

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.backends.base import Backend
from suanli.config import Settings
from suanli.core.states import ACTIVE, State
from suanli.db.engine import Database
from suanli.db.models import GpuDevice, Job
from suanli.monitoring import store
from suanli.monitoring.model import Sample, labels_of
from suanli.services import alerting

log = logging.getLogger("suanli.controllers")

ROLL_UP_EVERY = 60.0  # seconds
FORGET_EVERY = 3600.0


def gpu_shares(jobs: Iterable[Job]) -> dict[int, dict[str, float]]:
    """Each active job's share of each of its GPUs: 1 for a whole GPU; for a fraction its
    compute percentage (or, without one, its share of the GPU's memory is unknown here: 1)."""
    shares: dict[int, dict[str, float]] = {}
    for job in jobs:
        for gpu in (job.placement or {}).get("gpus", []):
            percent = int(gpu.get("compute_percent") or 0)
            shares.setdefault(job.id, {})[gpu["uuid"]] = percent / 100 if percent else 1.0
    return shares


def busy_of(shares: dict[int, dict[str, float]]) -> dict[str, float]:
    busy: dict[str, float] = {}
    for per_gpu in shares.values():
        for uuid, share in per_gpu.items():
            busy[uuid] = min(1.0, busy.get(uuid, 0.0) + share)
    return busy


def lost_gpus(devices: Iterable[GpuDevice], samples: Sequence[Sample]) -> list[Sample]:
    """`gpu_present 0` for the GPUs the inventory knows but no longer finds (NVML lost them,
    or they went from the host): once discovery stops listing a GPU the samplers say nothing
    of it, and an alert on its absence must not resolve by itself."""
    reported = {s.label("uuid") for s in samples if s.name == "gpu_present"}
    return [
        Sample(
            "gpu_present",
            labels_of(
                {
                    "node": gpu.node_name,
                    "gpu": gpu.index,
                    "uuid": gpu.uuid,
                    "model": gpu.model,
                    "simulated": "1" if gpu.simulated else "0",
                }
            ),
            0.0,
        )
        for gpu in devices
        if not gpu.present and gpu.uuid not in reported
    ]


def job_samples(
    shares: dict[int, dict[str, float]], samples: Sequence[Sample], node: str
) -> list[Sample]:
    """Per job: mean utilisation of its GPUs, their power times its share, and the GPU
    memory its processes use (where NVML attributes processes to jobs)."""
    by_gpu: dict[tuple[str, str], float] = {}
    memory: dict[str, float] = {}
    for sample in samples:
        if sample.name in ("gpu_utilization_percent", "gpu_power_watts"):
            by_gpu[(sample.name, sample.label("uuid"))] = sample.value
        elif sample.name == "gpu_process_memory_bytes" and sample.label("job"):
            memory[sample.label("job")] = memory.get(sample.label("job"), 0.0) + sample.value
    result = []
    for job_id, per_gpu in shares.items():
        labels = labels_of({"job": job_id, "node": node})
        utils = [by_gpu.get(("gpu_utilization_percent", uuid)) for uuid in per_gpu]
        known = [u for u in utils if u is not None]
        if known:
            result.append(Sample("job_gpu_utilization_percent", labels, sum(known) / len(known)))
        power = sum(
            by_gpu.get(("gpu_power_watts", uuid), 0.0) * share for uuid, share in per_gpu.items()
        )
        result.append(Sample("job_gpu_power_watts", labels, power))
        if str(job_id) in memory:
            result.append(Sample("job_gpu_memory_used_bytes", labels, memory[str(job_id)]))
    return result


class MetricsController:
    name = "metrics"

    def __init__(self, settings: Settings, database: Database, backend: Backend):
        self.settings = settings
        self.database = database
        self.backend = backend
        self.interval = settings.metrics_interval_seconds
        self.ids = store.SeriesIds()
        self.latest: list[Sample] = []
        self.alerts = alerting.AlertBook(settings)
        self._last_tick: float | None = None
        self._last_roll_up = 0.0
        self._last_forget = time.time()

    def tick(self) -> None:
        now = time.time()
        with self.database.reading() as session:
            active = list(session.scalars(select(Job).where(Job.state.in_(ACTIVE))))
            shares = gpu_shares(active)
            since = self._last_tick or now
            events = [("job.failed", labels) for labels in alerting.failed_since(session, since)]
            events += [
                ("data.corrupt", labels) for labels in alerting.corrupt_since(session, since)
            ]
            missing = list(session.scalars(select(GpuDevice).where(GpuDevice.present.is_(False))))
        handles = {
            job.id: job.handle for job in active if job.handle and job.state == State.running
        }
        samples = self.backend.telemetry(busy_of(shares), handles)
        node = next((s.label("node") for s in samples if s.label("node")), "")
        samples += job_samples(shares, samples, node) + lost_gpus(missing, samples)
        elapsed = min(now - self._last_tick, 3 * self.interval) if self._last_tick else 0.0
        with self.database.writing() as session:
            energy = self._account_energy(session, samples, elapsed)
            store.write(session, self.ids, [*samples, *energy], int(now))
            if now - self._last_roll_up >= ROLL_UP_EVERY:
                store.roll_up(session, int(now))
                self._last_roll_up = now
            if now - self._last_forget >= FORGET_EVERY:
                store.forget_empty_series(session, self.ids)
                self._last_forget = now
            session.commit()
        self.latest = [*samples, *energy]
        self._last_tick = now
        self.alerts.evaluate(self.database, self.latest, events, now)

    def _account_energy(
        self, session: Session, samples: Sequence[Sample], elapsed: float
    ) -> list[Sample]:
        """Add each running job's GPU power over the interval to its energy (Wh)."""
        power = {int(s.label("job")): s.value for s in samples if s.name == "job_gpu_power_watts"}
        if not power:
            return []
        result = []
        for job in session.scalars(select(Job).where(Job.id.in_(power))):
            if job.state != State.running:
                continue
            job.energy_wh += power[job.id] * elapsed / 3600
            labels = labels_of({"job": job.id})
            result.append(Sample("job_energy_wh", labels, job.energy_wh))
        return result


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)

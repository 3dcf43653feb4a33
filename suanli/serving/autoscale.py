"""Autoscaling of model services: replicas min..max follow requests in flight or requests
per second per replica, with delays up and down; a service whose minimum is 0 goes to zero
replicas after `idle_after` without a request (the gateway wakes it on the next one).

`Traffic` is what the gateway counts (in the memory of the process that serves it); the
decision is a pure function (`decide`) of the traffic, the scaling and what was decided
before; `Autoscaler` is the loop that writes it to the deployments.
"""

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from suanli.db.engine import Database
from suanli.db.models import Deployment
from suanli.kinds import service as service_kind

INTERVAL = 1.0
WINDOW = 60.0  # seconds of traffic the metrics average over


@dataclass
class Load:
    inflight: int = 0
    last_request: float | None = None
    starts: deque[float] = field(default_factory=deque)  # request start times in WINDOW
    samples: deque[tuple[float, int]] = field(default_factory=deque)  # (time, in flight)


class Traffic:
    """Requests per service as the gateway sees them. Every method runs on the event loop
    or in the autoscaler's thread and touches only plain counters."""

    def __init__(self) -> None:
        self.loads: dict[int, Load] = {}

    def begin(self, deployment_id: int) -> None:
        load = self.loads.setdefault(deployment_id, Load())
        now = time.monotonic()
        load.inflight += 1
        load.last_request = now
        load.starts.append(now)
        while load.starts[0] < now - WINDOW:  # also for services nobody autoscales
            load.starts.popleft()

    def end(self, deployment_id: int) -> None:
        load = self.loads.get(deployment_id)
        if load is not None:
            load.inflight = max(0, load.inflight - 1)
            load.last_request = time.monotonic()

    def measure(self, deployment_id: int, metric: str, now: float) -> tuple[float, float | None]:
        """The metric over the last WINDOW (in flight: its mean, sampled each tick; rps:
        starts per second), and when the last request began or ended."""
        load = self.loads.setdefault(deployment_id, Load())
        load.samples.append((now, load.inflight))
        while load.samples and load.samples[0][0] < now - WINDOW:
            load.samples.popleft()
        while load.starts and load.starts[0] < now - WINDOW:
            load.starts.popleft()
        if metric == "rps":
            value = len(load.starts) / WINDOW
        else:
            recent = [n for t, n in load.samples if t >= now - 10.0]
            value = max(load.inflight, sum(recent) / len(recent) if recent else 0.0)
        return value, load.last_request


@dataclass(frozen=True)
class Decision:
    replicas: int
    above_since: float | None  # the need for more began then
    below_since: float | None  # the need for fewer began then


def decide(
    scaling: Mapping[str, Any],
    current: int,
    value: float,
    idle_for: float,
    above_since: float | None,
    below_since: float | None,
    now: float,
) -> Decision:
    """How many replicas a service should have now. Up when the need (value / target)
    held above `current` for `up_delay`, down when below for `down_delay`; to zero (when
    the minimum is 0) after `idle_after` without a request; from zero only by the
    gateway's wake-up."""
    low, high = int(scaling["min"]), int(scaling["max"])
    if current == 0:
        return Decision(0, None, None)
    if low == 0 and idle_for >= float(scaling["idle_after"]):
        return Decision(0, None, None)
    need = min(high, max(low, 1, math.ceil(value / float(scaling["target"]) - 1e-9)))
    if need > current:
        since = above_since if above_since is not None else now
        if now - since >= float(scaling["up_delay"]):
            return Decision(need, None, None)
        return Decision(current, since, None)
    if need < current:
        since = below_since if below_since is not None else now
        if now - since >= float(scaling["down_delay"]):
            return Decision(need, None, None)
        return Decision(current, None, since)
    return Decision(current, None, None)


class Autoscaler:
    name = "autoscaler"
    interval = INTERVAL

    def __init__(self, database: Database, traffic: Traffic, wake: Callable[[str], None]):
        self.database = database
        self.traffic = traffic
        self.wake = wake
        self.started = time.monotonic()  # a service nobody called since is idle since this
        self.pending: dict[int, tuple[float | None, float | None]] = {}

    def tick(self) -> None:
        now = time.monotonic()
        with self.database.reading() as session:
            rows = session.execute(
                select(
                    Deployment.id, Deployment.replicas, Deployment.scaling, Deployment.updated_at
                ).where(
                    Deployment.kind == service_kind.KIND.name,
                    Deployment.state == "active",
                    Deployment.scaling.is_not(None),
                )
            ).all()
        changes: dict[int, int] = {}
        for row in rows:
            scaling = row.scaling or {}
            value, last = self.traffic.measure(row.id, scaling.get("metric", "inflight"), now)
            # Idle since its last request, and at most since it was deployed, changed or woken
            # (a new service is not idle before its first replica could answer).
            changed = time.time() - row.updated_at.timestamp() if row.updated_at else 0.0
            quiet = min(now - (last or self.started), max(0.0, changed))
            idle_for = 0.0 if self.traffic.loads[row.id].inflight else quiet
            above, below = self.pending.get(row.id, (None, None))
            decision = decide(scaling, row.replicas, value, idle_for, above, below, now)
            self.pending[row.id] = (decision.above_since, decision.below_since)
            if decision.replicas != row.replicas:
                changes[row.id] = decision.replicas
        if not changes:
            return
        with self.database.writing() as session:
            for deployment_id, replicas in changes.items():
                deployment = session.get(Deployment, deployment_id)
                if deployment is not None and deployment.scaling is not None:
                    deployment.replicas = replicas
            session.commit()
        self.wake("deployments")

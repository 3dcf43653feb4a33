"""Time series in the platform's own database: raw samples, then one-minute and hourly means.

Tiers and how long each is kept (the issue's example, and what a demanding operator expects):
  0  raw, every collection (10 s)   1 day
  1  one-minute means               30 days
  2  hourly means                   365 days
so a series holds at most ~60 000 points (8 640 + 43 200 + 8 760): bounded whatever the
uptime. A query picks the finest tier that still covers its range and averages into its step
in SQL. Series whose points have all expired are deleted.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, literal, select
from sqlalchemy.orm import Session

from suanli.db.models import MetricPoint, MetricSeries
from suanli.monitoring.model import Labels, Sample

RAW, MINUTE, HOUR = 0, 1, 2
TIER_SECONDS = {RAW: 0, MINUTE: 60, HOUR: 3600}
RETENTION = {RAW: 86_400, MINUTE: 30 * 86_400, HOUR: 365 * 86_400}
MAX_POINTS = 2_000  # per series and query: a chart is not wider than this


def series_key(name: str, labels: Labels) -> str:
    return name + "{" + ",".join(f"{k}={v}" for k, v in labels) + "}"


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str]
    points: list[tuple[int, float]]


class SeriesIds:
    """Series ids by key, remembered between writes so that a collection costs one insert
    of points (and one of series only when a new one appears)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def resolve(self, session: Session, samples: Sequence[Sample]) -> dict[str, int]:
        keys = {series_key(s.name, s.labels): s for s in samples}
        missing = [key for key in keys if key not in self._ids]
        if missing:
            for key, series_id in session.execute(
                select(MetricSeries.key, MetricSeries.id).where(MetricSeries.key.in_(missing))
            ):
                self._ids[key] = series_id
            for key in missing:
                if key not in self._ids:
                    sample = keys[key]
                    row = MetricSeries(name=sample.name, labels=dict(sample.labels), key=key)
                    session.add(row)
                    session.flush()
                    self._ids[key] = row.id
        return {key: self._ids[key] for key in keys}

    def forget(self) -> None:
        self._ids.clear()


def write(session: Session, ids: SeriesIds, samples: Sequence[Sample], at: int) -> None:
    """Store one collection's samples as raw points at `at` (epoch seconds). Callers commit."""
    if not samples:
        return
    resolved = ids.resolve(session, samples)
    rows = {}
    for sample in samples:
        series_id = resolved[series_key(sample.name, sample.labels)]
        rows[series_id] = {"series_id": series_id, "tier": RAW, "at": at, "value": sample.value}
    existing = set(
        session.scalars(
            select(MetricPoint.series_id).where(
                MetricPoint.series_id.in_(rows), MetricPoint.tier == RAW, MetricPoint.at == at
            )
        )
    )
    fresh = [row for series_id, row in rows.items() if series_id not in existing]
    if fresh:
        session.execute(insert(MetricPoint), fresh)


def roll_up(session: Session, now: int) -> None:
    """Average finished minutes of raw points into tier 1 and finished hours of tier 1 into
    tier 2 (each bucket once), then drop what is past its retention. Callers commit."""
    for source, target in ((RAW, MINUTE), (MINUTE, HOUR)):
        width = TIER_SECONDS[target]
        done = session.scalar(select(func.max(MetricPoint.at)).where(MetricPoint.tier == target))
        start = done + width if done is not None else 0
        end = now - now % width  # only whole buckets that have ended
        if end <= start:
            continue
        bucket = MetricPoint.at - MetricPoint.at % width
        averaged = (
            select(
                MetricPoint.series_id,
                literal(target),
                bucket.label("bucket"),
                func.avg(MetricPoint.value),
            )
            .where(MetricPoint.tier == source, MetricPoint.at >= start, MetricPoint.at < end)
            .group_by(MetricPoint.series_id, bucket)
        )
        session.execute(
            insert(MetricPoint).from_select(["series_id", "tier", "at", "value"], averaged)
        )
    for tier, keep in RETENTION.items():
        session.execute(
            delete(MetricPoint).where(MetricPoint.tier == tier, MetricPoint.at < now - keep)
        )


def forget_empty_series(session: Session, ids: SeriesIds) -> int:
    """Delete series left without points (ended jobs, removed GPUs). Callers commit."""
    empty = select(MetricSeries.id).where(
        ~select(MetricPoint.series_id).where(MetricPoint.series_id == MetricSeries.id).exists()
    )
    gone = list(session.scalars(empty))
    if gone:
        session.execute(delete(MetricSeries).where(MetricSeries.id.in_(gone)))
        ids.forget()
    return len(gone)


def tier_for(start: int, end: int, step: int, now: int) -> int:
    """The finest tier whose retention still covers `start` and whose resolution the step
    does not make pointless."""
    for tier in (RAW, MINUTE):
        if start >= now - RETENTION[tier] and step >= TIER_SECONDS[tier]:
            return tier
    return HOUR


def query(
    session: Session,
    metric: str,
    match: Mapping[str, str],
    start: int,
    end: int,
    step: int,
    now: int,
) -> list[Series]:
    """Every series of `metric` whose labels include `match`, averaged into `step`-second
    buckets between `start` and `end` (epoch seconds). The step grows if the range would give
    a chart more than MAX_POINTS points."""
    step = max(step, (end - start) // MAX_POINTS + 1, 1)
    tier = tier_for(start, end, step, now)
    candidates = session.execute(
        select(MetricSeries.id, MetricSeries.labels).where(MetricSeries.name == metric)
    ).all()
    chosen = {
        series_id: labels
        for series_id, labels in candidates
        if all(labels.get(k) == v for k, v in match.items())
    }
    if not chosen:
        return []
    bucket = MetricPoint.at - MetricPoint.at % step
    rows = session.execute(
        select(MetricPoint.series_id, bucket.label("bucket"), func.avg(MetricPoint.value))
        .where(
            and_(
                MetricPoint.series_id.in_(chosen),
                MetricPoint.tier == tier,
                MetricPoint.at >= start,
                MetricPoint.at <= end,
            )
        )
        .group_by(MetricPoint.series_id, bucket)
        .order_by(MetricPoint.series_id, bucket)
    )
    points: dict[int, list[tuple[int, float]]] = {series_id: [] for series_id in chosen}
    for series_id, at, value in rows:
        points[series_id].append((int(at), float(value)))
    return [
        Series(metric, dict(chosen[series_id]), series_points)
        for series_id, series_points in points.items()
    ]


def label_values(session: Session, metric: str, label: str) -> list[str]:
    """The values a label takes among a metric's series (for pickers)."""
    rows: Iterable[dict[str, str]] = session.scalars(
        select(MetricSeries.labels).where(MetricSeries.name == metric)
    )
    return sorted({labels[label] for labels in rows if label in labels})

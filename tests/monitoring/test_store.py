"""The time-series store on a real database (SQLite, or PostgreSQL in CI's second pass):
raw points, roll-ups into minutes and hours, retention, queries by labels and step."""

from suanli.db.engine import Database
from suanli.monitoring import store
from suanli.monitoring.model import Sample, labels_of

DAY = 86_400
T0 = 1_800_000_000 - 1_800_000_000 % 3600  # an hour boundary


def temperature(gpu: int, value: float) -> Sample:
    return Sample("gpu_temperature_celsius", labels_of({"node": "n1", "gpu": gpu}), value)


def record(database: Database, ids: store.SeriesIds, at: int, samples: list[Sample]) -> None:
    with database.writing() as session:
        store.write(session, ids, samples, at)
        session.commit()


def test_points_are_written_queried_by_labels_and_averaged_into_steps(migrated_database) -> None:
    ids = store.SeriesIds()
    for i in range(12):  # two minutes of 10 s samples
        record(migrated_database, ids, T0 + 10 * i, [temperature(0, 40 + i), temperature(1, 70)])
    with migrated_database.reading() as session:
        raw = store.query(
            session, "gpu_temperature_celsius", {"gpu": "0"}, T0, T0 + 119, 10, T0 + 120
        )
        per_minute = store.query(session, "gpu_temperature_celsius", {}, T0, T0 + 119, 60, T0 + 120)
        nothing = store.query(session, "gpu_power_watts", {}, T0, T0 + 119, 10, T0 + 120)
    assert len(raw) == 1 and raw[0].labels == {"gpu": "0", "node": "n1"}
    assert raw[0].points[:2] == [(T0, 40.0), (T0 + 10, 41.0)]
    by_gpu = {s.labels["gpu"]: s.points for s in per_minute}
    assert by_gpu["0"] == [(T0, 42.5), (T0 + 60, 48.5)]
    assert by_gpu["1"] == [(T0, 70.0), (T0 + 60, 70.0)]
    assert nothing == []


def test_the_same_moment_written_twice_is_kept_once(migrated_database) -> None:
    ids = store.SeriesIds()
    record(migrated_database, ids, T0, [temperature(0, 40)])
    record(
        migrated_database, store.SeriesIds(), T0, [temperature(0, 41)]
    )  # another process's cache
    with migrated_database.reading() as session:
        (series,) = store.query(session, "gpu_temperature_celsius", {}, T0, T0, 10, T0)
    assert series.points == [(T0, 40.0)]


def test_roll_ups_keep_history_within_retention_and_bounded(migrated_database) -> None:
    ids = store.SeriesIds()
    # Three hours of one-minute-spaced samples, rolled up as time goes on.
    for minute in range(180):
        at = T0 + 60 * minute
        record(migrated_database, ids, at, [temperature(0, minute % 60)])
        with migrated_database.writing() as session:
            store.roll_up(session, at + 1)
            session.commit()
    with migrated_database.writing() as session:
        store.roll_up(session, T0 + 3 * 3600 + 1)
        session.commit()
    with migrated_database.reading() as session:
        hourly = store.query(
            session, "gpu_temperature_celsius", {}, T0, T0 + 3 * 3600, 3600, T0 + 40 * DAY
        )
        minutes = store.query(
            session, "gpu_temperature_celsius", {}, T0, T0 + 3 * 3600, 60, T0 + 2 * DAY
        )
    assert store.tier_for(T0, T0 + 3 * 3600, 3600, T0 + 40 * DAY) == store.HOUR
    assert hourly[0].points == [(T0, 29.5), (T0 + 3600, 29.5), (T0 + 7200, 29.5)]
    assert len(minutes[0].points) == 180
    # A year and a day later everything has expired, and the empty series goes too.
    with migrated_database.writing() as session:
        store.roll_up(session, T0 + 366 * DAY)
        assert store.forget_empty_series(session, ids) == 1
        session.commit()
    with migrated_database.reading() as session:
        assert store.query(session, "gpu_temperature_celsius", {}, T0, T0 + 3 * 3600, 60, T0) == []


def test_a_long_range_is_thinned_to_what_a_chart_can_show(migrated_database) -> None:
    ids = store.SeriesIds()
    with migrated_database.writing() as session:
        for i in range(5000):  # 14 hours of raw samples
            store.write(session, ids, [temperature(0, i)], T0 + 10 * i)
        session.commit()
    with migrated_database.reading() as session:
        (series,) = store.query(
            session, "gpu_temperature_celsius", {}, T0, T0 + 50_000, 1, T0 + 50_000
        )
    assert 1000 < len(series.points) <= store.MAX_POINTS

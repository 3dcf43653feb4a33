"""Order and backfill: priority, fair share, submission time; a short job may start ahead
of a blocked gang only if it does not delay it."""

import random

from sched_builders import admitted, gpu_node, job, running, snapshot

from suanli.scheduler import schedule
from suanli.scheduler.model import Priority, Quota


def half_busy(max_duration: float | None = 100.0) -> list:
    """A job on g0-g3 of the one 8-GPU node, started at 0, ending by t=100 (not
    preemptible, so that only backfill is at play)."""
    return [
        running(
            job(100, "other", gpus=4, max_duration=max_duration, preemptible=False),
            "n1",
            [f"n1-g{i}" for i in range(4)],
            started_at=0.0,
        )
    ]


def test_backfill_starts_a_short_job_that_does_not_delay_the_head() -> None:
    pending = [
        job(1, "big", gpus=8, max_duration=1000),
        job(2, "small", max_duration=50),  # now=10: ends at 60, before the head can start
    ]
    decisions = schedule(snapshot([gpu_node()], pending, half_busy(), now=10.0))
    assert sorted(admitted(decisions)) == [2]
    head = decisions.pending[1]
    assert head.code == "capacity_gpus" and head.params["expected_start"] == 100.0


def test_backfill_refuses_a_job_that_would_delay_the_head() -> None:
    pending = [
        job(1, "big", gpus=8, max_duration=1000),
        job(2, "small", max_duration=500),  # would still run at t=100
        job(3, "small"),  # no maximum duration: runs for ever as far as we know
    ]
    decisions = schedule(snapshot([gpu_node()], pending, half_busy(), now=10.0))
    assert admitted(decisions) == {}
    for workload in (2, 3):
        reason = decisions.pending[workload]
        assert reason.code == "backfill_reserved"
        assert reason.params["job"] == 1 and reason.params["expected_start"] == 100.0


def test_backfill_uses_capacity_the_head_does_not_need() -> None:
    # Head needs 6 of 8: at t=100 there will be 8 free, so 2 are spare for long work.
    pending = [job(1, "big", gpus=6), job(2, "small"), job(3, "small"), job(4, "small")]
    decisions = schedule(snapshot([gpu_node()], pending, half_busy(), now=10.0))
    assert sorted(admitted(decisions)) == [2, 3]
    assert decisions.pending[4].code == "backfill_reserved"


def test_running_work_without_max_duration_never_ends_for_backfill() -> None:
    pending = [job(1, "big", gpus=8), job(2, "small", max_duration=5)]
    decisions = schedule(snapshot([gpu_node()], pending, half_busy(None), now=10.0))
    # The head's start is unknown: its capacity is kept from everything.
    assert admitted(decisions) == {}
    assert "expected_start" not in decisions.pending[1].params
    assert decisions.pending[2].code == "backfill_reserved"


def test_waiting_for_higher_priority() -> None:
    pending = [job(1, "big", gpus=8, priority=Priority.high), job(2, "small")]
    decisions = schedule(snapshot([gpu_node()], pending, half_busy(), now=10.0))
    assert decisions.pending[2].code == "waiting_for_higher_priority"
    assert decisions.pending[2].params["job"] == 1


def test_priority_comes_first() -> None:
    pending = [job(1, "a", priority=Priority.low), job(2, "b", priority=Priority.high)]
    decisions = schedule(snapshot([gpu_node(gpus=1)], pending))
    assert sorted(admitted(decisions)) == [2]


def test_fair_share_orders_two_equal_priority_projects_by_usage() -> None:
    pending = [job(1, "heavy", submitted_at=1.0), job(2, "light", submitted_at=2.0)]
    usage = {"heavy": 0.5, "light": 0.1}
    decisions = schedule(snapshot([gpu_node(gpus=1)], pending, usage=usage))
    assert sorted(admitted(decisions)) == [2]
    # Without past usage, the earlier submission wins.
    decisions = schedule(snapshot([gpu_node(gpus=1)], pending))
    assert sorted(admitted(decisions)) == [1]


def test_fair_share_interleaves_projects_within_a_cycle() -> None:
    # Two projects of four jobs each, four GPUs: each gets two, not the first project four.
    pending = [job(i, "a") for i in range(1, 5)] + [job(i, "b") for i in range(5, 9)]
    decisions = schedule(snapshot([gpu_node(gpus=4)], pending))
    assert sorted(admitted(decisions)) == [1, 2, 5, 6]


def test_fair_share_counts_current_use_as_dominant_share() -> None:
    run = [running(job(100, "a", gpus=2), "n1", ["n1-g0", "n1-g1"])]
    pending = [job(1, "a"), job(2, "b", submitted_at=50.0)]
    decisions = schedule(snapshot([gpu_node(gpus=3)], pending, run))
    assert sorted(admitted(decisions)) == [2]


def test_positions_count_within_the_project_queue() -> None:
    pending = [job(i, "a" if i % 2 else "b") for i in range(1, 9)]
    decisions = schedule(snapshot([gpu_node(gpus=2)], pending, quotas=[Quota("a", 0, 1)]))
    positions = {
        project: [decisions.pending[i].position for i in sorted(decisions.pending) if i % 2 == odd]
        for project, odd in (("a", 1), ("b", 0))
    }
    assert positions == {"a": [1, 2, 3], "b": [1, 2, 3]}


def test_same_snapshot_same_decisions_whatever_the_input_order() -> None:
    pending = [job(i, f"p{i % 3}", gpus=1 + i % 4, priority=Priority(i % 3)) for i in range(1, 40)]
    run = [running(job(100 + i, "p0", priority=Priority.low), "n1", [f"n1-g{i}"]) for i in range(3)]
    nodes = [gpu_node("n1"), gpu_node("n2")]
    first = schedule(snapshot(nodes, pending, run, usage={"p1": 0.2}))
    assert schedule(snapshot(nodes, pending, run, usage={"p1": 0.2})) == first
    shuffled = list(pending)
    random.Random(4).shuffle(shuffled)
    again = schedule(snapshot(nodes, shuffled, run, usage={"p1": 0.2}))
    assert again.admit == first.admit and again.preempt == first.preempt
    assert dict(again.pending) == dict(first.pending)


def test_backfill_without_placement_keeps_the_clusters_capacity_for_the_head() -> None:
    nodes = [gpu_node("a", gpus=4), gpu_node("b", gpus=4)]
    run = [
        running(
            job(100, "x", gpus=4, max_duration=100, preemptible=False),
            "a",
            [f"a-g{i}" for i in range(4)],
        )
    ]
    pending = [
        job(1, "big", gpus=8),
        job(2, "small", max_duration=50),
        job(3, "small", max_duration=500),
    ]
    decisions = schedule(snapshot(nodes, pending, run, now=10.0), places_work=True)
    assert admitted(decisions) == {2: None}
    assert decisions.pending[3].code == "backfill_reserved"

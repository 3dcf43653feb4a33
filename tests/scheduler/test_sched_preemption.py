"""Preemption: reclaiming borrowed GPUs for a guarantee, priority, who is never preempted,
the cheapest victims, and the preemptor's capacity held while the victims stop."""

from sched_builders import admitted, gpu_node, job, running, snapshot

from suanli.scheduler import schedule
from suanli.scheduler.model import Priority, Quota


def four_gpu_node() -> list:
    return [gpu_node(gpus=4)]


def borrowed_by_b(priority: Priority = Priority.normal, *, preemptible: bool = True) -> list:
    """Project b runs four 1-GPU jobs (started at 10, 20, 30, 40) on a 4-GPU node."""
    return [
        running(
            job(100 + i, "b", priority=priority, preemptible=preemptible),
            "n1",
            [f"n1-g{i}"],
            started_at=10.0 * (i + 1),
        )
        for i in range(4)
    ]


def test_reclaims_a_borrowed_gpu_when_the_owner_needs_its_guarantee() -> None:
    quotas = [Quota("a", guaranteed_gpus=2), Quota("b", guaranteed_gpus=2)]
    decisions = schedule(snapshot(four_gpu_node(), [job(1, "a")], borrowed_by_b(), quotas))
    assert [(p.victim, p.beneficiary) for p in decisions.preempt] == [(103, 1)]  # latest start
    assert decisions.admit == ()
    reason = decisions.pending[1]
    assert reason.code == "preempting" and reason.params == {"victims": 1} and reason.position == 1


def test_reclaim_stops_at_the_borrowers_guarantee() -> None:
    # a needs 3 but is guaranteed 2: it reclaims b's two borrowed GPUs only if it stays
    # within its guarantee; a 3-GPU gang is beyond it and b is not lower priority.
    quotas = [Quota("a", guaranteed_gpus=2), Quota("b", guaranteed_gpus=2)]
    decisions = schedule(snapshot(four_gpu_node(), [job(1, "a", gpus=3)], borrowed_by_b(), quotas))
    assert decisions.preempt == ()
    assert decisions.pending[1].code == "capacity_gpus"
    decisions = schedule(snapshot(four_gpu_node(), [job(1, "a", gpus=2)], borrowed_by_b(), quotas))
    assert sorted(p.victim for p in decisions.preempt) == [102, 103]


def test_a_higher_priority_job_of_another_project_preempts_a_borrowed_one() -> None:
    quotas = [Quota("b", guaranteed_gpus=2)]
    low = borrowed_by_b(Priority.low)
    decisions = schedule(
        snapshot(four_gpu_node(), [job(1, "a", priority=Priority.high)], low, quotas)
    )
    assert [(p.victim, p.beneficiary) for p in decisions.preempt] == [(103, 1)]


def test_priority_never_takes_another_projects_guarantee() -> None:
    # b uses exactly its guarantee: nothing of it is borrowed, so nothing is taken.
    quotas = [Quota("b", guaranteed_gpus=4)]
    low = borrowed_by_b(Priority.low)
    decisions = schedule(
        snapshot(four_gpu_node(), [job(1, "a", priority=Priority.high)], low, quotas)
    )
    assert decisions.preempt == ()
    assert decisions.pending[1].code == "capacity_gpus"


def test_higher_priority_preempts_lower_inside_its_own_project() -> None:
    own = [
        running(job(100 + i, "a", priority=Priority.low), "n1", [f"n1-g{i}"], started_at=i)
        for i in range(4)
    ]
    quotas = [Quota("a", guaranteed_gpus=4, max_gpus=4)]
    pending = [job(1, "a", gpus=2, priority=Priority.high)]
    decisions = schedule(snapshot(four_gpu_node(), pending, own, quotas))
    assert sorted(p.victim for p in decisions.preempt) == [102, 103]
    # Equal priority inside the project: it waits its turn.
    pending = [job(1, "a", gpus=2, priority=Priority.low)]
    decisions = schedule(snapshot(four_gpu_node(), pending, own, quotas))
    assert decisions.preempt == ()
    assert decisions.pending[1].code == "quota_max_gpus"


def test_never_preempts_non_preemptible_work() -> None:
    quotas = [Quota("a", guaranteed_gpus=2), Quota("b", guaranteed_gpus=2)]
    fixed = borrowed_by_b(Priority.low, preemptible=False)
    pending = [job(1, "a", priority=Priority.high)]
    decisions = schedule(snapshot(four_gpu_node(), pending, fixed, quotas))
    assert decisions.preempt == ()
    assert decisions.pending[1].code == "capacity_gpus"


def test_never_preempts_higher_priority_work() -> None:
    quotas = [Quota("a", guaranteed_gpus=2), Quota("b", guaranteed_gpus=2)]
    high = borrowed_by_b(Priority.high)
    decisions = schedule(snapshot(four_gpu_node(), [job(1, "a")], high, quotas))
    assert decisions.preempt == ()


def test_preempts_only_if_that_makes_it_fit() -> None:
    # A 6-GPU job cannot fit a 4-GPU node whatever is stopped.
    low = borrowed_by_b(Priority.low)
    decisions = schedule(
        snapshot(four_gpu_node(), [job(1, "a", gpus=6, priority=Priority.high)], low)
    )
    assert decisions.preempt == ()
    # One of b's jobs does not use the devices a needs... every victim must help the fit.
    decisions = schedule(
        snapshot(four_gpu_node(), [job(1, "a", gpus=2, priority=Priority.high)], low)
    )
    assert len(decisions.preempt) == 2


def test_cheapest_victims_borrowed_first_then_lowest_priority() -> None:
    quotas = [Quota("a", guaranteed_gpus=1), Quota("b", guaranteed_gpus=1), Quota("c")]
    run = [
        running(job(101, "a", priority=Priority.low), "n1", ["n1-g0"], started_at=50),
        running(job(102, "b", priority=Priority.low), "n1", ["n1-g1"], started_at=1),
        running(job(103, "b", priority=Priority.normal), "n1", ["n1-g2"], started_at=60),
        running(job(104, "c", priority=Priority.low), "n1", ["n1-g3"], started_at=2),
    ]
    # a and b are within their guarantees (1 of 1)... b uses 2 of 1: borrowing; c borrows.
    decisions = schedule(
        snapshot(four_gpu_node(), [job(1, "d", priority=Priority.high)], run, quotas)
    )
    # a is not borrowing (1 of 1): never a victim. Among b and c, lowest priority first,
    # then the most recently started: 102 (started 1) vs 104 (started 2): 104.
    assert [p.victim for p in decisions.preempt] == [104]


def test_preempting_holds_the_room_so_later_work_cannot_take_it() -> None:
    # b borrows 3 of the 4 GPUs (guarantee 0); a (guarantee 2) needs a 2-GPU gang: it
    # preempts one of b's jobs and holds the free GPU; a later 1-GPU job of c must wait.
    quotas = [Quota("a", guaranteed_gpus=2)]
    run = [running(job(100 + i, "b"), "n1", [f"n1-g{i}"], started_at=i) for i in range(3)]
    pending = [job(1, "a", gpus=2), job(2, "c", submitted_at=5.0)]
    decisions = schedule(snapshot(four_gpu_node(), pending, run, quotas))
    assert [p.victim for p in decisions.preempt] == [102]
    assert decisions.pending[1].code == "preempting"
    assert 2 not in admitted(decisions)
    assert decisions.pending[2].code == "capacity_gpus"


def test_victim_is_not_preempted_twice_in_one_cycle() -> None:
    quotas = [Quota("a", guaranteed_gpus=4)]
    run = [running(job(100, "b", gpus=4), "n1", [f"n1-g{i}" for i in range(4)])]
    pending = [job(1, "a"), job(2, "a")]
    decisions = schedule(snapshot(four_gpu_node(), pending, run, quotas))
    assert [(p.victim, p.beneficiary) for p in decisions.preempt] == [(100, 1)]
    # The second one fits once the victim is gone (the first holds only one GPU of four).
    assert decisions.pending[2].code in ("capacity_gpus", "preempting")


def test_the_beneficiary_starts_in_the_next_cycle_once_the_victims_are_gone() -> None:
    quotas = [Quota("a", guaranteed_gpus=2), Quota("b", guaranteed_gpus=2)]
    run = borrowed_by_b()
    pending = [job(1, "a", gpus=2), job(2, "b", submitted_at=0.5)]
    first = schedule(snapshot(four_gpu_node(), pending, run, quotas))
    victims = {p.victim for p in first.preempt}
    assert victims == {102, 103} and first.pending[1].code == "preempting"
    left = [w for w in run if w.id not in victims]
    second = schedule(snapshot(four_gpu_node(), pending, left, quotas))
    assert sorted(admitted(second)) == [1]
    assert second.preempt == ()
    assert second.pending[2].code == "capacity_gpus"


def test_a_fraction_preempts_a_lower_priority_fraction_on_a_shared_gpu() -> None:
    node = gpu_node(gpus=1, shared=[0])
    run = [
        running(
            job(100, "b", fraction_gib=60, priority=Priority.low), "n1", fraction=("n1-g0", 60, 0)
        )
    ]
    pending = [job(1, "a", fraction_gib=40, priority=Priority.high)]
    decisions = schedule(snapshot([node], pending, run))
    assert [(p.victim, p.beneficiary) for p in decisions.preempt] == [(100, 1)]


def test_preemption_without_placement_counts_the_whole_cluster() -> None:
    quotas = [Quota("a", guaranteed_gpus=2), Quota("b", guaranteed_gpus=2)]
    decisions = schedule(
        snapshot(four_gpu_node(), [job(1, "a")], borrowed_by_b(), quotas), places_work=True
    )
    assert [p.victim for p in decisions.preempt] == [103]

"""Admission on project quotas: guarantees, borrowing up to max_gpus, per-user caps, CPUs,
memory, fractions' share, non-preemptible borrowing, and the reasons people read."""

from sched_builders import GIB, admitted, gpu_node, job, running, snapshot

from suanli.scheduler import schedule
from suanli.scheduler.model import Quota


def test_issue_scenario_two_run_three_pend_with_quota_reason_and_positions() -> None:
    pending = [job(i) for i in range(1, 6)]
    decisions = schedule(snapshot([gpu_node()], pending, quotas=[Quota("p", 2, 2)]))
    assert sorted(admitted(decisions)) == [1, 2]
    assert sorted(decisions.pending) == [3, 4, 5]
    for position, workload in enumerate((3, 4, 5), start=1):
        reason = decisions.pending[workload]
        assert reason.code == "quota_max_gpus"
        assert reason.params == {"used": 2, "limit": 2, "requested": 1}
        assert reason.position == position
    assert decisions.preempt == ()


def test_borrows_idle_gpus_up_to_max_gpus() -> None:
    pending = [job(i) for i in range(1, 7)]
    decisions = schedule(snapshot([gpu_node()], pending, quotas=[Quota("p", 2, 4)]))
    assert sorted(admitted(decisions)) == [1, 2, 3, 4]
    assert {r.code for r in decisions.pending.values()} == {"quota_max_gpus"}
    assert decisions.pending[5].params["used"] == 4


def test_without_max_gpus_borrows_the_whole_cluster() -> None:
    pending = [job(i) for i in range(1, 10)]
    decisions = schedule(snapshot([gpu_node()], pending, quotas=[Quota("p", 2, None)]))
    assert len(decisions.admit) == 8
    assert decisions.pending[9].code == "capacity_gpus"
    assert decisions.pending[9].params["free"] == 0


def test_counts_running_work_against_the_quota() -> None:
    busy = [running(job(i), "n1", [f"n1-g{i}"]) for i in range(2)]
    decisions = schedule(snapshot([gpu_node()], [job(10)], busy, [Quota("p", 2, 2)]))
    assert decisions.admit == ()
    assert decisions.pending[10].code == "quota_max_gpus"


def test_per_user_cap_inside_a_project() -> None:
    pending = [job(1, user="ann"), job(2, user="ann"), job(3, user="bob")]
    quota = Quota("p", guaranteed_gpus=0, max_gpus=None, max_gpus_per_user=1)
    decisions = schedule(snapshot([gpu_node()], pending, quotas=[quota]))
    assert sorted(admitted(decisions)) == [1, 3]
    reason = decisions.pending[2]
    assert reason.code == "quota_user_gpus"
    assert reason.params == {"user": "ann", "used": 1, "limit": 1, "requested": 1}


def test_cpu_and_memory_quotas() -> None:
    quota = Quota("p", cpus=10, memory_bytes=100 * GIB)
    pending = [
        job(1, cpus=8, memory_gib=10),
        job(2, cpus=4, memory_gib=10),  # 12 CPUs > 10
        job(3, cpus=1, memory_gib=95),  # 105 GiB > 100
        job(4, cpus=2, memory_gib=90),
    ]
    decisions = schedule(snapshot([gpu_node()], pending, quotas=[quota]))
    assert sorted(admitted(decisions)) == [1, 4]
    assert decisions.pending[2].code == "quota_cpus"
    assert decisions.pending[2].params == {"used": 8, "limit": 10, "requested": 4}
    assert decisions.pending[3].code == "quota_memory"
    assert decisions.pending[3].params == {"used_gib": 10, "limit_gib": 100, "requested_gib": 95}


def test_fraction_counts_as_its_share_of_the_device() -> None:
    # 40 GiB of an 80 GiB device is half a GPU; 10 GiB at 75 % compute is three quarters.
    node = gpu_node(shared=range(8))
    quota = Quota("p", max_gpus=1)
    pending = [
        job(1, fraction_gib=40),
        job(2, fraction_gib=40),
        job(3, fraction_gib=10, compute=75),
    ]
    decisions = schedule(snapshot([node], pending, quotas=[quota]))
    assert sorted(admitted(decisions)) == [1, 2]
    assert decisions.pending[3].code == "quota_max_gpus"
    assert decisions.pending[3].params == {"used": 1, "limit": 1, "requested": 0.75}


def _big_and_small_shared() -> list:
    # One shared device of 80 GiB (found first) and one of 40 GiB.
    return [gpu_node("n1", 1, shared=[0]), gpu_node("n2", 1, memory_gib=40, shared=[0])]


def test_unplaced_fraction_counts_as_its_share_of_the_smallest_shared_device() -> None:
    # Regression (hypothesis, places_work=True): admission charged the 80 GiB device the virtual
    # node found (30/80 each), but the engine may put each on the 40 GiB one (30/40 each):
    # 1.5 GPUs for a user capped at 1. Unplaced, a fraction counts against the smallest.
    pending = [job(1, user="ann", fraction_gib=30), job(2, user="ann", fraction_gib=30)]
    for quota in (Quota("p", max_gpus_per_user=1), Quota("p", max_gpus=1)):
        decisions = schedule(
            snapshot(_big_and_small_shared(), pending, quotas=[quota]), places_work=True
        )
        assert admitted(decisions) == {1: None}
        reason = decisions.pending[2]
        assert reason.code in ("quota_user_gpus", "quota_max_gpus")
        assert (reason.params["used"], reason.params["requested"]) == (0.75, 0.75)


def test_placed_fraction_counts_as_its_share_of_the_device_it_lands_on() -> None:
    pending = [job(1, user="ann", fraction_gib=30), job(2, user="ann", fraction_gib=30)]
    quota = Quota("p", max_gpus_per_user=1)
    decisions = schedule(snapshot(_big_and_small_shared(), pending, quotas=[quota]))
    assert {i: p.devices[0].device for i, p in admitted(decisions).items() if p} == {
        1: "n1-g0",
        2: "n1-g0",
    }


def test_non_preemptible_work_borrows_only_what_nobody_is_guaranteed() -> None:
    # 8 GPUs; "b" is guaranteed 6, so non-preemptible work of "a" beyond its own guarantee
    # (0) may hold at most 2; preemptible work of "a" may borrow the rest.
    quotas = [Quota("a"), Quota("b", guaranteed_gpus=6)]
    pending = [job(i, "a", preemptible=False) for i in range(1, 4)] + [job(4, "a")]
    decisions = schedule(snapshot([gpu_node()], pending, quotas=quotas))
    assert sorted(admitted(decisions)) == [1, 2, 4]
    reason = decisions.pending[3]
    assert reason.code == "quota_nonpreemptible"
    assert reason.params["used"] == 2 and reason.params["limit"] == 2

"""The decisions behind a model service's replicas, as pure functions: how many replicas the
traffic asks for (`decide`, fed by what the gateway counts in `Traffic`, in requests in
flight or per second), and how a rolling update replaces replicas (`plan` with replicas of an
earlier template), one at a time and never fewer serving than wanted."""

import time
from dataclasses import replace
from typing import Any

from suanli.controllers.deployments import Plan, Replica, plan
from suanli.serving.autoscale import WINDOW, Decision, Traffic, decide

NOW = 1_000_000.0


def scaling(**changes: Any) -> dict[str, Any]:
    """A service's scaling as the server stores it (replicas `min..max` and the settings)."""
    return {
        "min": 1,
        "max": 3,
        "metric": "inflight",
        "target": 1.0,
        "up_delay": 0,
        "down_delay": 2,
        "idle_after": 600,
        **changes,
    }


# --- decide ---------------------------------------------------------------------------------


def test_the_need_above_the_replicas_scales_up_at_once_without_up_delay() -> None:
    assert decide(scaling(), 1, 4.0, 0.0, None, None, NOW) == Decision(3, None, None)
    assert decide(scaling(), 1, 2.0, 0.0, None, None, NOW).replicas == 2
    assert decide(scaling(target=2.0), 1, 3.0, 0.0, None, None, NOW).replicas == 2


def test_a_scale_up_waits_until_the_need_held_for_up_delay() -> None:
    rules = scaling(up_delay=5)
    first = decide(rules, 1, 4.0, 0.0, None, None, NOW)
    assert first == Decision(1, NOW, None)
    assert decide(rules, 1, 4.0, 0.0, first.above_since, None, NOW + 4.9).replicas == 1
    assert decide(rules, 1, 4.0, 0.0, first.above_since, None, NOW + 5).replicas == 3


def test_a_need_that_goes_away_before_the_delay_starts_the_wait_over() -> None:
    rules = scaling(up_delay=5)
    first = decide(rules, 1, 4.0, 0.0, None, None, NOW)
    calm = decide(rules, 1, 1.0, 0.0, first.above_since, None, NOW + 3)
    assert calm == Decision(1, None, None)
    again = decide(rules, 1, 4.0, 0.0, calm.above_since, None, NOW + 6)
    assert again == Decision(1, NOW + 6, None)  # not up: the need began again only now


def test_a_scale_down_waits_for_down_delay_then_goes_to_the_need_never_below_min() -> None:
    first = decide(scaling(), 3, 0.0, 0.5, None, None, NOW)
    assert first == Decision(3, None, NOW)
    assert decide(scaling(), 3, 0.0, 1.5, None, first.below_since, NOW + 1.5).replicas == 3
    assert decide(scaling(), 3, 0.0, 2.0, None, first.below_since, NOW + 2) == Decision(
        1, None, None
    )
    assert decide(scaling(min=2), 3, 0.0, 2.0, None, NOW, NOW + 2).replicas == 2


def test_the_need_stays_within_min_and_max() -> None:
    assert decide(scaling(max=3), 3, 500.0, 0.0, None, None, NOW) == Decision(3, None, None)
    assert decide(scaling(min=2, max=4), 2, 0.0, 0.0, None, None, NOW) == Decision(2, None, None)


def test_the_rps_metric_scales_with_requests_per_second_not_in_flight() -> None:
    """Short requests, none in flight when measured: by requests per second the service
    needs more replicas; by requests in flight the same traffic needs one."""
    traffic = Traffic()
    for _ in range(int(3 * WINDOW)):  # 3 requests per second over the window
        traffic.begin(7)
        traffic.end(7)
    now = time.monotonic()
    rps, last = traffic.measure(7, "rps", now)
    assert rps == 3.0
    assert last is not None and last <= now
    assert decide(scaling(metric="rps", max=5), 1, rps, 0.0, None, None, now).replicas == 3
    assert decide(scaling(metric="rps", target=2.0), 1, rps, 0.0, None, None, now).replicas == 2

    inflight, _ = Traffic().measure(7, "inflight", now)
    assert decide(scaling(max=5), 1, inflight, 0.0, None, None, now).replicas == 1


def test_the_inflight_metric_counts_the_requests_under_way() -> None:
    traffic = Traffic()
    for _ in range(4):
        traffic.begin(9)
    value, _ = traffic.measure(9, "inflight", time.monotonic())
    assert value == 4.0
    assert decide(scaling(), 1, value, 0.0, None, None, NOW).replicas == 3
    for _ in range(4):
        traffic.end(9)
    assert traffic.loads[9].inflight == 0
    traffic.end(9)  # one end too many never goes below zero
    assert traffic.loads[9].inflight == 0


def test_requests_older_than_the_window_no_longer_count() -> None:
    traffic = Traffic()
    for _ in range(120):
        traffic.begin(3)
        traffic.end(3)
    later = time.monotonic() + WINDOW + 1
    assert traffic.measure(3, "rps", later)[0] == 0.0


def test_a_service_with_minimum_zero_goes_to_zero_after_idle_after() -> None:
    rules = scaling(min=0, max=1, idle_after=1)
    assert decide(rules, 1, 0.0, 0.5, None, None, NOW).replicas == 1
    assert decide(rules, 1, 0.0, 1.0, None, None, NOW) == Decision(0, None, None)
    # A minimum of 1 never goes to zero, however long idle.
    assert decide(scaling(idle_after=1), 1, 0.0, 1e6, None, None, NOW).replicas == 1


def test_from_zero_only_the_gateway_wakes_a_service() -> None:
    rules = scaling(min=0, max=3, idle_after=1)
    assert decide(rules, 0, 10.0, 0.0, None, None, NOW) == Decision(0, None, None)


# --- plan: rolling updates ------------------------------------------------------------------


def old(replica_id: int, ready: bool = True, state: str = "running") -> Replica:
    """A replica of the template before the update."""
    return Replica(replica_id, state, "", NOW - 300, None, outdated=True, ready=ready)


def new(replica_id: int, ready: bool = False, state: str = "running") -> Replica:
    """A replica of the template now."""
    return Replica(replica_id, state, "", NOW - 1, None, outdated=False, ready=ready)


def test_a_rolling_update_adds_one_new_replica_and_stops_nothing_yet() -> None:
    assert plan(2, [old(1), old(2)], NOW) == Plan(1, (), 0, None)


def test_no_old_replica_stops_while_the_new_one_is_not_ready() -> None:
    assert plan(2, [old(1), old(2), new(3, state="starting")], NOW) == Plan(0, (), 0, None)
    assert plan(2, [old(1), old(2), new(3, ready=False)], NOW) == Plan(0, (), 0, None)


def test_each_ready_new_replica_stops_one_old_and_the_next_new_one_starts() -> None:
    assert plan(2, [old(1), old(2), new(3, ready=True)], NOW) == Plan(1, (2,), 0, None)
    assert plan(2, [old(1), new(3, ready=True), new(4, ready=True)], NOW) == Plan(0, (1,), 0, None)


def test_old_replicas_that_do_not_serve_stop_first() -> None:
    replicas = [old(1), old(2, ready=False, state="starting"), new(3, ready=True)]
    assert plan(2, replicas, NOW).stop == (2,)


def test_a_new_replica_that_keeps_failing_waits_for_backoff_and_old_ones_keep_serving() -> None:
    failed = Replica(3, "failed", "", NOW - 3, NOW - 2, outdated=False, ready=False)
    decided = plan(2, [old(1), old(2), failed], NOW)
    assert decided.start == 0 and decided.stop == ()
    assert decided.failures == 1
    assert decided.next_start_at is not None and decided.next_start_at > NOW


def test_a_rolling_update_never_serves_with_fewer_than_wanted() -> None:
    """Played step by step: a new replica is ready one step after it starts, a stopped one
    is gone at once; at every step as many serve as wanted, and at the end all are new."""
    wanted, next_id = 3, 10
    replicas = {i: old(i) for i in range(1, wanted + 1)}
    for _ in range(20):
        serving = sum(1 for r in replicas.values() if r.ready)
        assert serving >= wanted, replicas
        if all(not r.outdated and r.ready for r in replicas.values()) and len(replicas) == wanted:
            break
        decided = plan(wanted, list(replicas.values()), NOW)
        replicas = {i: replace(r, ready=True) if not r.outdated else r for i, r in replicas.items()}
        for replica_id in decided.stop:
            replicas.pop(replica_id)
        for _ in range(decided.start):
            replicas[next_id] = new(next_id)
            next_id += 1
    else:
        raise AssertionError(f"the update never ended: {replicas}")
    assert sorted(replicas) == [10, 11, 12]

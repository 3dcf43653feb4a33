"""The deployment controller's decision, a pure function of a deployment's replicas: what
to start, what to stop, how many failed in a row, and how long the next replacement waits."""

import math

import pytest

from suanli.controllers.deployments import (
    FIRST_BACKOFF,
    HEALTHY_SECONDS,
    MAX_BACKOFF,
    SCALED_DOWN,
    Plan,
    Replica,
    backoff,
    plan,
)

NOW = 1_000_000.0


def live(replica_id: int, state: str = "running", stop_reason: str = "") -> Replica:
    return Replica(replica_id, state, stop_reason, NOW - 300 if state == "running" else None, None)


def ended(
    replica_id: int,
    finished: float,
    ran: float = 1.0,
    state: str = "failed",
    stop_reason: str = "",
) -> Replica:
    return Replica(replica_id, state, stop_reason, finished - ran, finished)


def test_missing_replicas_are_started_all_at_once_while_nothing_fails() -> None:
    assert plan(3, [], NOW) == Plan(3, (), 0, None)
    assert plan(3, [live(1), live(2, "pending")], NOW) == Plan(1, (), 0, None)
    assert plan(2, [live(1), live(2)], NOW) == Plan(0, (), 0, None)


def test_a_replica_being_stopped_is_not_counted_as_one_of_those_wanted() -> None:
    assert plan(2, [live(1), live(2, stop_reason=SCALED_DOWN)], NOW) == Plan(1, (), 0, None)


def test_surplus_stops_the_not_yet_running_first_then_the_youngest() -> None:
    replicas = [live(1), live(2), live(3, "pending"), live(4), live(5, "starting")]
    decided = plan(2, replicas, NOW)
    assert decided.start == 0
    assert decided.stop == (5, 3, 4)
    assert plan(0, replicas, NOW).stop == (5, 3, 4, 2, 1)


def test_surplus_leaves_replicas_already_stopping_alone() -> None:
    replicas = [live(1), live(2), live(3, stop_reason=SCALED_DOWN)]
    assert plan(1, replicas, NOW).stop == (2,)


def test_failures_in_a_row_are_counted_newest_first_in_any_order() -> None:
    replicas = [ended(2, NOW - 20), ended(3, NOW - 10), ended(1, NOW - 30)]
    assert plan(0, replicas, NOW).failures == 3
    assert plan(0, list(reversed(replicas)), NOW).failures == 3


def test_backoff_doubles_from_its_first_step_and_is_capped() -> None:
    assert backoff(1) == FIRST_BACKOFF
    assert [backoff(n) for n in range(1, 5)] == [FIRST_BACKOFF * 2**i for i in range(4)]
    assert backoff(20) == MAX_BACKOFF
    assert all(backoff(n) <= backoff(n + 1) <= MAX_BACKOFF for n in range(1, 30))


@pytest.mark.parametrize("failures", [1, 2, 3, 8])
def test_the_next_replacement_waits_for_the_backoff_after_the_last_failure(
    failures: int,
) -> None:
    last_end = NOW - 1.5
    replicas = [ended(i, last_end - 10 * (failures - i)) for i in range(1, failures + 1)]
    decided = plan(1, replicas, NOW)
    assert decided.failures == failures
    assert decided.start == 0 and decided.stop == ()
    assert decided.next_start_at == math.ceil(last_end + backoff(failures))
    assert decided.next_start_at > NOW


def test_after_failures_replacements_start_one_at_a_time() -> None:
    replicas = [ended(1, NOW - 100), ended(2, NOW - 90)]
    assert NOW - 90 + backoff(2) < NOW
    assert plan(4, replicas, NOW) == Plan(1, (), 2, None)
    # One that runs is no reason to wait: the next one comes.
    assert plan(4, [*replicas, live(3)], NOW).start == 1


def test_after_failures_no_second_replacement_while_one_is_on_its_way() -> None:
    replicas = [ended(1, NOW - 100), ended(2, NOW - 90)]
    for state in ("pending", "admitted", "starting"):
        assert plan(4, [*replicas, live(3, state)], NOW).start == 0, state


def test_a_healthy_run_ends_the_streak() -> None:
    replicas = [
        ended(1, NOW - 300),
        ended(2, NOW - 200, ran=HEALTHY_SECONDS),
        ended(3, NOW - 100),
    ]
    assert plan(1, replicas, NOW).failures == 1
    healthy_last = [ended(1, NOW - 300), ended(2, NOW - 100, ran=HEALTHY_SECONDS + 5)]
    assert plan(1, healthy_last, NOW) == Plan(1, (), 0, None)


def test_a_replacement_running_healthily_since_the_last_failure_ends_the_streak() -> None:
    replacement = Replica(2, "running", "", NOW - 3600, None)
    assert plan(1, [ended(1, NOW - 3601), replacement], NOW).failures == 0


def test_a_replica_stopped_on_purpose_ends_the_streak() -> None:
    replicas = [
        ended(1, NOW - 300),
        ended(2, NOW - 200, state="cancelled", stop_reason=SCALED_DOWN),
        ended(3, NOW - 100),
    ]
    assert plan(1, replicas, NOW).failures == 1
    stopped_last = [ended(1, NOW - 300), ended(2, NOW - 3, state="cancelled", stop_reason="x")]
    assert plan(2, stopped_last, NOW) == Plan(2, (), 0, None)


def test_a_stopped_deployment_stops_everything_and_starts_nothing() -> None:
    replicas = [live(1), live(2, "admitted"), ended(3, NOW - 1)]
    decided = plan(0, replicas, NOW)
    assert decided.start == 0
    assert set(decided.stop) == {1, 2}
    assert decided.next_start_at is None

"""Login throttling rules, as pure functions over a small state.

Failures are counted per user name and per address inside a window; reaching the limit locks
that name or address for a while. A success clears the name's count (not the address's: one
good password must not reset an address that is guessing at many names).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta
    lockout: timedelta


@dataclass(frozen=True)
class ThrottleState:
    failures: int
    window_started_at: datetime
    locked_until: datetime | None


def seconds_locked(state: ThrottleState | None, now: datetime) -> int:
    """Seconds left on a lock, 0 when not locked."""
    if state is None or state.locked_until is None or state.locked_until <= now:
        return 0
    return max(1, int((state.locked_until - now).total_seconds() + 0.999))


def after_failure(
    state: ThrottleState | None, now: datetime, policy: ThrottlePolicy
) -> ThrottleState:
    if state is None or now - state.window_started_at > policy.window:
        state = ThrottleState(failures=0, window_started_at=now, locked_until=None)
    failures = state.failures + 1
    locked_until = now + policy.lockout if failures >= policy.max_failures else state.locked_until
    if locked_until is not None and locked_until <= now:
        locked_until = None
    return ThrottleState(failures, state.window_started_at, locked_until)

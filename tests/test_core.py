"""Pure domain rules: names, quantities, login throttling."""

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from suanli.core.quantities import format_bytes, parse_bytes
from suanli.core.throttle import ThrottlePolicy, after_failure, seconds_locked
from suanli.schemas.types import Name


@pytest.mark.parametrize("name", ["a", "alice", "team-7", "x" * 32, "a1"])
def test_valid_names(name: str) -> None:
    assert TypeAdapter(Name).validate_python(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "1abc", "-a", "a-", "a_b", "a.b", "x" * 33, "张三", "a b", "a\n"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Name).validate_python(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("1Ki", 1024),
        ("256Gi", 256 * 2**30),
        ("1.5T", 1_500_000_000_000),
        ("2 GiB", 2 * 2**30),
        ("512mi", 512 * 2**20),
        ("3G", 3 * 10**9),
    ],
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1Gi", "1Xi", "Gi"])
def test_parse_bytes_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes(text)


def test_format_bytes() -> None:
    assert format_bytes(None) == "-"
    assert format_bytes(10) == "10 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(256 * 2**30) == "256 GiB"


POLICY = ThrottlePolicy(max_failures=3, window=timedelta(minutes=15), lockout=timedelta(minutes=5))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_lock_after_max_failures_then_expires() -> None:
    state = None
    for i in range(2):
        state = after_failure(state, T0 + timedelta(seconds=i), POLICY)
        assert seconds_locked(state, T0 + timedelta(seconds=i)) == 0
    state = after_failure(state, T0 + timedelta(seconds=2), POLICY)
    assert seconds_locked(state, T0 + timedelta(seconds=2)) == 300
    assert seconds_locked(state, T0 + timedelta(seconds=2, minutes=5)) == 0


def test_failures_outside_the_window_start_over() -> None:
    state = after_failure(None, T0, POLICY)
    state = after_failure(state, T0 + timedelta(minutes=1), POLICY)
    state = after_failure(state, T0 + timedelta(minutes=20), POLICY)
    assert state.failures == 1
    assert seconds_locked(state, T0 + timedelta(minutes=20)) == 0

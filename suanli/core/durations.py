"""Durations as people write them ("90", "30m", "2h", "1d12h") and back."""

import re

_PART = re.compile(r"(\d+)\s*([smhd])", re.IGNORECASE)
_WHOLE = re.compile(r"^\s*(\d+\s*[smhd]\s*)+$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in `text`: a number of seconds or parts like 2h30m. Raises ValueError."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if not _WHOLE.match(text):
        raise ValueError(f"{text!r} is not a duration; use e.g. 90, 30m, 2h or 1d12h")
    return sum(int(n) * _SECONDS[unit.lower()] for n, unit in _PART.findall(text))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)

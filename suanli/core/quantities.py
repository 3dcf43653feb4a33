"""Resource quantities as people write them ("256Gi", "1.5T", "512M") and back."""

import re

_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "p": 10**15,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
    "pi": 2**50,
}
_QUANTITY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]i?)?b?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """Parse a byte quantity: plain bytes, SI (K, M, G, T, P) or binary (Ki, Mi, Gi, Ti, Pi).

    Raises ValueError with the accepted forms when the text is not a quantity.
    """
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; use e.g. 512Mi, 64Gi, 1.5T or a byte count")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


def format_bytes(value: int | None) -> str:
    """Format bytes in binary units, the way GPU and memory sizes are usually read."""
    if value is None:
        return "-"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    size, unit = float(value), 0
    while size >= 1024 and unit < len(units) - 1:
        size, unit = size / 1024, unit + 1
    return f"{size:.0f} {units[unit]}" if size == int(size) else f"{size:.1f} {units[unit]}"

"""Durations written the way people say them: ``30s``, ``5m``, ``1h30m``, ``14d``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS: dict[str, timedelta] = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}
_ORDER = list(_UNITS)
_PART = re.compile(r"(\d+)(ms|[wdhms])")
_EXAMPLES = "e.g. 30s, 5m, 2h, 14d or 1h30m"


def parse_duration(text: str) -> timedelta:
    """Turn ``1h30m`` into a timedelta; raise ValueError saying what to write."""
    compact = text.strip().lower()
    if not compact:
        raise ValueError(f"empty duration: write a number with a unit, {_EXAMPLES}")
    if compact.isdigit():
        raise ValueError(f"{text!r} has no unit: write {compact}s, {compact}m, ...")

    parts = _split(compact, text)
    return sum((int(n) * _UNITS[u] for n, u in parts), timedelta())


def _split(compact: str, original: str) -> list[tuple[str, str]]:
    """Split ``1h30m`` into (number, unit) pairs, largest unit first, each once."""
    parts = _PART.findall(compact)
    if "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{original!r} is not a duration: write {_EXAMPLES}")

    ranks = [_ORDER.index(u) for _, u in parts]
    if ranks != sorted(set(ranks)):
        raise ValueError(
            f"{original!r}: write each unit once, largest first (like 1h30m)"
        )
    return parts


def format_duration(value: timedelta) -> str:
    """Write a timedelta back in the config's notation (``1h30m``), for messages."""
    rest = round(value / _UNITS["ms"])
    if rest == 0:
        return "0s"
    sign = "-" if rest < 0 else ""
    rest = abs(rest)
    out = []
    for unit in _ORDER:
        size = round(_UNITS[unit] / _UNITS["ms"])
        count, rest = divmod(rest, size)
        if count:
            out.append(f"{count}{unit}")
    return sign + "".join(out)

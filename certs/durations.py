"""Durations on the command line: ``30d``, ``12h``, ``90m``, ``45s``."""

from __future__ import annotations

import re
from datetime import timedelta

from certs.errors import DurationError

_DURATION = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    """``"30d"`` → 30 days. One non-negative integer and one unit (d, h, m, s); anything else is an error."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise DurationError(
            f"{text!r} is not a duration: use a whole number and a unit, e.g. 30d, 12h, 90m, 45s"
        )
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def format_duration(value: timedelta) -> str:
    """The largest exact unit: 30 days → ``30d``, 90 minutes → ``90m``."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

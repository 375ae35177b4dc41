"""Prometheus duration strings, so every window is a number the generator can scale."""

from __future__ import annotations

_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1))


def fmt(seconds: float) -> str:
    """Format `seconds` as the shortest exact Prometheus duration, e.g. 4320 -> "1h12m".

    Args:
        seconds: a positive duration; it is rounded to whole milliseconds, Prometheus' resolution.
    """
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"duration must be at least 1ms, got {seconds!r} seconds")
    parts = []
    for unit, size in _UNITS:
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse(text: str) -> float:
    """Parse a Prometheus duration such as "1h30m" or "500ms" into seconds.

    Args:
        text: the duration; accepted units are d, h, m, s, ms.
    """
    total = 0
    rest = text.strip()
    if not rest:
        raise ValueError("duration is empty; expected e.g. '5m' or '1h30m'")
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0:
            raise ValueError(f"bad duration {text!r}; expected e.g. '5m' or '1h30m'")
        number, rest = int(rest[:digits]), rest[digits:]
        for unit, size in sorted(_UNITS, key=lambda u: -len(u[0])):
            if rest.startswith(unit):
                total += number * size
                rest = rest[len(unit) :]
                break
        else:
            raise ValueError(f"bad unit in duration {text!r}; accepted units: d, h, m, s, ms")
    return total / 1000

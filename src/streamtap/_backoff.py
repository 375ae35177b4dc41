"""How long to wait before a retry: full-jitter backoff, never shorter than the server asked.

Pure functions: the clock (`now`) and the random source (`rng`) are passed in, so tests pin
every value. `retry_index` counts retries from 0: the wait before the second attempt uses 0.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_tz

from ._policy import Policy

# HTTP says delta-seconds is digits only; servers also send fractions (OpenAI's retry-after-ms is
# fractional) and exponents, which the SDK's float() reads. float() alone would also accept
# "nan", "inf" and "1_0".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

# Beyond this many doublings any sane cap is reached; it also keeps 2.0**n finite.
_MAX_EXPONENT = 1000


def backoff_delay(policy: Policy, retry_index: int, rng: Callable[[], float]) -> float:
    """Full jitter (AWS "Exponential Backoff And Jitter"): uniform in [0, min(cap, base * 2**i)).

    Args:
        policy: supplies `backoff_base` and `backoff_cap`.
        retry_index: 0 for the first retry, 1 for the second, ...
        rng: returns a float in [0, 1), e.g. `random.random`.

    Raises:
        ValueError: a negative or non-integer `retry_index`, or `rng()` outside [0, 1].
    """
    if not isinstance(retry_index, int) or isinstance(retry_index, bool) or retry_index < 0:
        raise ValueError(f"retry_index must be an integer >= 0, got {retry_index!r}")
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2.0 ** min(retry_index, _MAX_EXPONENT))
    r = rng()
    if not 0.0 <= r <= 1.0:  # NaN fails this too
        raise ValueError(f"rng() must return a number in [0, 1], got {r!r}")
    return r * ceiling


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that also works on a plain dict with mixed-case keys."""
    value = headers.get(name)  # fast path: case-insensitive mappings and lower-case dicts
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def _parse_seconds(text: str) -> float | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    # Digits past float range give inf: the server wants "never", which max_retry_after refuses.
    return max(0.0, float(text))


def _parse_http_date(text: str, now: float) -> float | None:
    parsed = parsedate_tz(text.strip())
    if parsed is None:
        return None
    try:
        # HTTP-dates are GMT; timegm (not mktime) so the local timezone never leaks in.
        epoch = calendar.timegm(parsed[:6]) - (parsed[9] or 0)
    except (ValueError, OverflowError):
        return None
    return max(0.0, epoch - now)


def server_delay(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asked the client to wait, or None when it did not (or unparsably).

    `retry-after-ms` (float milliseconds, OpenAI) wins; when absent or unparsable,
    `retry-after` is read as seconds (fractions accepted) or as an HTTP-date. A negative
    value or a date in the past gives 0. Header names are matched case-insensitively.

    Args:
        headers: the response headers (any Mapping; httpx2.Headers or a dict).
        now: the current wall-clock time as a Unix epoch float (`time.time()`), for HTTP-dates.
    """
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        seconds = _parse_seconds(ms)
        if seconds is not None:
            return seconds / 1000.0
    value = _header(headers, "retry-after")
    if value is None:
        return None
    seconds = _parse_seconds(value)
    if seconds is not None:
        return seconds
    return _parse_http_date(value, now)


def should_retry_override(headers: Mapping[str, str]) -> bool | None:
    """The server's own verdict from `x-should-retry: true|false`, or None when absent or other.

    Args:
        headers: the response headers.
    """
    value = _header(headers, "x-should-retry")
    if value is None:
        return None
    value = value.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def retry_delay(
    policy: Policy,
    retry_index: int,
    headers: Mapping[str, str],
    now: float,
    rng: Callable[[], float],
) -> float:
    """The wait before retry `retry_index`: `max(backoff_delay, server_delay or 0)`.

    Never less than the server asked for. This does not apply `max_retry_after` or
    `max_retry_wait`: the caller compares `server_delay(...)` and the running total with
    those to decide whether to retry at all (see `exceeds_max_retry_after`).

    Args:
        policy: supplies the backoff settings.
        retry_index: 0 for the first retry, 1 for the second, ...
        headers: the failed attempt's response headers (empty when there was no response).
        now: wall-clock epoch seconds, for an HTTP-date Retry-After.
        rng: returns a float in [0, 1); always called exactly once.
    """
    backoff = backoff_delay(policy, retry_index, rng)
    asked = server_delay(headers, now)
    return backoff if asked is None else max(backoff, asked)


def exceeds_max_retry_after(policy: Policy, headers: Mapping[str, str], now: float) -> bool:
    """True when the server asked for a longer wait than `policy.max_retry_after`: give up.

    Args:
        policy: supplies `max_retry_after`.
        headers: the failed attempt's response headers.
        now: wall-clock epoch seconds, for an HTTP-date Retry-After.
    """
    asked = server_delay(headers, now)
    return asked is not None and (math.isinf(asked) or asked > policy.max_retry_after)

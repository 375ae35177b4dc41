"""Fault specs: parsing and validation of the `x-fake-fault` grammar (pure, no I/O).

Grammar: ``spec := item (";" item)*``, ``item := key ["=" value]``; blanks around items are
ignored and an empty spec means "serve clean". See the package docstring for the meaning of
every key; this module only turns text into a validated, frozen `FaultSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

ERROR_STATUSES = (400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504)
"""Status codes `status=` accepts; each gets the real API's error JSON body."""

DEFAULT_STALL_S = 60.0
"""How long `stall_first` / `stall_after` stall when no duration is given."""

ErrorKind = Literal["event", "failed", "bare"]

# Faults that end the attempt; combining two of them has no meaning, so it is rejected.
_TERMINAL = ("status", "reset", "drop_after", "truncate_after", "error_after")
_KEYS = (
    "status",
    "retry_after",
    "retry_after_ms",
    "retry_after_date",
    "should_retry",
    "reset",
    "drop_after",
    "truncate_after",
    "stall_first",
    "stall_after",
    "stall",
    "error_after",
    "error_kind",
    "error_code",
    "malformed_after",
    "garbled_after",
    "keepalive",
    "times",
    "model",
)
_BARE_KEYS = ("reset", "stall_first")
_SECONDS_KEYS = ("retry_after", "retry_after_date", "stall_first", "stall")
_COUNT_KEYS = frozenset(
    {
        "retry_after_ms",
        "drop_after",
        "truncate_after",
        "stall_after",
        "error_after",
        "malformed_after",
        "garbled_after",
        "keepalive",
    }
)


@dataclass(frozen=True)
class FaultSpec:
    """One parsed fault; every field is None/False/0 when the key was absent.

    Build it with `parse_fault`, which validates; `text` keeps the normalised spec string.
    """

    text: str = ""
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    retry_after_date: float | None = None
    should_retry: bool | None = None
    reset: bool = False
    drop_after: int | None = None
    truncate_after: int | None = None
    stall_first: float | None = None
    stall_after: int | None = None
    stall: float | None = None
    error_after: int | None = None
    error_kind: ErrorKind = "event"
    error_code: str | None = None
    malformed_after: int | None = None
    garbled_after: int | None = None
    keepalive: int = 0
    times: int | None = None
    model: str | None = None
    _keys: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def is_clean(self) -> bool:
        """True when the spec changes nothing about the response (only filters, or empty)."""
        return not (self._keys - {"times", "model"})

    def applies_to(self, model: str | None) -> bool:
        """Whether the `model=` filter (if any) selects a request for `model`."""
        return self.model is None or self.model == model


CLEAN = FaultSpec()


def _bad(spec: str, key: str, value: str, accepted: str) -> ValueError:
    return ValueError(f"fault spec {spec!r}: invalid {key}={value!r}; accepted: {accepted}")


def _int(spec: str, key: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _bad(spec, key, value, f"an integer >= {minimum}") from None
    if number < minimum:
        raise _bad(spec, key, value, f"an integer >= {minimum}")
    return number


def _seconds(spec: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _bad(spec, key, value, "a finite number of seconds >= 0") from None
    if not math.isfinite(number) or number < 0:
        raise _bad(spec, key, value, "a finite number of seconds >= 0")
    return number


def _split(spec: str) -> dict[str, str | None]:
    items: dict[str, str | None] = {}
    for raw in spec.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if key not in _KEYS:
            raise ValueError(f"fault spec {spec!r}: unknown key {key!r}; accepted keys: {', '.join(_KEYS)}")
        if key in items:
            raise ValueError(f"fault spec {spec!r}: key {key!r} given twice")
        if not sep:
            if key not in _BARE_KEYS:
                raise ValueError(f"fault spec {spec!r}: key {key!r} needs a value ({key}=...)")
            items[key] = None
        else:
            items[key] = value.strip()
    return items


def _check_combinations(spec: str, keys: frozenset[str]) -> None:
    terminal = [key for key in _TERMINAL if key in keys]
    if len(terminal) > 1:
        raise ValueError(
            f"fault spec {spec!r}: {' and '.join(terminal)} cannot be combined; "
            f"use at most one of {', '.join(_TERMINAL)}"
        )
    requires = {
        "retry_after": ("status",),
        "retry_after_ms": ("status",),
        "retry_after_date": ("status",),
        "should_retry": ("status",),
        "stall": ("stall_after",),
        "error_kind": ("error_after",),
        "error_code": ("error_after", "status"),
    }
    for key, needed in requires.items():
        if key in keys and not keys.intersection(needed):
            raise ValueError(f"fault spec {spec!r}: {key} needs {' or '.join(needed)} in the same spec")


def parse_fault(spec: str) -> FaultSpec:
    """Parse and validate a fault spec string.

    Args:
        spec: ``key[=value]`` items separated by ``;``, e.g. ``"status=429;retry_after=0"``.

    Returns:
        The frozen `FaultSpec`; `CLEAN` for an empty or blank spec.

    Raises:
        ValueError: naming the offending key and its accepted values.
    """
    items = _split(spec)
    if not items:
        return CLEAN
    keys = frozenset(items)
    _check_combinations(spec, keys)
    values: dict[str, object] = {}
    for key, value in items.items():
        if value is None:  # a bare key
            values[key] = True if key == "reset" else DEFAULT_STALL_S
            continue
        if key == "status":
            statuses = tuple(map(str, ERROR_STATUSES))
            if value.strip() not in statuses:
                raise _bad(spec, key, value, "|".join(statuses))
            values[key] = int(value)
        elif key in _SECONDS_KEYS:
            values[key] = _seconds(spec, key, value)
        elif key in _COUNT_KEYS:
            values[key] = _int(spec, key, value)
        elif key == "times":
            values[key] = _int(spec, key, value, minimum=1)
        elif key in ("should_retry", "reset"):
            if value.lower() not in ("true", "false"):
                raise _bad(spec, key, value, "true|false")
            values[key] = value.lower() == "true"
        elif key == "error_kind":
            if value not in ("event", "failed", "bare"):
                raise _bad(spec, key, value, "event|failed|bare")
            values[key] = value
        elif key in ("error_code", "model"):
            if not value:
                raise _bad(spec, key, value, "a non-empty name")
            values[key] = value
    if "stall_after" in keys and "stall" not in keys:
        values["stall"] = DEFAULT_STALL_S
    text = ";".join(key if value is None else f"{key}={value}" for key, value in items.items())
    return FaultSpec(text=text, _keys=keys, **values)  # type: ignore[arg-type]

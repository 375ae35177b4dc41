"""The resilience policy: what the engine may retry, how long it waits, when it gives up.

Three frozen, validated dataclasses. `Policy` holds the per-call knobs (attempts, backoff,
timeouts) and nests `BudgetSettings` (the retry budget shared by all calls of a client) and
`BreakerSettings` (one circuit breaker per upstream and model). Constructors are strict
(right types only, bools are not numbers); `Policy.from_mapping` also accepts the strings of
config files and environment variables.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NONE = frozenset({"", "none", "null", "off"})


def _is_number(value: object) -> bool:
    # bool is an int subclass, but `enabled=True` passed as a ratio is a bug, not a number.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Refused(ValueError):
    """A field's value is refused, in Python's words (`Policy.first_token_timeout ... or None`);
    `from_mapping` words it again for the file or environment the value came from."""

    def __init__(
        self,
        owner: str,
        name: str,
        accepted: str,
        value: object,
        *,
        optional: bool = False,
        in_file: str | None = None,
    ):
        self.name, self.value, self.optional = name, value, optional
        self.in_file = accepted if in_file is None else in_file  # what a file writes differs
        off = ", or None for off" if optional else ""
        super().__init__(f"{owner}.{name} must be {accepted}{off}, got {value!r}")

    def __reduce__(self) -> tuple[type[ValueError], tuple[str]]:
        # A plain ValueError with its message, which pickles: raised in a process pool's worker,
        # this one (its arguments keyword-only) broke the pool, or hung its result handler.
        return ValueError, (str(self),)

    def in_mapping(self, path: str, given: Mapping[Any, object]) -> str:
        """The message for a mapping at `path` (``policy.breaker``) that holds `given`: the
        value as the mapping gave it, or, when it gave none, the default's, said to be one."""
        off = ', or "none" for off' if self.optional else ""
        shown = repr(given[self.name]) if self.name in given else f"{self.value!r} (the default)"
        return f"{path}.{self.name} must be {self.in_file}{off}, got {shown}"


def _check_int(owner: str, name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _Refused(owner, name, f"an integer >= {minimum}", value)


def _check_number(
    obj: object,
    name: str,
    *,
    low: float,
    low_inclusive: bool,
    high: float | None = None,
    allow_inf: bool = False,
    optional: bool = False,
    extra: str = "",
) -> None:
    """Validate a float field of a frozen dataclass and normalise an int to float in place."""
    owner = type(obj).__name__
    value = getattr(obj, name)
    if optional and value is None:
        return
    ok = _is_number(value) and not math.isnan(value)
    if ok:
        number = float(value)
        ok = (number >= low if low_inclusive else number > low) and (allow_inf or math.isfinite(number))
        if high is not None:
            ok = ok and number <= high
    if not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low:g}{extra}"
        rng = f"a number {bound} and <= {high:g}" if high is not None else f"a number {bound}"
        rng += " (inf allowed)" if allow_inf else (" and finite" if high is None else "")
        raise _Refused(owner, name, rng, value, optional=optional)
    # Frozen: normalise `8` to `8.0` so readers always get a float.
    object.__setattr__(obj, name, float(value))


def _check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _Refused(owner, name, "True or False", value, in_file="true or false")


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Settings shared by every circuit breaker (one per upstream and model).

    Args:
        window: seconds of outcomes considered (> 0).
        min_requests: no opening below this many counted outcomes in the window (>= 1).
        failure_ratio: open when failures/outcomes >= this (0 < ratio <= 1).
        open_for: seconds open before letting probes through (half-open) (> 0).
        half_open_probes: concurrent probe calls admitted when half-open (>= 1).
        enabled: False turns the breaker off (every call allowed, nothing recorded).
    """

    window: float = 30.0
    min_requests: int = 20
    failure_ratio: float = 0.5
    open_for: float = 15.0
    half_open_probes: int = 1
    enabled: bool = True

    def __post_init__(self) -> None:
        _check_number(self, "window", low=0, low_inclusive=False)
        _check_int("BreakerSettings", "min_requests", self.min_requests, 1)
        _check_number(self, "failure_ratio", low=0, low_inclusive=False, high=1)
        _check_number(self, "open_for", low=0, low_inclusive=False)
        _check_int("BreakerSettings", "half_open_probes", self.half_open_probes, 1)
        _check_bool("BreakerSettings", "enabled", self.enabled)


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """Settings of the retry budget (gRPC retry throttling / Finagle RetryBudget).

    Args:
        ratio: retries allowed per call (>= 0); 0.2 lets 1 call in 5 retry once.
        min_per_second: floor, so a quiet client can still retry (>= 0); the budget always
            holds `min_per_second * ttl` retries per ttl window on top of the deposits.
        ttl: seconds a deposit (and a withdrawal) stays valid (> 0).
        enabled: False turns the budget off (every retry allowed).
    """

    ratio: float = 0.2
    min_per_second: float = 1.0
    ttl: float = 10.0
    enabled: bool = True

    def __post_init__(self) -> None:
        _check_number(self, "ratio", low=0, low_inclusive=True)
        _check_number(self, "min_per_second", low=0, low_inclusive=True)
        _check_number(self, "ttl", low=0, low_inclusive=False)
        _check_bool("BudgetSettings", "enabled", self.enabled)


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything the engine needs to decide on retries and timeouts (all times in seconds).

    Args:
        max_attempts: attempts per call including the first (>= 1; 1 = no retries).
        backoff_base: first backoff ceiling (> 0); the n-th retry waits up to base * 2**n.
        backoff_cap: largest backoff ceiling (>= backoff_base).
        max_retry_wait: cap on the sum of waits between the attempts of one call (>= 0, inf allowed).
        max_retry_after: a server asking to wait longer than this is not retried (> 0, inf allowed).
        first_token_timeout: from sending an attempt to its first content event; None = off.
        idle_timeout: the largest gap between SSE events after the first byte; None = off.
        connect_timeout: to establish the connection (> 0).
        total_timeout: the whole call including retries; None = off.
        budget: the retry budget settings.
        breaker: the circuit breaker settings.
    """

    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_wait: float = 30.0
    max_retry_after: float = 60.0
    first_token_timeout: float | None = 30.0
    idle_timeout: float | None = 60.0
    connect_timeout: float = 10.0
    total_timeout: float | None = None
    budget: BudgetSettings = BudgetSettings()
    breaker: BreakerSettings = BreakerSettings()

    def __post_init__(self) -> None:
        _check_int("Policy", "max_attempts", self.max_attempts, 1)
        _check_number(self, "backoff_base", low=0, low_inclusive=False)
        base = self.backoff_base
        _check_number(self, "backoff_cap", low=base, low_inclusive=True, extra=" (backoff_base)")
        _check_number(self, "max_retry_wait", low=0, low_inclusive=True, allow_inf=True)
        _check_number(self, "max_retry_after", low=0, low_inclusive=False, allow_inf=True)
        for name in ("first_token_timeout", "idle_timeout", "total_timeout"):
            _check_number(self, name, low=0, low_inclusive=False, optional=True)
        _check_number(self, "connect_timeout", low=0, low_inclusive=False)
        if not isinstance(self.budget, BudgetSettings):
            raise ValueError(f"Policy.budget must be a BudgetSettings, got {self.budget!r}")
        if not isinstance(self.breaker, BreakerSettings):
            raise ValueError(f"Policy.breaker must be a BreakerSettings, got {self.breaker!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Policy:
        """Build a Policy from a config-file or environment mapping.

        Values may be of the right type or strings (`"4"`, `"0.5"`, `"true"`, `"none"`); `budget`
        and `breaker` are nested mappings (or already-built settings). Missing keys keep their
        defaults.

        Errors name a value by its key's path, as the proxy's TOML file writes it
        (`policy.breaker.failure_ratio`), in the file's words (`true`, `"none"`), and say when
        the value at fault is a default the mapping did not set.

        Args:
            data: field name to value.

        Raises:
            ValueError: an unknown key (naming it and the accepted keys) or an invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"policy must be a mapping, got {data!r}")
        values = _coerce_fields(cls, "policy", data, nested={"budget", "breaker"})
        for name, settings_cls in (("budget", BudgetSettings), ("breaker", BreakerSettings)):
            if name not in values:
                continue
            nested = values[name]
            if isinstance(nested, Mapping):
                path = f"policy.{name}"
                values[name] = _build(settings_cls, path, nested, _coerce_fields(settings_cls, path, nested))
            elif not isinstance(nested, settings_cls):
                raise ValueError(f"policy.{name} must be a mapping, got {nested!r}")
        return _build(cls, "policy", data, values)


def _build(cls: Callable[..., _T], path: str, given: Mapping[Any, object], values: dict[str, Any]) -> _T:
    """`cls(**values)`, whose errors name the field by its path in the mapping `given`."""
    try:
        return cls(**values)
    except _Refused as refused:
        raise ValueError(refused.in_mapping(path, given)) from None


def _coerce_fields(
    cls: type[_T], owner: str, data: Mapping[Any, object], nested: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    """Check keys against the dataclass fields and convert string values to the field's type."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            accepted = ", ".join(sorted(fields))
            raise ValueError(f"{owner}: unknown key {key!r}; accepted keys: {accepted}")
        out[key] = value if key in nested else _coerce(fields[key], value)
    return out


def _coerce(kind: str, value: object) -> object:
    """A string as the field's type; one that is not is returned as is, for the class to refuse
    with the field's accepted range (`policy.max_attempts must be an integer >= 1, got '3.0'`),
    as it refuses every other bad value."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if kind.endswith("| None") and text in _NONE:
        return None
    if kind == "bool":
        return True if text in _TRUE else False if text in _FALSE else value
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        return value

"""What the demo shows, computed from the Prometheus registry every recorder writes to.

`read_totals` takes one consistent-enough reading of the cumulative series (summed over api and
model); `snapshot` turns two readings into the live numbers (rates and ratios over the window
between them, quantiles from the histogram buckets' increase), as PromQL would with `rate()`
and `histogram_quantile()`. Both are pure given their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

BREAKER_STATES = ("closed", "half-open", "open")


@dataclass(frozen=True)
class Totals:
    """Cumulative counts at one instant, summed over api and model.

    Args:
        at: seconds since the demo started.
        requests: calls by outcome.
        request_errors: failed calls by error_type.
        attempts: upstream attempts by result (ok, error).
        attempt_errors: failed attempts by error_type.
        retries: retries by reason.
        suppressed: retries not taken, by cause.
        fallbacks: fallbacks by (kind, result).
        ttft_buckets: (upper bound, cumulative count) of the time-to-first-token histogram.
        breakers: circuit state (0 closed, 1 half-open, 2 open) by "model @ upstream".
        active_streams: streams in progress.
    """

    at: float
    requests: Mapping[str, float] = field(default_factory=dict)
    request_errors: Mapping[str, float] = field(default_factory=dict)
    attempts: Mapping[str, float] = field(default_factory=dict)
    attempt_errors: Mapping[str, float] = field(default_factory=dict)
    retries: Mapping[str, float] = field(default_factory=dict)
    suppressed: Mapping[str, float] = field(default_factory=dict)
    fallbacks: Mapping[tuple[str, str], float] = field(default_factory=dict)
    ttft_buckets: tuple[tuple[float, float], ...] = ()
    breakers: Mapping[str, int] = field(default_factory=dict)
    active_streams: float = 0.0

    @property
    def calls(self) -> float:
        return sum(self.requests.values())


_BY_LABEL = {
    "streamtap_requests_total": ("requests", "outcome"),
    "streamtap_request_errors_total": ("request_errors", "error_type"),
    "streamtap_attempts_total": ("attempts", "result"),
    "streamtap_attempt_errors_total": ("attempt_errors", "error_type"),
    "streamtap_retries_total": ("retries", "reason"),
    "streamtap_retries_suppressed_total": ("suppressed", "cause"),
}


def _add(table: dict[str, float], key: str, value: float) -> None:
    table[key] = table.get(key, 0.0) + value


def read_totals(registry: CollectorRegistry, at: float) -> Totals:
    """Read every streamtap series of `registry` once.

    Args:
        registry: the registry the recorders write to.
        at: the reading's time, seconds since the demo started.
    """
    tables: dict[str, dict[str, float]] = {attr: {} for attr, _ in _BY_LABEL.values()}
    fallbacks: dict[tuple[str, str], float] = {}
    buckets: dict[float, float] = {}
    breakers: dict[str, int] = {}
    active = 0.0
    for family in registry.collect():
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name in _BY_LABEL:
                attr, label = _BY_LABEL[name]
                _add(tables[attr], labels[label], sample.value)
            elif name == "streamtap_fallbacks_total":
                key = (labels["kind"], labels["result"])
                fallbacks[key] = fallbacks.get(key, 0.0) + sample.value
            elif name == "streamtap_time_to_first_token_seconds_bucket":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif name == "streamtap_circuit_state":
                breakers[f"{labels['model']} @ {labels['upstream']}"] = int(sample.value)
            elif name == "streamtap_active_streams":
                active += sample.value
    return Totals(
        at=at,
        fallbacks=fallbacks,
        ttft_buckets=tuple(sorted(buckets.items())),
        breakers=breakers,
        active_streams=active,
        **tables,
    )


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding rank q.

    Returns None without observations; the highest finite bound when the rank falls in +Inf.

    Args:
        q: the quantile, 0..1.
        buckets: (upper bound, cumulative count), sorted, ending with +Inf.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _delta(now: Mapping[str, float], before: Mapping[str, float]) -> float:
    return sum(now.values()) - sum(before.values())


@dataclass(frozen=True)
class Snapshot:
    """The live numbers over the window between two readings.

    Args:
        at: seconds since the demo started.
        window_s: length of the window the rates cover.
        request_rate: calls finished per second.
        error_ratio: user-visible failed calls / calls (None without calls).
        attempt_error_ratio: failed upstream attempts / attempts (None without attempts).
        retry_rate: retries per second.
        fallback_rate: fallbacks tried per second.
        ttft_p50: median time to first token in the window (None without observations).
        ttft_p95: 95th percentile.
        ttft_p99: 99th percentile.
        calls: calls since the start.
        errors: failed calls since the start.
        retries: retries since the start.
        fallbacks: fallbacks that served the answer since the start.
        breaker: the worst circuit state: closed, half-open or open.
        active_streams: streams in progress now.
    """

    at: float
    window_s: float
    request_rate: float
    error_ratio: float | None
    attempt_error_ratio: float | None
    retry_rate: float
    fallback_rate: float
    ttft_p50: float | None
    ttft_p95: float | None
    ttft_p99: float | None
    calls: float
    errors: float
    retries: float
    fallbacks: float
    breaker: str
    active_streams: float


def snapshot(before: Totals, now: Totals) -> Snapshot:
    """The live numbers between `before` and `now` (a zero-length window gives zero rates).

    Args:
        before: the older reading.
        now: the newer reading.
    """
    window = now.at - before.at
    calls = now.calls - before.calls
    attempts = _delta(now.attempts, before.attempts)
    attempt_errors = now.attempts.get("error", 0.0) - before.attempts.get("error", 0.0)
    old = dict(before.ttft_buckets)
    recent = tuple((bound, count - old.get(bound, 0.0)) for bound, count in now.ttft_buckets)

    def rate(amount: float) -> float:
        return amount / window if window > 0 else 0.0

    return Snapshot(
        at=now.at,
        window_s=window,
        request_rate=rate(calls),
        error_ratio=_delta(now.request_errors, before.request_errors) / calls if calls > 0 else None,
        attempt_error_ratio=attempt_errors / attempts if attempts > 0 else None,
        retry_rate=rate(_delta(now.retries, before.retries)),
        fallback_rate=rate(sum(now.fallbacks.values()) - sum(before.fallbacks.values())),
        ttft_p50=quantile(0.5, recent),
        ttft_p95=quantile(0.95, recent),
        ttft_p99=quantile(0.99, recent),
        calls=now.calls,
        errors=sum(now.request_errors.values()),
        retries=sum(now.retries.values()),
        fallbacks=sum(v for (_, result), v in now.fallbacks.items() if result == "ok"),
        breaker=BREAKER_STATES[max(now.breakers.values(), default=0)],
        active_streams=now.active_streams,
    )

"""The demo's numbers: exact totals and window statistics from a registry filled by hand."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from streamtap._prom_metrics import metrics_for
from streamtap.demo._stats import Totals, quantile, read_totals, snapshot


def _filled() -> CollectorRegistry:
    registry = CollectorRegistry()
    m = metrics_for(registry)
    m.requests.labels("chat_completions", "gpt-4o", "ok").inc(90)
    m.requests.labels("responses", "gpt-4o", "ok").inc(6)
    m.requests.labels("chat_completions", "gpt-4o", "error").inc(4)
    m.request_errors.labels("chat_completions", "gpt-4o", "server_error").inc(3)
    m.request_errors.labels("responses", "gpt-4o", "stall").inc(1)
    m.attempts.labels("chat_completions", "gpt-4o", "ok").inc(96)
    m.attempts.labels("chat_completions", "gpt-4o", "error").inc(24)
    m.attempt_errors.labels("chat_completions", "gpt-4o", "server_error", "headers").inc(20)
    m.attempt_errors.labels("responses", "gpt-4o-mini", "rate_limited", "headers").inc(4)
    m.retries.labels("chat_completions", "gpt-4o", "server_error").inc(15)
    m.retries.labels("responses", "gpt-4o", "rate_limited").inc(5)
    m.retries_suppressed.labels("chat_completions", "gpt-4o", "budget").inc(2)
    m.fallbacks.labels("chat_completions", "gpt-4o", "model", "ok").inc(3)
    m.fallbacks.labels("responses", "gpt-4o", "model", "ok").inc(1)
    m.fallbacks.labels("chat_completions", "gpt-4o", "cache", "error").inc(2)
    m.circuit_state.labels("http://127.0.0.1:1", "gpt-4o").set(2)
    m.circuit_state.labels("http://127.0.0.1:1", "gpt-4o-mini").set(0)
    m.active_streams.labels("chat_completions").set(3)
    m.active_streams.labels("responses").set(1)
    # 10 observations: 4 at <=0.1, 4 more at <=0.25, 2 more at <=1.0.
    for value in (0.08, 0.09, 0.1, 0.1, 0.2, 0.2, 0.25, 0.25, 0.9, 1.0):
        m.ttft.labels("chat_completions", "gpt-4o").observe(value)
    return registry


def test_read_totals_sums_over_api_and_model() -> None:
    totals = read_totals(_filled(), at=12.5)
    assert totals.at == 12.5
    assert dict(totals.requests) == {"ok": 96.0, "error": 4.0}
    assert totals.calls == 100.0
    assert dict(totals.request_errors) == {"server_error": 3.0, "stall": 1.0}
    assert dict(totals.attempts) == {"ok": 96.0, "error": 24.0}
    assert dict(totals.attempt_errors) == {"server_error": 20.0, "rate_limited": 4.0}
    assert dict(totals.retries) == {"server_error": 15.0, "rate_limited": 5.0}
    assert dict(totals.suppressed) == {"budget": 2.0}
    assert dict(totals.fallbacks) == {("model", "ok"): 4.0, ("cache", "error"): 2.0}
    assert dict(totals.breakers) == {"gpt-4o @ http://127.0.0.1:1": 2, "gpt-4o-mini @ http://127.0.0.1:1": 0}
    assert totals.active_streams == 4.0
    assert totals.ttft_buckets[:6] == (
        (0.05, 0.0),
        (0.1, 4.0),
        (0.25, 8.0),
        (0.5, 8.0),
        (0.75, 8.0),
        (1.0, 10.0),
    )
    assert totals.ttft_buckets[-1] == (math.inf, 10.0)


def test_read_totals_of_an_empty_registry() -> None:
    totals = read_totals(CollectorRegistry(), at=0.0)
    assert totals == Totals(at=0.0)
    assert totals.calls == 0


def test_snapshot_from_zero_is_the_whole_run() -> None:
    stats = snapshot(Totals(at=0.0), read_totals(_filled(), at=10.0))
    assert stats.window_s == 10.0
    assert stats.request_rate == 10.0
    assert stats.error_ratio == 0.04
    assert stats.attempt_error_ratio == 0.2
    assert stats.retry_rate == 2.0
    assert stats.fallback_rate == 0.6
    # Rank 5 of 10 is the 1st of the 4 observations in (0.1, 0.25]: a quarter into it.
    assert stats.ttft_p50 == pytest.approx(0.1375)
    # Ranks 9.5 and 9.9 fall in (0.75, 1.0] (counts 8 -> 10): 75% and 95% into it.
    assert stats.ttft_p95 == pytest.approx(0.9375)
    assert stats.ttft_p99 == pytest.approx(0.9875)
    assert (stats.calls, stats.errors, stats.retries, stats.fallbacks) == (100.0, 4.0, 20.0, 4.0)
    assert stats.breaker == "open"
    assert stats.active_streams == 4.0


def test_snapshot_over_a_window_uses_the_increase() -> None:
    registry = _filled()
    before = read_totals(registry, at=10.0)
    m = metrics_for(registry)
    m.requests.labels("chat_completions", "gpt-4o", "ok").inc(15)
    m.requests.labels("chat_completions", "gpt-4o", "error").inc(5)
    m.request_errors.labels("chat_completions", "gpt-4o", "circuit_open").inc(5)
    m.attempts.labels("chat_completions", "gpt-4o", "error").inc(10)
    m.attempts.labels("chat_completions", "gpt-4o", "ok").inc(10)
    m.ttft.labels("chat_completions", "gpt-4o").observe(2.5)
    m.ttft.labels("chat_completions", "gpt-4o").observe(2.5)
    m.circuit_state.labels("http://127.0.0.1:1", "gpt-4o").set(1)
    stats = snapshot(before, read_totals(registry, at=14.0))
    assert stats.window_s == 4.0
    assert stats.request_rate == 5.0
    assert stats.error_ratio == 0.25
    assert stats.attempt_error_ratio == 0.5
    assert stats.retry_rate == 0.0
    # Both new observations are in (2.0, 3.0]: the median interpolates to the middle of it.
    assert stats.ttft_p50 == pytest.approx(2.5)
    assert stats.breaker == "half-open"
    assert stats.errors == 9.0


def test_snapshot_without_traffic_has_no_ratios() -> None:
    empty = Totals(at=5.0)
    stats = snapshot(empty, empty)
    assert (stats.request_rate, stats.error_ratio, stats.attempt_error_ratio) == (0.0, None, None)
    assert (stats.ttft_p50, stats.ttft_p95, stats.ttft_p99) == (None, None, None)
    assert stats.breaker == "closed"


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.75, 1.5), (1.0, 2.0)],
)
def test_quantile_interpolates_like_histogram_quantile(q: float, expected: float) -> None:
    buckets = ((1.0, 2.0), (2.0, 4.0), (math.inf, 4.0))
    assert quantile(q, buckets) == expected


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert quantile(0.99, ((1.0, 1.0), (5.0, 2.0), (math.inf, 10.0))) == 5.0


def test_quantile_without_observations() -> None:
    assert quantile(0.5, ()) is None
    assert quantile(0.5, ((1.0, 0.0), (math.inf, 0.0))) is None

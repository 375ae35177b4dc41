"""Recording rules: the per-job rates and ratios that alerts and dashboards share."""

from __future__ import annotations

from typing import Any

from . import _durations
from ._params import PAGE_BURN_WINDOWS, STREAM_FAILURE_TYPES, TICKET_BURN_WINDOWS, Params


def num(value: float) -> str:
    """A float as PromQL prints it best: 14.4, 0.01, 3."""
    return f"{value:.10g}"


def quantile_name(q: float) -> str:
    """0.95 -> "p95", 0.999 -> "p99_9" (metric names allow no dot)."""
    return "p" + num(q * 100).replace(".", "_")


def windows(p: Params) -> list[str]:
    """Every nominal window a request-ratio series is recorded for, shortest first."""
    names = {p.spike_window, p.baseline_window}
    for long, short, _ in PAGE_BURN_WINDOWS + TICKET_BURN_WINDOWS:
        names.update((long, short))
    return sorted(names, key=_durations.parse)


def _rate(metric: str, window: str, selector: str = "") -> str:
    return f"sum by (job) (rate({metric}{selector}[{window}]))"


def _ratio_rules(name: str, numerator: str, denominator: str) -> list[dict[str, Any]]:
    """`name` = numerator / denominator; a missing numerator (nothing ever failed) counts as 0."""
    return [
        {"record": name, "expr": f"(\n  {numerator}\n  or on (job) 0 * {denominator}\n)\n/ {denominator}"}
    ]


def recording_rules(p: Params) -> list[dict[str, Any]]:
    """The recording rules, in evaluation order (later rules read earlier ones)."""
    rules: list[dict[str, Any]] = []
    for w in windows(p):
        rw = p.d(w)
        rules += [
            {"record": f"streamtap:requests:rate{w}", "expr": _rate("streamtap_requests_total", rw)},
            {
                "record": f"streamtap:request_errors:rate{w}",
                "expr": f"{_rate('streamtap_request_errors_total', rw)}\n"
                f"or on (job) 0 * streamtap:requests:rate{w}",
            },
            {
                "record": f"streamtap:request_error_ratio:rate{w}",
                "expr": f"streamtap:request_errors:rate{w} / streamtap:requests:rate{w}",
            },
            {
                "record": f"streamtap:error_budget_burn_rate:rate{w}",
                "expr": f"streamtap:request_error_ratio:rate{w} / {num(p.error_budget)}",
            },
        ]
    for w in sorted({p.spike_window, p.baseline_window}, key=_durations.parse):
        rules += _attempt_rules(p, w)
    rules += _per_call_rules(p)
    return rules


def _attempt_rules(p: Params, w: str) -> list[dict[str, Any]]:
    """Attempt error ratios and the TTFT quantile over `w`: the spike alerts' current window
    and their baseline's."""
    rw = p.d(w)
    attempts = f"streamtap:attempts:rate{w}"
    q = p.ttft_quantile
    return [
        {"record": attempts, "expr": _rate("streamtap_attempts_total", rw)},
        {
            "record": f"streamtap:attempt_errors:rate{w}",
            "expr": f"{_rate('streamtap_attempt_errors_total', rw)}\nor on (job) 0 * {attempts}",
        },
        {
            "record": f"streamtap:attempt_error_ratio:rate{w}",
            "expr": f"streamtap:attempt_errors:rate{w} / {attempts}",
        },
        {
            "record": f"streamtap:time_to_first_token_seconds:{quantile_name(q)}_rate{w}",
            "expr": f"histogram_quantile({num(q)}, "
            f"sum by (job, le) (rate(streamtap_time_to_first_token_seconds_bucket[{rw}])))",
        },
    ]


def _per_call_rules(p: Params) -> list[dict[str, Any]]:
    """The other ratios, over the current (spike) window only."""
    w, rw = p.spike_window, p.d(p.spike_window)
    attempts = f"streamtap:attempts:rate{w}"
    requests = f"streamtap:requests:rate{w}"
    stream_types = "|".join(STREAM_FAILURE_TYPES)
    return [
        *_ratio_rules(
            f"streamtap:rate_limited_ratio:rate{w}",
            _rate("streamtap_attempt_errors_total", rw, '{error_type="rate_limited"}'),
            attempts,
        ),
        *_ratio_rules(
            f"streamtap:stream_failure_ratio:rate{w}",
            _rate("streamtap_attempt_errors_total", rw, f'{{error_type=~"{stream_types}"}}'),
            attempts,
        ),
        *_ratio_rules(
            f"streamtap:retries_per_request:rate{w}", _rate("streamtap_retries_total", rw), requests
        ),
        *_ratio_rules(
            # Calls a fallback served: a failed fallback is one of a call's tries (a call may
            # try several), and the call ends an error, which the error-rate alerts count.
            f"streamtap:fallbacks_per_request:rate{w}",
            _rate("streamtap_fallbacks_total", rw, '{result="ok"}'),
            requests,
        ),
    ]

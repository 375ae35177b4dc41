"""The overview's rows that say why: latency (time to first token, call duration, the gaps in a
stream), resilience (retries, the retries not made, fallbacks, circuit breakers) and traffic
(tokens, active streams, usage missing, telemetry errors).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from dashboards._panels import RATE, heatmap_panel, series_panel, state_panel, thresholds
from dashboards._selection import SEL, quantile, rate
from streamtap.monitoring.rules import Params


def latency_row(board: Dashboard, p: Params) -> Dashboard:
    """Time to first token as a heatmap and quantiles, with its alert's floor; call duration and chunk gaps."""
    ttft = "streamtap_time_to_first_token_seconds"
    return (
        board.with_row(Row("Latency"))
        .with_panel(
            heatmap_panel(
                "Time to first token",
                "Distribution of time to first token; exemplar dots link to the call's trace.",
                f"sum by (le) (rate({ttft}_bucket{{{SEL}}}[{RATE}]))",
                "s",
            )
        )
        .with_panel(
            series_panel(
                "Time to first token p50 / p95 / p99",
                "Call TTFT quantiles (retries included) and one attempt's p95; dashed: the TTFT alert floor.",
                [
                    (quantile(0.5, ttft), "p50"),
                    (quantile(0.95, ttft), "p95"),
                    (quantile(0.99, ttft), "p99"),
                    (quantile(0.95, "streamtap_attempt_time_to_first_token_seconds"), "attempt p95"),
                ],
                "s",
                exemplar=True,
                steps=thresholds((None, "green"), (p.ttft_floor_seconds, "red")),
            )
        )
        .with_panel(
            series_panel(
                "Request duration p95 by outcome",
                "Call duration from start to end of stream.",
                [(quantile(0.95, "streamtap_request_duration_seconds", "outcome"), "{{outcome}}")],
                "s",
                exemplar=True,
            )
        )
        .with_panel(
            series_panel(
                "Largest chunk gap p95 / p99",
                "The longest silence between content events of a stream.",
                [
                    (quantile(0.95, "streamtap_max_chunk_gap_seconds"), "p95"),
                    (quantile(0.99, "streamtap_max_chunk_gap_seconds"), "p99"),
                ],
                "s",
                exemplar=True,
            )
        )
    )


def resilience_row(board: Dashboard) -> Dashboard:
    """Retries by reason, the retries not made and why, fallbacks, and each circuit breaker's state."""
    return (
        board.with_row(Row("Resilience"))
        .with_panel(
            series_panel(
                "Retries by reason",
                "Retries per second by the error_type that caused them.",
                [(rate("streamtap_retries_total", "reason"), "{{reason}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Suppressed retries by cause",
                "Retries not made because of the retry budget, an open breaker, the deadline or max attempts.",
                [(rate("streamtap_retries_suppressed_total", "cause"), "{{cause}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Fallbacks",
                "Fallbacks per second by kind and result.",
                [(rate("streamtap_fallbacks_total", "kind, result"), "{{kind}} {{result}}")],
                "reqps",
            )
        )
        .with_panel(
            state_panel(
                "Circuit breaker state",
                "Per upstream and model: closed, half-open or open; each point shows the worst state "
                "its interval saw, so a breaker open between two points shows open.",
                # The worst state over each step, not the state at its instant: a breaker that
                # cycles open and half-open every 15 s is mostly half-open or closed at the
                # instants a wide step samples. $__rate_interval, not $__interval: it is at least
                # a scrape interval more than the step, so each point's range holds a sample
                # even when the step is no longer than the scrape interval ([$__interval] can
                # then hold none, and the timeline has holes). The price: a state may linger a
                # scrape interval after it ended (up to four at the finest zoom), erring towards
                # showing a breaker open.
                f"max by (upstream, model) (max_over_time(streamtap_circuit_state{{{SEL}}}[{RATE}]))",
                "{{upstream}} {{model}}",
            )
        )
    )


def traffic_row(board: Dashboard) -> Dashboard:
    """Tokens per second, active streams, and the streams without usage beside the recorders' failures."""
    return (
        board.with_row(Row("Traffic"))
        .with_panel(
            series_panel(
                "Tokens/s",
                "Tokens per second by type (input, output) as reported by usage.",
                [(rate("streamtap_tokens_total", "type"), "{{type}}")],
                "short",
            )
        )
        .with_panel(
            series_panel(
                "Active streams",
                "Streams currently open, by API.",
                [('sum by (api) (streamtap_active_streams{job=~"$job"})', "{{api}}")],
                "short",
            )
        )
        .with_panel(
            series_panel(
                "Usage missing and telemetry errors",
                "Streams without a usage report; recorder failures (callers were not affected).",
                [
                    (rate("streamtap_usage_missing_total"), "usage missing"),
                    (
                        f'sum(rate(streamtap_telemetry_errors_total{{job=~"$job"}}[{RATE}]))',
                        "telemetry errors",
                    ),
                ],
                "reqps",
                width=24,
            )
        )
    )

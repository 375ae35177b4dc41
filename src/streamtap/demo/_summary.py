"""The demo's closing summary: what happened, in numbers, and where to look next (pure text)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._alerts import AlertEvent
from ._stats import Totals, quantile


@dataclass(frozen=True)
class RunInfo:
    """Facts about the run the summary reports besides the metrics.

    Args:
        ran_s: seconds the traffic ran.
        duration: the planned seconds.
        interrupted: stopped by Ctrl-C (or SIGTERM) before the end.
        calls_by_door: calls the demo's callers made, by door (instrument, proxy).
        caller_errors: exceptions raised to the callers, by "door: type".
        stack_note: why alerts were or were not watched ("" when the stack ran).
        metrics_url: where this run's /metrics was served.
        external_proxy: the proxy share went to an external proxy, whose metrics are its own.
    """

    ran_s: float
    duration: float
    interrupted: bool
    calls_by_door: Mapping[str, int]
    caller_errors: Mapping[str, int]
    stack_note: str
    metrics_url: str
    external_proxy: bool = False


def _counts(table: Mapping[str, float] | Mapping[str, int]) -> str:
    items = sorted(((k, v) for k, v in table.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v:.0f}" for k, v in items) if items else "none"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _alerts(events: Sequence[AlertEvent]) -> list[str]:
    lines = []
    for name in dict.fromkeys(e.name for e in events if e.status == "firing"):
        fired = [e.at for e in events if e.name == name and e.status == "firing"]
        resolved = [e.at for e in events if e.name == name and e.status == "resolved"]
        text = f"  {name}: fired at {', '.join(f'{t:.0f}s' for t in fired)}"
        text += f", resolved at {', '.join(f'{t:.0f}s' for t in resolved)}" if resolved else ", still firing"
        lines.append(text)
    return lines


def summary(totals: Totals, events: Sequence[AlertEvent], info: RunInfo) -> str:
    """The summary text.

    Args:
        totals: the final reading of the registry.
        events: the alert events seen.
        info: the run's other facts.
    """
    how = "interrupted" if info.interrupted else "finished"
    fallbacks = {f"{kind} {result}": v for (kind, result), v in totals.fallbacks.items()}
    buckets = totals.ttft_buckets
    lines = [
        f"streamtap demo summary ({how} after {info.ran_s:.0f}s of {info.duration:.0f}s)",
        f"Calls: {totals.calls:.0f} (outcomes: {_counts(totals.requests)})",
        f"  made by the demo, by door: {_counts(info.calls_by_door)}",
        f"Errors raised to callers, by type: {_counts(totals.request_errors)}",
        f"Upstream attempt errors, by type: {_counts(totals.attempt_errors)}",
        f"Retries, by reason: {_counts(totals.retries)}",
        f"Retries suppressed, by cause: {_counts(totals.suppressed)}",
        f"Fallbacks, by kind and result: {_counts(fallbacks)}",
        f"Time to first token: p50 {_seconds(quantile(0.5, buckets))}, "
        f"p95 {_seconds(quantile(0.95, buckets))}, p99 {_seconds(quantile(0.99, buckets))}",
    ]
    if info.external_proxy:
        lines.append("  (the proxy share went to an external proxy: its calls are in that proxy's /metrics)")
    if info.caller_errors:
        lines.append(f"What the callers caught, by door: {_counts(info.caller_errors)}")
    fired = _alerts(events)
    if fired:
        lines += ["Alerts delivered by Alertmanager:", *fired]
    elif info.stack_note:
        lines.append(f"Alerts: not watched. {info.stack_note}")
    else:
        lines.append("Alerts: none fired.")
    lines += [
        "Next:",
        "  - README.md: wrap your own client with streamtap.instrument(client), or point any SDK at "
        "`streamtap proxy`",
        "  - docs/metrics.md (every metric) and docs/runbooks.md (what to do when an alert fires)",
        "  - `docker compose up`: Grafana http://localhost:3000 (the streamtap overview), "
        "Prometheus http://localhost:9090, Alertmanager http://localhost:9093",
        "  - `streamtap rules --slo 0.995` prints the alert rules for your own SLO (set the dashboard's SLO target to match)",
        f"  - this run's metrics were served on {info.metrics_url}",
    ]
    return "\n".join(lines)

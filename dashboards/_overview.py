"""The streamtap overview dashboard: one row per question (is it broken, how badly, where, why).

This module lays the dashboard out and holds its first rows (the overview's figures, the
errors, the error budget); the rows after them (latency, resilience, traffic) are in
`_overview_detail.py`, the variables and the PromQL over what they select in `_selection.py`.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, DashboardLink, Row, TimePicker
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DashboardLinkType

from dashboards._overview_detail import latency_row, resilience_row, traffic_row
from dashboards._panels import alerts_table, series_panel, stat_panel, thresholds
from dashboards._selection import SEL, quantile, rate, ratio, variables
from streamtap.monitoring.rules import PAGE_BURN_WINDOWS, STREAM_FAILURE_TYPES, TICKET_BURN_WINDOWS, Params

OVERVIEW_UID = "streamtap-overview"


def overview(p: Params | None = None) -> Dashboard:
    """The streamtap overview dashboard (the Grafana home dashboard of the stack).

    Args:
        p: alert parameters whose thresholds the panels draw; defaults to `Params()`.
    """
    p = p or Params()
    budget = p.error_budget
    req, err = "streamtap_requests_total", "streamtap_request_errors_total"
    att, att_err = "streamtap_attempts_total", "streamtap_attempt_errors_total"
    ttft = "streamtap_time_to_first_token_seconds"
    pct_steps = thresholds((None, "green"), (budget, "yellow"), (p.error_spike_floor, "red"))
    burn_windows = [w for pair in PAGE_BURN_WINDOWS + TICKET_BURN_WINDOWS for w in pair[:2]]
    burn_targets = [
        (f'streamtap:error_budget_burn_rate:rate{w}{{job=~"$job"}}', f"{{{{job}}}} {w}")
        for w in sorted(set(burn_windows), key=burn_windows.index)
    ]
    factors = sorted({f for *_, f in PAGE_BURN_WINDOWS + TICKET_BURN_WINDOWS})
    stream_types = "|".join(STREAM_FAILURE_TYPES)
    board = (
        Dashboard("streamtap overview")
        .uid(OVERVIEW_UID)
        .description(
            "OpenAI streaming calls through streamtap: traffic, errors, error budget, latency, resilience."
        )
        .tags(["streamtap", "llm", "openai"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .timepicker(TimePicker().refresh_intervals(["10s", "30s", "1m", "5m", "15m"]))
        .variables(variables(p.slo_target))
    )
    if p.runbook_base.startswith(("https://", "http://")):
        # A relative base (the default, a path in this repo) would resolve against Grafana's URL.
        board = board.link(
            DashboardLink("Runbooks")
            .type(DashboardLinkType.LINK)
            .url(p.runbook_base)
            .icon("doc")
            .target_blank(True)
        )
    board = (
        board.with_row(Row("Overview"))
        .with_panel(
            stat_panel(
                "Requests/s",
                "Calls per second, all outcomes.",
                rate(req),
                "reqps",
                thresholds((None, "blue")),
            )
        )
        .with_panel(
            stat_panel(
                "User-visible error ratio",
                "Failed calls / calls: what callers saw after retries and fallbacks.",
                ratio(err, req),
                "percentunit",
                pct_steps,
            )
        )
        .with_panel(
            stat_panel(
                "Upstream attempt error ratio",
                "Failed upstream attempts / attempts: failures that retries may be hiding.",
                ratio(att_err, att),
                "percentunit",
                thresholds(
                    (None, "green"), (p.attempt_spike_floor / 2, "yellow"), (p.attempt_spike_floor, "red")
                ),
            )
        )
        .with_panel(
            stat_panel(
                "p95 time to first token",
                "From call start to the first content delivered, retries included.",
                quantile(p.ttft_quantile, ttft),
                "s",
                thresholds(
                    (None, "green"), (p.ttft_floor_seconds, "yellow"), (2 * p.ttft_floor_seconds, "red")
                ),
            )
        )
        .with_panel(
            stat_panel(
                "Retries per request",
                "Upstream retries per call.",
                ratio("streamtap_retries_total", req),
                "short",
                thresholds(
                    (None, "green"), (p.retries_per_request / 2, "yellow"), (p.retries_per_request, "red")
                ),
            )
        )
        .with_panel(
            stat_panel(
                "Error budget remaining",
                "Share of the error budget (1 − the SLO target, $slo) left over the dashboard's time range.",
                f"1 - (sum(increase({err}{{{SEL}}}[$__range])) / sum(increase({req}{{{SEL}}}[$__range])))"
                f" / (1 - $slo)",
                "percentunit",
                thresholds((None, "red"), (0.25, "yellow"), (0.5, "green")),
            )
        )
        .with_panel(
            alerts_table(
                "Firing alerts",
                "streamtap alerts firing now for the selected jobs, and those of no job (no streamtap "
                "series at all), from the ALERTS series of this Prometheus.",
                # `|` also matches an empty job: StreamtapInstrumentationAbsent's "no streamtap
                # series at all" has none, and belongs to every selection.
                'sum by (alertname, severity, job) (ALERTS{alertname=~"Streamtap.*", alertstate="firing", '
                'job=~"$job|"})',
            )
        )
    )
    board = (
        board.with_row(Row("Errors"))
        .with_panel(
            series_panel(
                "Error ratios",
                "User-visible vs upstream attempt error ratio; dashed: the spike alert floor.",
                [(ratio(err, req), "user-visible"), (ratio(att_err, att), "upstream attempts")],
                "percentunit",
                steps=thresholds((None, "green"), (p.error_spike_floor, "red")),
            )
        )
        .with_panel(
            series_panel(
                "Errors by type",
                "User-visible failures per second by error_type.",
                [(rate(err, "error_type"), "{{error_type}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Attempt errors by phase",
                "Failed upstream attempts per second by the phase they failed in.",
                [(rate(att_err, "phase"), "{{phase}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Attempt errors by type and phase",
                "Failed upstream attempts per second.",
                [(rate(att_err, "error_type, phase"), "{{error_type}} / {{phase}}")],
                "reqps",
            )
        )
        .with_panel(
            series_panel(
                "Stalls, truncations, interruptions",
                "Attempts ending in stall, stream_truncated, stream_interrupted or first_token_timeout / "
                "attempts, by type; and each job's total of the four over 5m, the ratio "
                "StreamtapStreamFailureSurge compares with the dashed line (it fires on the sum: "
                "three types under the line each can add up above it). The total is per job, "
                "whatever the Model selection: it is the rules' recorded series.",
                [
                    (
                        f"{rate(att_err, 'error_type', f', error_type=~{chr(34)}{stream_types}{chr(34)}')}\n"
                        f"/ scalar({rate(att)})",
                        "{{error_type}}",
                    ),
                    # The recorded series the alert reads, not a sum of the lines above: those
                    # are over every selected job and the dashboard's rate interval.
                    (f'streamtap:stream_failure_ratio:rate{p.spike_window}{{job=~"$job"}}', "{{job}} total"),
                ],
                "percentunit",
                steps=thresholds((None, "green"), (p.stream_failure_ratio, "red")),
            )
        )
        .with_panel(
            series_panel(
                "Requests by outcome",
                "Calls per second by outcome (ok, error, cancelled, abandoned).",
                [(rate(req, "outcome"), "{{outcome}}")],
                "reqps",
                stacked=True,
            )
        )
    )
    board = board.with_row(Row("Error budget")).with_panel(
        series_panel(
            "Error budget burn rate",
            "Burn rate per window (1 = spending exactly the budget); dashed: the alert factors "
            + ", ".join(f"{f:g}×" for f in factors)
            + ". Per job, whatever the Model selection: these are the rules' recorded series, "
            "what StreamtapErrorBudgetBurn reads.",
            burn_targets,
            "short",
            width=24,
            steps=thresholds(
                (None, "green"),
                *[(f, c) for f, c in zip(factors, ["blue", "yellow", "orange", "red"], strict=True)],
            ),
        )
    )
    board = latency_row(board, p)
    board = resilience_row(board)
    return traffic_row(board)

"""The streamtap overview dashboard: one row per question (is it broken, how badly, where, why)."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    TextBoxVariable,
    TimePicker,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from dashboards._panels import (
    DS,
    RATE,
    alerts_table,
    heatmap_panel,
    series_panel,
    stat_panel,
    state_panel,
    thresholds,
)
from streamtap.monitoring.rules import PAGE_BURN_WINDOWS, STREAM_FAILURE_TYPES, TICKET_BURN_WINDOWS, Params

OVERVIEW_UID = "streamtap-overview"
SEL = 'job=~"$job", model=~"$model"'


def _rate(metric: str, by: str = "", extra: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({metric}{{{SEL}{extra}}}[{RATE}]))"


def _ratio(num: str, den: str, by: str = "") -> str:
    return f"{_rate(num, by)}\n/\n{_rate(den, by)}"


def _quantile(q: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))"


def _variables(slo: float) -> list[Any]:
    every = VariableOption(selected=True, text="All", value="$__all")
    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        QueryVariable("job")
        .label("Job")
        .datasource(DS)
        .query("label_values(streamtap_requests_total, job)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(every),
        QueryVariable("model")
        .label("Model")
        .datasource(DS)
        .query('label_values(streamtap_requests_total{job=~"$job"}, model)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(every),
        # Editable: a team whose rules say `streamtap rules --slo 0.995` sets the same here (or
        # generates the dashboard with `--slo`), or the budget panel reads another budget.
        TextBoxVariable("slo")
        .label("SLO target")
        .description("The SLO the alert rules were made with (streamtap rules --slo); set yours.")
        .default_value(f"{slo:g}")
        .current(VariableOption(selected=True, text=f"{slo:g}", value=f"{slo:g}")),
    ]


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
        .variables(_variables(p.slo_target))
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
                _rate(req),
                "reqps",
                thresholds((None, "blue")),
            )
        )
        .with_panel(
            stat_panel(
                "User-visible error ratio",
                "Failed calls / calls: what callers saw after retries and fallbacks.",
                _ratio(err, req),
                "percentunit",
                pct_steps,
            )
        )
        .with_panel(
            stat_panel(
                "Upstream attempt error ratio",
                "Failed upstream attempts / attempts: failures that retries may be hiding.",
                _ratio(att_err, att),
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
                _quantile(p.ttft_quantile, ttft),
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
                _ratio("streamtap_retries_total", req),
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
                [(_ratio(err, req), "user-visible"), (_ratio(att_err, att), "upstream attempts")],
                "percentunit",
                steps=thresholds((None, "green"), (p.error_spike_floor, "red")),
            )
        )
        .with_panel(
            series_panel(
                "Errors by type",
                "User-visible failures per second by error_type.",
                [(_rate(err, "error_type"), "{{error_type}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Attempt errors by phase",
                "Failed upstream attempts per second by the phase they failed in.",
                [(_rate(att_err, "phase"), "{{phase}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Attempt errors by type and phase",
                "Failed upstream attempts per second.",
                [(_rate(att_err, "error_type, phase"), "{{error_type}} / {{phase}}")],
                "reqps",
            )
        )
        .with_panel(
            series_panel(
                "Stalls, truncations, interruptions",
                "Attempts ending in stall, stream_truncated, stream_interrupted or first_token_timeout / attempts.",
                [
                    (
                        f"{_rate(att_err, 'error_type', f', error_type=~{chr(34)}{stream_types}{chr(34)}')}\n"
                        f"/ scalar({_rate(att)})",
                        "{{error_type}}",
                    )
                ],
                "percentunit",
                steps=thresholds((None, "green"), (p.stream_failure_ratio, "red")),
            )
        )
        .with_panel(
            series_panel(
                "Requests by outcome",
                "Calls per second by outcome (ok, error, cancelled, abandoned).",
                [(_rate(req, "outcome"), "{{outcome}}")],
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
            + ".",
            burn_targets,
            "short",
            width=24,
            steps=thresholds(
                (None, "green"),
                *[(f, c) for f, c in zip(factors, ["blue", "yellow", "orange", "red"], strict=True)],
            ),
        )
    )
    board = (
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
                    (_quantile(0.5, ttft), "p50"),
                    (_quantile(0.95, ttft), "p95"),
                    (_quantile(0.99, ttft), "p99"),
                    (_quantile(0.95, "streamtap_attempt_time_to_first_token_seconds"), "attempt p95"),
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
                [(_quantile(0.95, "streamtap_request_duration_seconds", "outcome"), "{{outcome}}")],
                "s",
                exemplar=True,
            )
        )
        .with_panel(
            series_panel(
                "Largest chunk gap p95 / p99",
                "The longest silence between content events of a stream.",
                [
                    (_quantile(0.95, "streamtap_max_chunk_gap_seconds"), "p95"),
                    (_quantile(0.99, "streamtap_max_chunk_gap_seconds"), "p99"),
                ],
                "s",
                exemplar=True,
            )
        )
    )
    board = (
        board.with_row(Row("Resilience"))
        .with_panel(
            series_panel(
                "Retries by reason",
                "Retries per second by the error_type that caused them.",
                [(_rate("streamtap_retries_total", "reason"), "{{reason}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Suppressed retries by cause",
                "Retries not made because of the retry budget, an open breaker, the deadline or max attempts.",
                [(_rate("streamtap_retries_suppressed_total", "cause"), "{{cause}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Fallbacks",
                "Fallbacks per second by kind and result.",
                [(_rate("streamtap_fallbacks_total", "kind, result"), "{{kind}} {{result}}")],
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
    board = (
        board.with_row(Row("Traffic"))
        .with_panel(
            series_panel(
                "Tokens/s",
                "Tokens per second by type (input, output) as reported by usage.",
                [(_rate("streamtap_tokens_total", "type"), "{{type}}")],
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
                    (_rate("streamtap_usage_missing_total"), "usage missing"),
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
    return board

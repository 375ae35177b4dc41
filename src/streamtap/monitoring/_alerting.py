"""Alerting rules: what pages (critical), what notifies (warning) and what files a ticket."""

from __future__ import annotations

from typing import Any

from . import _durations
from ._params import PAGE_BURN_WINDOWS, TICKET_BURN_WINDOWS, Params
from ._recording import num, quantile_name


def _alert(
    p: Params,
    name: str,
    expr: str,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    *,
    keep_firing: bool = False,
) -> dict[str, Any]:
    """One alerting rule; `keep_firing`: it reads the guarded `spike_window` ratios, so it keeps
    firing for `keep_firing_for` through a lapse of its condition (see `_guard`)."""
    held = {"keep_firing_for": p.d(p.keep_firing_for)} if keep_firing and _held(p) else {}
    return {
        "alert": name,
        "expr": expr,
        "for": p.d(for_),
        **held,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": p.runbook_url(name),
        },
    }


def _held(p: Params) -> bool:
    return _durations.parse(p.keep_firing_for) > 0


def _guard(p: Params, window: str) -> str:
    # Ratios over a handful of calls are noise (1 failure in 2 calls is 50%); zero calls are NaN.
    # So an alert with this guard loses its condition whenever the window holds too few calls,
    # the errors going on or not: between the bursts of a job that calls in bursts, or at each
    # quiet spell of a job near the guard. Each such alert keeps firing for `keep_firing_for`,
    # or every lapse resolved it and the next burst paged anew.
    return f"and on (job) streamtap:requests:rate{window} >= {num(p.min_request_rate)}"


def _baseline(p: Params, series: str) -> str:
    """The lowest value of a recorded `series` (a ratio or a quantile over `baseline_window`)
    among the windows that ended between `baseline_offset` and `baseline_offset +
    baseline_lookback` ago.

    The offset keeps a new incident out of its own baseline; the lookback keeps it out for that
    long, where one window shifted back by an hour would be the incident itself once the incident
    has lasted a little over an hour (the alert would resolve while callers still fail). An hour
    with no calls (NaN) is skipped; with no value at all (a new job, rules just deployed) the
    baseline is absent.
    """
    lookback, off = p.d(p.baseline_lookback), p.d(p.baseline_offset)
    return f"(min_over_time({series}[{lookback}] offset {off}) >= 0)"


def _streamtap_jobs(p: Params) -> str:
    """Every job that exported streamtap metrics within the lookback, scraped or not now.

    Read from a recording rule (one series per job, one sample per evaluation), so a day's
    lookback stays cheap. A job is known from its first call (its requests_total series are
    created with its first model), not from start-up.
    """
    return (
        f"group by (job) (present_over_time(streamtap:requests:rate{p.spike_window}[{p.d(p.job_lookback)}]))"
    )


def _targets_down(p: Params) -> str:
    """The scrape targets of streamtap jobs that are down now: StreamtapScrapeTargetDown's
    condition, before its `for:`."""
    return f'up{{job=~"{p.scrape_job_regex}"}} == 0\nand on (job) {_streamtap_jobs(p)}'


def _spike(p: Params, ratio: str, factor: float, floor: float) -> str:
    """`ratio` (a recorded series name without its window) now, against its baseline; with no
    baseline the floor alone judges (a fresh deployment)."""
    w = p.spike_window
    current = f"{ratio}:rate{w}"
    return (
        f"{current}\n"
        f"> on (job)\n"
        f"(\n"
        f"  {num(factor)} * {_baseline(p, f'{ratio}:rate{p.baseline_window}')}\n"
        f"  or on (job) 0 * streamtap:requests:rate{w}\n"
        f")\n"
        f"and on (job) {current} > {num(floor)}\n"
        f"{_guard(p, w)}"
    )


def _burn(p: Params, pairs: tuple[tuple[str, str, float], ...]) -> str:
    # No traffic guard: a job of a few calls a minute that fails burns its budget as surely as a
    # busy one, and a guard on the call rate silenced it (and restarted every `for:` at each
    # quiet spell). What keeps one failure among a few calls from paging is a count of failures
    # in the long window.
    clauses = [
        f"(\n  streamtap:error_budget_burn_rate:rate{long} > {num(factor)}\n"
        f"  and on (job) streamtap:error_budget_burn_rate:rate{short} > {num(factor)}\n"
        f"  and on (job) streamtap:request_errors:rate{long} * {num(_durations.parse(p.d(long)))}"
        f" >= {p.min_burn_errors}\n)"
        for long, short, factor in pairs
    ]
    return "\nor\n".join(clauses)


def _indent(text: str, spaces: int) -> str:
    """`text` with its lines after the first indented by `spaces`, to nest it in an expression."""
    return text.replace("\n", "\n" + " " * spaces)


def _pairs_text(p: Params, pairs: tuple[tuple[str, str, float], ...]) -> str:
    return " or ".join(f"{num(f)}× over {p.d(long)} and {p.d(short)}" for long, short, f in pairs)


def alerting_rules(p: Params) -> list[dict[str, Any]]:
    """Every streamtap alert, each with severity, summary, description and runbook_url."""
    w = p.spike_window
    rw, bw, bo = p.d(w), p.d(p.baseline_window), p.d(p.baseline_offset)
    back = _durations.fmt(
        (_durations.parse(p.baseline_offset) + _durations.parse(p.baseline_lookback)) / p.time_scale
    )
    pct = "{{ $value | humanizePercentage }}"
    job = "{{ $labels.job }}"
    budget = f"{num(p.error_budget * 100)}%"
    q = quantile_name(p.ttft_quantile)
    ttft = f"streamtap:time_to_first_token_seconds:{q}_rate{w}"
    ttft_baseline = _baseline(p, f"streamtap:time_to_first_token_seconds:{q}_rate{p.baseline_window}")
    return [
        _alert(
            p,
            "StreamtapErrorRateSpike",
            _spike(
                p,
                "streamtap:request_error_ratio",
                p.error_spike_factor,
                p.error_spike_floor,
            ),
            p.error_spike_for,
            "critical",
            f"{job}: user-visible error rate spiked to {pct}",
            f"{pct} of streamtap calls in {job} failed over the last {rw}: more than "
            f"{num(p.error_spike_factor)}× the lowest {bw} ratio of those that ended {bo} to {back} ago, and above "
            f"{num(p.error_spike_floor * 100)}%. Callers are receiving errors now.",
            keep_firing=True,
        ),
        _alert(
            p,
            "StreamtapErrorBudgetBurn",
            _burn(p, PAGE_BURN_WINDOWS),
            p.burn_page_for,
            "critical",
            f'{job}: error budget burning fast ({{{{ printf "%.1f" $value }}}}× sustainable)',
            f"{job} is burning its {budget} error budget (SLO {num(p.slo_target * 100)}%) "
            f'{{{{ printf "%.1f" $value }}}}× faster than sustainable '
            f"(page thresholds: {_pairs_text(p, PAGE_BURN_WINDOWS)}).",
        ),
        _alert(
            p,
            "StreamtapErrorBudgetBurn",
            _burn(p, TICKET_BURN_WINDOWS),
            p.burn_ticket_for,
            "ticket",
            f'{job}: error budget burning slowly ({{{{ printf "%.1f" $value }}}}× sustainable)',
            f"{job} is burning its {budget} error budget (SLO {num(p.slo_target * 100)}%) "
            f'{{{{ printf "%.1f" $value }}}}× faster than sustainable '
            f"(ticket thresholds: {_pairs_text(p, TICKET_BURN_WINDOWS)}).",
        ),
        _alert(
            p,
            "StreamtapUpstreamErrorRateSpike",
            _spike(
                p,
                "streamtap:attempt_error_ratio",
                p.attempt_spike_factor,
                p.attempt_spike_floor,
            ),
            p.attempt_spike_for,
            "warning",
            f"{job}: upstream attempt error rate spiked to {pct}",
            f"{pct} of upstream attempts in {job} failed over the last {rw}: more than "
            f"{num(p.attempt_spike_factor)}× the lowest {bw} ratio of those that ended {bo} to {back} ago, and above "
            f"{num(p.attempt_spike_floor * 100)}%. Retries and fallbacks may still hide it from callers.",
            keep_firing=True,
        ),
        _alert(
            p,
            "StreamtapRateLimited",
            f"streamtap:rate_limited_ratio:rate{w} > {num(p.rate_limited_ratio)}\n{_guard(p, w)}",
            p.rate_limited_for,
            "warning",
            f"{job}: upstream is rate limiting {pct} of attempts",
            f"{pct} of upstream attempts in {job} were answered 429 (rate_limited) over the last {rw}, "
            f"above {num(p.rate_limited_ratio * 100)}% for {p.d(p.rate_limited_for)}.",
            keep_firing=True,
        ),
        _alert(
            p,
            "StreamtapRetryStorm",
            f"streamtap:retries_per_request:rate{w} > {num(p.retries_per_request)}\n{_guard(p, w)}",
            p.retry_storm_for,
            "warning",
            f'{job}: {{{{ printf "%.2f" $value }}}} retries per call',
            f'{job} made {{{{ printf "%.2f" $value }}}} retries per call over the last {rw} '
            f"(threshold {num(p.retries_per_request)}): the upstream receives several times the call rate.",
            keep_firing=True,
        ),
        _alert(
            p,
            "StreamtapStreamFailureSurge",
            f"streamtap:stream_failure_ratio:rate{w} > {num(p.stream_failure_ratio)}\n{_guard(p, w)}",
            p.stream_failure_for,
            "warning",
            f"{job}: {pct} of attempts stalled, were truncated or interrupted",
            f"{pct} of upstream attempts in {job} ended in stall, stream_truncated, stream_interrupted "
            f"or first_token_timeout over the last {rw} (threshold {num(p.stream_failure_ratio * 100)}%).",
            keep_firing=True,
        ),
        _alert(
            p,
            "StreamtapTimeToFirstTokenDegraded",
            f"{ttft}\n> on (job) {num(p.ttft_factor)} * {ttft_baseline}\n"
            f"and on (job) {ttft} > {num(p.ttft_floor_seconds)}\n{_guard(p, w)}",
            p.ttft_for,
            "warning",
            f"{job}: {q} time to first token degraded to {{{{ $value | humanizeDuration }}}}",
            f"The {q} time to first token of {job} is {{{{ $value | humanizeDuration }}}} over the last "
            f"{rw}: more than {num(p.ttft_factor)}× its lowest {bw} value of those that ended {bo} to {back} ago, and above "
            f"{num(p.ttft_floor_seconds)}s.",
            keep_firing=True,
        ),
        _alert(
            p,
            "StreamtapCircuitOpen",
            # Open in every minute and closed in none, not `== 2` throughout: under a failing
            # upstream the breaker spends part of each cycle half-open (a probe that may take as
            # long as the first-token timeout), which would restart a `for` on `== 2`. A
            # breaker no call reaches any more goes half-open by itself after its open_for and
            # stays there, so it leaves the first condition within a minute and never pages.
            f"max_over_time(streamtap_circuit_state[{p.d('1m')}]) == 2\n"
            f"and min_over_time(streamtap_circuit_state[{p.d('1m')}]) > 0",
            p.breaker_open_for,
            "warning",
            f"{job}: circuit breaker open for {{{{ $labels.upstream }}}} {{{{ $labels.model }}}}",
            f"The circuit breaker of {job} ({{{{ $labels.instance }}}}) for upstream "
            f"{{{{ $labels.upstream }}}}, model {{{{ $labels.model }}}} has been open in every minute, "
            f"and closed in none, for more than {p.d(p.breaker_open_for)} (failed half-open probes "
            "between): calls fail fast with circuit_open or go to a fallback.",
        ),
        _alert(
            p,
            "StreamtapFallbackSurge",
            f"streamtap:fallbacks_per_request:rate{w} > {num(p.fallback_ratio)}\n{_guard(p, w)}",
            p.fallback_for,
            "warning",
            f"{job}: {pct} of calls used a fallback",
            f"{job} served {pct} of calls via a fallback (other model, other upstream, non-streaming or "
            f"cache) over the last {rw} (threshold {num(p.fallback_ratio * 100)}%).",
            keep_firing=True,
        ),
        _alert(
            p,
            "StreamtapInstrumentationAbsent",
            f"(\n  {_streamtap_jobs(p)}\n"
            f'  unless on (job) group by (job) ({{__name__=~"streamtap_.+"}})\n'
            f"  and on (job) max by (job) (up) == 1\n)\n"
            # Not while a streamtap job's target is down: a failed scrape marks its series stale,
            # so when every streamtap target is down there is no streamtap series at all, and this
            # branch (which has no job, so no inhibit rule can match it to the job) would blame
            # the install for what StreamtapScrapeTargetDown already says.
            f'or (\n  absent({{__name__=~"streamtap_.+"}})\n'
            f"  unless on () (\n    {_indent(_targets_down(p), 4)}\n  )\n)",
            p.absent_for,
            "warning",
            "streamtap metrics are missing{{ with $labels.job }} from {{ . }}{{ end }}",
            "No streamtap_* series{{ with $labels.job }} from job {{ . }}, which exported them "
            f"within the last {p.d(p.job_lookback)} and is still scraped{{{{ else }}}} in this Prometheus at all, "
            f"while no target of a job that exported them within the last {p.d(p.job_lookback)} is down"
            "{{ end }}: streamtap is not installed, not registered with the scraped registry, or its "
            "recorder was removed. Every other streamtap alert is blind meanwhile.",
        ),
        _alert(
            p,
            "StreamtapScrapeTargetDown",
            _targets_down(p),
            p.scrape_down_for,
            "warning",
            f"{job}: scrape target {{{{ $labels.instance }}}} is down",
            f"Prometheus cannot scrape {{{{ $labels.instance }}}} of job {job} for "
            f"{p.d(p.scrape_down_for)}: its metrics, and every alert on them, are blind.",
        ),
    ]

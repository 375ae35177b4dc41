"""Every number the rules use, in one frozen dataclass, so a time-compressed copy is one call away."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import _durations

# The SRE Workbook's multiwindow, multi-burn-rate pairs: (long window, short window, burn factor).
# A 14.4x burn spends 2% of a 30-day budget in 1h; 6x spends 5% in 6h; 3x 10% in 1d; 1x 10% in 3d.
PAGE_BURN_WINDOWS: tuple[tuple[str, str, float], ...] = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
TICKET_BURN_WINDOWS: tuple[tuple[str, str, float], ...] = (("1d", "2h", 3.0), ("3d", "6h", 1.0))

# The error types that mean a stream started but did not finish cleanly (or never started in time).
STREAM_FAILURE_TYPES: tuple[str, ...] = (
    "stall",
    "stream_truncated",
    "stream_interrupted",
    "first_token_timeout",
)


@dataclass(frozen=True)
class Params:
    """Parameters of the generated rules. Durations are nominal Prometheus durations.

    `time_scale` divides every duration at render time (windows, offsets, `for:`, evaluation
    interval), so `Params().compressed(60)` turns 1h into 1m for live tests. Recording-rule names
    keep their nominal window (`...:rate5m` is a 5s rate when compressed 60x), so dashboards and
    alerts refer to the same series at any scale.

    Args:
        slo_target: fraction of calls that must succeed, e.g. 0.99; the error budget is 1 - slo_target.
        evaluation_interval: rule group evaluation interval.
        time_scale: divisor applied to every duration (1 = production).
        runbook_base: URL (or repo-relative path) of docs/runbooks.md, without a #fragment;
            alert anchors are appended.
        min_request_rate: requests/s over the short window below which the ratio alerts other
            than the error budget's stay silent.
        min_burn_errors: failed calls the error budget alerts need in their long window, whatever
            the traffic: a low-traffic job that fails is paged (its burn is what it is), one
            failure among a few calls is not.
        spike_window: window of the current ratios (spikes, rate limiting, retries, fallbacks, TTFT).
        keep_firing_for: how long the alerts on those current ratios (every alert with the
            `min_request_rate` guard: the two spikes, rate limiting, retry storm, stream failures,
            TTFT, fallbacks) keep firing once their condition stops holding. Their condition
            lapses whenever `spike_window` holds too few calls (a job that calls in bursts,
            between them; a job near `min_request_rate`), not only when the errors stop, and
            without it each lapse resolved the alert and the next burst paged again. A lapse
            shorter than this keeps the alert firing; after the errors stop for good it resolves
            this much later. "0s" leaves the field out (Prometheus before 2.42 rejects it).
        baseline_window: window of the ratios (and TTFT quantiles) a spike is compared with.
        baseline_offset: how long ago the newest such window ended, so a new incident is not
            part of its own baseline.
        baseline_lookback: how far before that the baseline reaches: the baseline is the lowest
            window-long ratio among those that ended between `baseline_offset` and
            `baseline_offset + baseline_lookback` ago, so an incident is compared with the time
            before it for that long, not with its own first hour.
        error_spike_factor: the user-visible error ratio must exceed this multiple of its baseline...
        error_spike_floor: ...and this absolute ratio.
        error_spike_for: how long the spike must last before it pages.
        attempt_spike_factor: same for the upstream attempt error ratio.
        attempt_spike_floor: absolute floor for the upstream attempt error ratio.
        attempt_spike_for: `for:` of the attempt spike alert.
        burn_page_for: `for:` of the paging burn-rate alert.
        burn_ticket_for: `for:` of the ticket burn-rate alert.
        rate_limited_ratio: share of attempts answered 429 that counts as sustained rate limiting.
        rate_limited_for: how long it must be sustained.
        retries_per_request: retries per call above which retries are a storm.
        retry_storm_for: `for:` of the retry storm alert.
        stream_failure_ratio: share of attempts ending in stall/truncation/interruption/TTFT timeout.
        stream_failure_for: `for:` of the stream failure surge alert.
        ttft_quantile: the quantile of time to first token watched.
        ttft_factor: the quantile must exceed this multiple of its baseline...
        ttft_floor_seconds: ...and this absolute value.
        ttft_for: `for:` of the TTFT alert.
        breaker_open_for: how long a circuit must stay open before alerting.
        fallback_ratio: fallbacks per call above which fallbacks surge.
        fallback_for: `for:` of the fallback surge alert.
        job_lookback: how long a job that exported streamtap metrics is remembered as a streamtap
            job: StreamtapInstrumentationAbsent and StreamtapScrapeTargetDown watch these jobs, and
            keep firing this long after a job went silent or down.
        absent_for: `for:` of the instrumentation absent alert.
        scrape_job_regex: of the streamtap jobs, those whose `up == 0` pages as
            StreamtapScrapeTargetDown (and meanwhile keeps StreamtapInstrumentationAbsent's
            job-less "no streamtap series at all" silent).
        scrape_down_for: `for:` of the scrape target down alert.
    """

    slo_target: float = 0.99
    evaluation_interval: str = "1m"
    time_scale: float = 1.0
    runbook_base: str = "docs/runbooks.md"
    min_request_rate: float = 0.1
    min_burn_errors: int = 5
    spike_window: str = "5m"
    keep_firing_for: str = "15m"
    baseline_window: str = "1h"
    baseline_offset: str = "1h"
    baseline_lookback: str = "6h"
    error_spike_factor: float = 3.0
    error_spike_floor: float = 0.05
    error_spike_for: str = "2m"
    attempt_spike_factor: float = 3.0
    attempt_spike_floor: float = 0.10
    attempt_spike_for: str = "5m"
    burn_page_for: str = "2m"
    burn_ticket_for: str = "15m"
    rate_limited_ratio: float = 0.05
    rate_limited_for: str = "15m"
    retries_per_request: float = 1.0
    retry_storm_for: str = "5m"
    stream_failure_ratio: float = 0.02
    stream_failure_for: str = "5m"
    ttft_quantile: float = 0.95
    ttft_factor: float = 2.0
    ttft_floor_seconds: float = 1.0
    ttft_for: str = "10m"
    breaker_open_for: str = "2m"
    fallback_ratio: float = 0.10
    fallback_for: str = "10m"
    job_lookback: str = "1d"
    absent_for: str = "10m"
    scrape_job_regex: str = ".+"
    scrape_down_for: str = "2m"

    def __post_init__(self) -> None:
        if not 0 < self.slo_target < 1:
            raise ValueError(f"slo_target must be between 0 and 1 exclusive, got {self.slo_target!r}")
        if (
            isinstance(self.min_burn_errors, bool)
            or not isinstance(self.min_burn_errors, int)
            or self.min_burn_errors < 1
        ):
            raise ValueError(f"min_burn_errors must be an integer >= 1, got {self.min_burn_errors!r}")
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale!r}")
        if not self.runbook_base.strip():  # every alert's link would be only its #anchor
            raise ValueError("runbook_base must be the runbooks' URL or path, got an empty string")
        if "#" in self.runbook_base:  # a link with two fragments leads to neither
            raise ValueError(
                "runbook_base must not carry a #fragment: each alert's #anchor is appended to it, "
                f"got {self.runbook_base!r}"
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in self.runbook_base):
            raise ValueError(
                f"runbook_base must be a URL or path without control characters, got {self.runbook_base!r}"
            )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith(("_for", "_window", "_offset", "_interval", "_lookback")):
                try:
                    _durations.parse(value)
                except ValueError as error:
                    raise ValueError(f"{field.name}: {error}") from None

    def compressed(self, factor: float) -> Params:
        """Return a copy whose every duration is divided by `factor` (60 turns 1h into 1m).

        Args:
            factor: the time compression; multiplies the current `time_scale`.
        """
        return dataclasses.replace(self, time_scale=self.time_scale * factor)

    def d(self, nominal: str) -> str:
        """Render a nominal duration at this time scale."""
        return _durations.fmt(_durations.parse(nominal) / self.time_scale)

    @property
    def error_budget(self) -> float:
        """The allowed error ratio, 1 - slo_target."""
        return round(1 - self.slo_target, 10)

    def unreachable_burn_pairs(self) -> list[tuple[str, str, float, str]]:
        """The burn pairs (long window, short window, factor, severity) that can never fire: a burn
        rate is at most 1 / error budget (every call failing), so with an SLO of 0.9 a 14.4x pair
        never pages."""
        most = 1 / self.error_budget
        return [
            (long, short, factor, severity)
            for pairs, severity in ((PAGE_BURN_WINDOWS, "critical"), (TICKET_BURN_WINDOWS, "ticket"))
            for long, short, factor in pairs
            if factor >= most
        ]

    def runbook_url(self, alert: str) -> str:
        """The runbook section of `alert`; the anchor is the lower-cased alert name."""
        return f"{self.runbook_base}#{alert.lower()}"

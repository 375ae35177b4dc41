"""The promtool unit tests of every alert, written as readable per-minute traffic per job.

Each test group puts one job that must fire next to jobs that must stay silent (low traffic,
zero traffic, ordinary noise), so one `exp_alerts` list asserts both. Values are checked only
where every sample of the window is steady, so the tests pass whether range selectors are
closed (Prometheus 2) or left-open (Prometheus 3).

`render_tests` puts every group in one document. This module holds the groups of the ratio
alerts (rate limited, retry storm, stream failures, fallbacks), of time to first token and of
the circuit breaker; the error-rate alerts' groups are in `_testcases_errors.py`, those of the
alerts on the telemetry itself (a scrape target down, the instrumentation absent) in
`_testcases_targets.py`, and the words they are all written in in `_testkit.py`.
"""

from __future__ import annotations

from typing import Any

from . import _durations
from ._params import Params
from ._series import counter, series
from ._testcases_errors import attempt_spike, burn, bursty_error_spike, error_spike, long_error_spike
from ._testcases_targets import absent, all_down, scrape
from ._testkit import Builder, of_job, traffic

Rows = list[tuple[dict[str, str], float]]  # (labels, per minute)


def _ratio_alert(
    b: Builder,
    name: str,
    metric: str,
    fire: Rows,
    noise: Rows,
    for_minutes: int,
    value: str,
    keep_minutes: int,
    severity: str = "warning",
) -> dict[str, Any]:
    """A ratio over 60 calls (and attempts) a minute: true from 1m, firing at 1m + for.

    The job that fires then makes no call for 10 minutes (the guard fails: no ratio is judged
    over no calls), calls again with the same ratio for 10 minutes, and stops for good: it keeps
    firing through the pause and resolves `keep_minutes` after its last call left the window.
    Beside it: `noise` below the threshold, a job with 0.4 calls a minute whose ratio is far
    above it (too few calls to judge), and a job with no calls at all.
    """
    first = for_minutes + 5  # fired 4 minutes ago
    second = first + 20  # after the pause, 10 minutes of calls again
    minutes = second + keep_minutes + 10
    req = "streamtap_requests_total"
    s: list[dict[str, Any]] = []

    def calls(per_minute: float) -> str:
        return counter((first, per_minute), (10, 0), (10, per_minute), (minutes - second, 0))

    s += [of_job(req, "fire", calls(60), outcome="ok")]
    s += [of_job("streamtap_attempts_total", "fire", calls(60), result="ok")]
    s += [of_job(metric, "fire", calls(per_minute), **labels) for labels, per_minute in fire]
    s += traffic("noise", minutes, 60, attempts=True)
    s += [of_job(metric, "noise", counter((minutes, per_minute)), **labels) for labels, per_minute in noise]
    s += traffic("low", minutes, 0.4, attempts=True)
    s.append(of_job(metric, "low", counter((minutes, 2)), **fire[0][0]))
    s.append(of_job(req, "zero", counter((minutes, 0), start=9), outcome="ok"))
    s.append(of_job("streamtap_attempts_total", "zero", counter((minutes, 0), start=9), result="ok"))
    s.append(of_job(metric, "zero", counter((minutes, 0), start=3), **fire[0][0]))
    fired = [(severity, {"job": "fire"}, value)]
    # The last calls (those up to `first`, then `second`) leave the window 4 minutes later where
    # range selectors are left-open (Prometheus 3), 5 where they are closed (Prometheus 2): the
    # condition ends then, and the alert resolves `keep_minutes` after that.
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            name,
            [
                (for_minutes, []),
                (for_minutes + 1, fired),
                (first + 9, fired),  # no call for 5 minutes: held by keep_firing_for
                (second + 3 + keep_minutes, fired),
                (second + 5 + keep_minutes, []),
            ],
        ),
    }


def _err(error_type: str, phase: str = "headers") -> dict[str, str]:
    return {"error_type": error_type, "phase": phase}


def _minutes(text: str) -> int:
    return round(_durations.parse(text) / 60)


def _rate_limited_burst(b: Builder, for_minutes: int) -> dict[str, Any]:
    # 10% rate limited for 10 minutes, then none: shorter than `for:`, so never fires.
    err = "streamtap_attempt_errors_total"
    s = [
        *traffic("burst", 40, 60, attempts=True),
        of_job(err, "burst", counter((10, 6), (30, 0)), error_type="rate_limited", phase="headers"),
    ]
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case("StreamtapRateLimited", [(m, []) for m in (10, for_minutes + 1, 40)]),
    }


def _ttft(b: Builder, keep: int) -> dict[str, Any]:
    les = ("0.25", "0.5", "1", "2", "5", "+Inf")

    def hist(job: str, rows: list[tuple[int, str]], per_minute: float) -> list[dict[str, Any]]:
        # rows: (minutes, the smallest bucket the observations fall in)
        out = []
        for le in les:
            segments = [(m, per_minute if float(le) >= float(b_) else 0.0) for m, b_ in rows]
            out.append(of_job("streamtap_time_to_first_token_seconds_bucket", job, counter(*segments), le=le))
        return out

    s = [
        *traffic("degraded", 180, 60),
        *hist("degraded", [(120, "0.5"), (60, "5")], 60),
        *traffic("steady", 180, 60),
        *hist("steady", [(180, "0.5")], 60),
        *traffic("slow_baseline", 180, 60),  # always slow: no worse than its baseline
        *hist("slow_baseline", [(180, "5")], 60),
        *traffic("low", 180, 0.4),
        *hist("low", [(120, "0.5"), (60, "5")], 0.4),
        *hist("zero", [(180, "0.5")], 0),
    ]
    fired = ("warning", {"job": "degraded"}, "4.85s")
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapTimeToFirstTokenDegraded",
            # The samples end at 180m: no quantile from 184m or 185m (Prometheus 3 or 2), held
            # by keep_firing_for `keep` minutes from then.
            [(120, []), (130, []), (131, [fired]), (170, [fired]), (183 + keep, [fired]), (185 + keep, [])],
        ),
    }


def _breaker(b: Builder) -> dict[str, Any]:
    """Sampled every 15s, as a breaker moves faster than the other tests' one-minute steps."""

    def state(instance: str, values: str) -> dict[str, Any]:
        labels = {"job": "api", "instance": instance, "upstream": "api.openai.com", "model": "gpt-4o"}
        return series("streamtap_circuit_state", labels, values)

    probing = " ".join(["2 2 1 1 1"] * 10)  # open 30s, a failed 45s probe, open again, ...
    s = [
        state("open", "2x47"),
        state("probing", probing),
        state("half_open", "1x47"),
        state("idle", "2 1x46"),  # opened once, then no call came: half-open by its timer
        state("flapping", "2x7 0x39"),  # open for under 2m, then closed
        state("recovered", " ".join(["2 2 1 1 1"] * 3) + " 0x32"),  # probing for 3m45s, then closed
    ]
    labels = {"job": "api", "upstream": "api.openai.com", "model": "gpt-4o"}
    open_, probing_, recovered = (
        ("warning", {**labels, "instance": name}, "2") for name in ("open", "probing", "recovered")
    )
    return {
        "interval": "15s",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapCircuitOpen",
            [(1, []), (3, [open_, probing_, recovered]), (5, [open_, probing_]), (11, [open_, probing_])],
        ),
    }


def render_tests(p: Params, rules: dict[str, Any], rule_file: str) -> dict[str, Any]:
    """The promtool test document for the default-scale rules.

    Args:
        p: the parameters the rules were rendered with (time_scale must be 1).
        rules: `render(p)`.
        rule_file: the rule file path, relative to the test file.
    """
    if p.time_scale != 1:
        raise ValueError(f"promtool tests are written for time_scale 1, got {p.time_scale!r}")
    b = Builder(rules)
    ae = "streamtap_attempt_errors_total"
    keep = _minutes(p.keep_firing_for)
    tests = [
        error_spike(b),
        long_error_spike(b, keep),
        bursty_error_spike(b, keep),
        # The spikes' jobs here are younger than an hour: no baseline, the floor alone judges.
        _ratio_alert(
            b,
            "StreamtapErrorRateSpike",
            "streamtap_request_errors_total",
            [(_err("server_error"), 12)],
            [(_err("server_error"), 1.8)],
            _minutes(p.error_spike_for),
            "20%",
            keep,
            "critical",
        ),
        burn(b),
        attempt_spike(b),
        _ratio_alert(
            b,
            "StreamtapUpstreamErrorRateSpike",
            ae,
            [(_err("connection", "connect"), 12)],
            [(_err("connection", "connect"), 3)],
            _minutes(p.attempt_spike_for),
            "20%",
            keep,
        ),
        _ratio_alert(
            b,
            "StreamtapRateLimited",
            ae,
            [(_err("rate_limited"), 6), (_err("server_error"), 6)],
            [(_err("rate_limited"), 1.8), (_err("server_error"), 30)],
            _minutes(p.rate_limited_for),
            "10%",
            keep,
        ),
        _rate_limited_burst(b, _minutes(p.rate_limited_for)),
        _ratio_alert(
            b,
            "StreamtapRetryStorm",
            "streamtap_retries_total",
            [({"reason": "timeout"}, 90)],
            [({"reason": "timeout"}, 12)],
            _minutes(p.retry_storm_for),
            "1.50",
            keep,
        ),
        _ratio_alert(
            b,
            "StreamtapStreamFailureSurge",
            ae,
            [
                (_err("stall", "streaming"), 2),
                (_err("stream_truncated", "streaming"), 1),
                (_err("server_error"), 12),
            ],
            [(_err("first_token_timeout", "first_token"), 0.6), (_err("rate_limited"), 30)],
            _minutes(p.stream_failure_for),
            "5%",
            keep,
        ),
        _ttft(b, keep),
        _breaker(b),
        _ratio_alert(
            b,
            "StreamtapFallbackSurge",
            "streamtap_fallbacks_total",
            [({"kind": "model", "result": "ok"}, 12)],
            # Two failed fallbacks per call do not make 200% of calls served by one.
            [({"kind": "model", "result": "ok"}, 3), ({"kind": "cache", "result": "error"}, 120)],
            _minutes(p.fallback_for),
            "20%",
            keep,
        ),
        *absent(b),
        scrape(b),
        all_down(b),
    ]
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}

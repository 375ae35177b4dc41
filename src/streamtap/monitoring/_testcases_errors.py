"""The promtool tests of the error-rate alerts: the spikes against each job's own baseline
(StreamtapErrorRateSpike, StreamtapUpstreamErrorRateSpike) and the SLO's error budget burn
(StreamtapErrorBudgetBurn).
"""

from __future__ import annotations

from typing import Any

from ._series import counter
from ._testkit import Builder, of_job, traffic


def error_spike(b: Builder) -> dict[str, Any]:
    req, err = "streamtap_requests_total", "streamtap_request_errors_total"
    s = [
        *traffic("spike", 180, 60),
        of_job(err, "spike", counter((120, 0.6), (60, 30)), error_type="server_error"),
        *traffic("steady_high", 180, 60),  # 10% all along: above the floor, not above its baseline
        of_job(err, "steady_high", counter((180, 6)), error_type="server_error"),
        *traffic("low", 180, 0.4),  # from 0 to 1 failure in 2 calls per 5m: 50%, but too few calls
        of_job(err, "low", counter((120, 0), (60, 0.2)), error_type="server_error"),
        of_job(req, "zero", counter((180, 0), start=100), outcome="ok"),
        of_job(err, "zero", counter((180, 0), start=5), error_type="server_error"),
    ]
    spike = ("critical", {"job": "spike"}, "50%")
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapErrorRateSpike", [(120, []), (122, []), (125, [spike]), (170, [spike])]
        ),
    }


def long_error_spike(b: Builder, keep: int) -> dict[str, Any]:
    """0.5% for 2h, then 10% for 4h, then 0.5% again: paged throughout, resolved `keep` minutes
    (keep_firing_for) after the ratio fell back (by 364m, as the 5m window slides off the 10%)."""
    err = "streamtap_request_errors_total"
    s = [
        *traffic("long", 420, 60),
        of_job(err, "long", counter((120, 0.3), (240, 6), (60, 0.3)), error_type="server_error"),
    ]
    paged = [("critical", {"job": "long"}, "10%")]
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapErrorRateSpike",
            # By 200m a baseline of one hour shifted back by one was the incident itself.
            # Held by keep_firing_for meanwhile, at the value of its last true evaluation, which
            # depends on how a range selector's edges count (Prometheus 2 or 3): not checked.
            [(119, []), (130, paged), (200, paged), (300, paged), (359, paged), (365 + keep, [])],
        ),
    }


def _bursts(per_burst: list[float]) -> str:
    """A counter that grows by each of `per_burst` at minutes 10, 20, 30, ... and stays flat between."""
    segments: list[tuple[int, float]] = [(9, 0)]
    for amount in per_burst:
        segments += [(1, amount), (9, 0)]
    return counter(*segments)


def bursty_error_spike(b: Builder, keep: int) -> dict[str, Any]:
    """A batch job: 60 calls every 10 minutes, 12 of them failing in the bursts of 120m to 160m.

    Between two bursts the 5m window holds no call (the guard fails, the ratio is 0/0) for 5
    minutes: the alert used to resolve 5 minutes after each burst and page again 2 minutes into
    the next. It pages once and holds; after the last failing burst (160m) leaves the window
    (164m or 165m) it resolves `keep` minutes later, though clean bursts go on.
    """
    bursts = 20  # at 10m, 20m, ..., 200m
    failed = [12.0 if 120 <= 10 * (n + 1) <= 160 else 0.0 for n in range(bursts)]
    s = [
        of_job("streamtap_requests_total", "batch", _bursts([60.0] * bursts), outcome="ok"),
        of_job("streamtap_request_errors_total", "batch", _bursts(failed), error_type="server_error"),
    ]
    paged = [("critical", {"job": "batch"}, "20%")]
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapErrorRateSpike",
            [
                (121, []),
                (122, paged),
                (126, paged),  # no call in the window since 125m (Prometheus 2), 124m (3)
                (136, paged),
                (158, paged),
                (163 + keep, paged),
                (165 + keep, []),
                (200, []),  # the clean bursts fire nothing
            ],
        ),
    }


def burn(b: Builder) -> dict[str, Any]:
    err = "streamtap_request_errors_total"
    s: list[dict[str, Any]] = []
    for job, per_minute in (("fast20", 12), ("mid10", 6), ("slow4", 2.4), ("slow2", 1.2), ("ok", 0.3)):
        s += [*traffic(job, 65, 60), of_job(err, job, counter((65, per_minute)), error_type="timeout")]
    s += [
        *traffic("recovered", 65, 60),  # 20% for 30m, then healthy: the short windows reset the page
        of_job(err, "recovered", counter((30, 12), (35, 0)), error_type="timeout"),
        # A few calls a minute, half of them failing: paged once 5 have failed in the hour.
        *traffic("quiet", 65, 0.4),
        of_job(err, "quiet", counter((65, 0.2)), error_type="timeout"),
        # One failure among a few calls (at minute 30): a burn of 100x over 5m, but one failure.
        *traffic("one_failure", 65, 0.2),
        of_job(err, "one_failure", counter((30, 0), (35, 0)), error_type="timeout"),
        of_job(err, "one_failure", "0x29 1x35", error_type="auth"),
        of_job("streamtap_requests_total", "zero", counter((65, 0), start=50), outcome="ok"),
        *traffic("clean", 65, 60),  # no error series at all: the ratio is 0, not absent
    ]

    def page(job: str, v: str) -> tuple[str, dict[str, str], str]:
        return ("critical", {"job": job}, v)

    def ticket(job: str, v: str) -> tuple[str, dict[str, str], str]:
        return ("ticket", {"job": job}, v)

    pages = [page("fast20", "20.0"), page("mid10", "10.0"), page("recovered", "20.0")]
    tickets = [
        ticket(j, v)
        for j, v in (
            ("fast20", "20.0"),
            ("mid10", "10.0"),
            ("slow4", "4.0"),
            ("slow2", "2.0"),
            ("recovered", "20.0"),
        )
    ]
    later = [
        ticket(j, v)
        for j, v in (
            ("fast20", "20.0"),
            ("mid10", "10.0"),
            ("slow4", "4.0"),
            ("slow2", "2.0"),
            ("recovered", "9.2"),
        )
    ]
    quiet = [page("quiet", "50.0"), ticket("quiet", "50.0")]
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapErrorBudgetBurn",
            [
                (2, []),
                (3, pages),
                (15, pages),
                # 15m after each job's fifth failure: the slower ones got there minutes later.
                (16, pages + [t for t in tickets if t[1]["job"] not in ("slow4", "slow2")]),
                (21, pages + tickets),
                (65, [*pages[:2], *later, *quiet]),
            ],
        ),
        # A job that never failed has no error series; its ratio must be 0, not absent.
        "promql_expr_test": [
            {
                "expr": 'streamtap:request_error_ratio:rate5m{job="clean"}',
                "eval_time": "10m",
                "exp_samples": [{"labels": 'streamtap:request_error_ratio:rate5m{job="clean"}', "value": 0}],
            }
        ],
    }


def attempt_spike(b: Builder) -> dict[str, Any]:
    err = "streamtap_attempt_errors_total"
    s = [
        *traffic("spike", 180, 60, attempts=True),
        of_job(err, "spike", counter((120, 0.6), (60, 36)), error_type="connection", phase="connect"),
        *traffic("steady_high", 180, 60, attempts=True),
        of_job(err, "steady_high", counter((180, 9)), error_type="connection", phase="connect"),
        *traffic("low", 180, 0.4, attempts=True),
        of_job(err, "low", counter((120, 0), (60, 0.2)), error_type="connection", phase="connect"),
        of_job("streamtap_attempts_total", "zero", counter((180, 0), start=100), result="ok"),
        of_job(err, "zero", counter((180, 0), start=5), error_type="connection", phase="connect"),
    ]
    spike = ("warning", {"job": "spike"}, "60%")
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapUpstreamErrorRateSpike", [(120, []), (125, []), (130, [spike]), (170, [spike])]
        ),
    }

"""The promtool unit tests of every alert, written as readable per-minute traffic per job.

Each test group puts one job that must fire next to jobs that must stay silent (low traffic,
zero traffic, ordinary noise), so one `exp_alerts` list asserts both. Values are checked only
where every sample of the window is steady, so the tests pass whether range selectors are
closed (Prometheus 2) or left-open (Prometheus 3).
"""

from __future__ import annotations

from typing import Any

from . import _durations
from ._params import Params
from ._series import counter, expand, gauge, series

Expected = tuple[dict[str, str], str]  # (labels, value text)


class _Builder:
    def __init__(self, rules: dict[str, Any]) -> None:
        self._rules = {
            (r["alert"], r["labels"]["severity"]): r
            for g in rules["groups"]
            for r in g["rules"]
            if "alert" in r
        }

    def alert(self, name: str, severity: str, labels: dict[str, str], value: str) -> dict[str, Any]:
        rule = self._rules[(name, severity)]
        full = {**labels, "severity": severity}
        annotations = {k: expand(v, value, full) for k, v in rule["annotations"].items()}
        return {"exp_labels": full, "exp_annotations": annotations}

    def case(
        self, name: str, checks: list[tuple[int, list[tuple[str, dict[str, str], str]]]]
    ) -> list[dict[str, Any]]:
        """`checks`: (minute, [(severity, labels, value)]) — exactly these alerts fire then."""
        return [
            {
                "eval_time": f"{minute}m",
                "alertname": name,
                "exp_alerts": [self.alert(name, sev, labels, value) for sev, labels, value in expected],
            }
            for minute, expected in checks
        ]


M = {"api": "chat_completions", "model": "gpt-4o"}


def _c(name: str, job: str, values: str, **labels: str) -> dict[str, Any]:
    return series(name, {"job": job, **M, **labels}, values)


def _traffic(job: str, minutes: int, per_minute: float, *, attempts: bool = False) -> list[dict[str, Any]]:
    out = [_c("streamtap_requests_total", job, counter((minutes, per_minute)), outcome="ok")]
    if attempts:
        out.append(_c("streamtap_attempts_total", job, counter((minutes, per_minute)), result="ok"))
    return out


def _error_spike(b: _Builder) -> dict[str, Any]:
    req, err = "streamtap_requests_total", "streamtap_request_errors_total"
    s = [
        *_traffic("spike", 180, 60),
        _c(err, "spike", counter((120, 0.6), (60, 30)), error_type="server_error"),
        *_traffic("steady_high", 180, 60),  # 10% all along: above the floor, not above its baseline
        _c(err, "steady_high", counter((180, 6)), error_type="server_error"),
        *_traffic("low", 180, 0.4),  # from 0 to 1 failure in 2 calls per 5m: 50%, but too few calls
        _c(err, "low", counter((120, 0), (60, 0.2)), error_type="server_error"),
        _c(req, "zero", counter((180, 0), start=100), outcome="ok"),
        _c(err, "zero", counter((180, 0), start=5), error_type="server_error"),
    ]
    spike = ("critical", {"job": "spike"}, "50%")
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapErrorRateSpike", [(120, []), (122, []), (125, [spike]), (170, [spike])]
        ),
    }


def _long_error_spike(b: _Builder) -> dict[str, Any]:
    """0.5% for 2h, then 10% for 4h, then 0.5% again: paged throughout, resolved after."""
    err = "streamtap_request_errors_total"
    s = [
        *_traffic("long", 420, 60),
        _c(err, "long", counter((120, 0.3), (240, 6), (60, 0.3)), error_type="server_error"),
    ]
    paged = [("critical", {"job": "long"}, "10%")]
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapErrorRateSpike",
            # By 200m a baseline of one hour shifted back by one was the incident itself.
            [(119, []), (130, paged), (200, paged), (300, paged), (359, paged), (370, [])],
        ),
    }


def _burn(b: _Builder) -> dict[str, Any]:
    err = "streamtap_request_errors_total"
    s: list[dict[str, Any]] = []
    for job, per_minute in (("fast20", 12), ("mid10", 6), ("slow4", 2.4), ("slow2", 1.2), ("ok", 0.3)):
        s += [*_traffic(job, 65, 60), _c(err, job, counter((65, per_minute)), error_type="timeout")]
    s += [
        *_traffic("recovered", 65, 60),  # 20% for 30m, then healthy: the short windows reset the page
        _c(err, "recovered", counter((30, 12), (35, 0)), error_type="timeout"),
        # A few calls a minute, half of them failing: paged once 5 have failed in the hour.
        *_traffic("quiet", 65, 0.4),
        _c(err, "quiet", counter((65, 0.2)), error_type="timeout"),
        # One failure among a few calls (at minute 30): a burn of 100x over 5m, but one failure.
        *_traffic("one_failure", 65, 0.2),
        _c(err, "one_failure", counter((30, 0), (35, 0)), error_type="timeout"),
        _c(err, "one_failure", "0x29 1x35", error_type="auth"),
        _c("streamtap_requests_total", "zero", counter((65, 0), start=50), outcome="ok"),
        *_traffic("clean", 65, 60),  # no error series at all: the ratio is 0, not absent
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


def _attempt_spike(b: _Builder) -> dict[str, Any]:
    err = "streamtap_attempt_errors_total"
    s = [
        *_traffic("spike", 180, 60, attempts=True),
        _c(err, "spike", counter((120, 0.6), (60, 36)), error_type="connection", phase="connect"),
        *_traffic("steady_high", 180, 60, attempts=True),
        _c(err, "steady_high", counter((180, 9)), error_type="connection", phase="connect"),
        *_traffic("low", 180, 0.4, attempts=True),
        _c(err, "low", counter((120, 0), (60, 0.2)), error_type="connection", phase="connect"),
        _c("streamtap_attempts_total", "zero", counter((180, 0), start=100), result="ok"),
        _c(err, "zero", counter((180, 0), start=5), error_type="connection", phase="connect"),
    ]
    spike = ("warning", {"job": "spike"}, "60%")
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapUpstreamErrorRateSpike", [(120, []), (125, []), (130, [spike]), (170, [spike])]
        ),
    }


Rows = list[tuple[dict[str, str], float]]  # (labels, per minute)


def _ratio_alert(
    b: _Builder, name: str, metric: str, fire: Rows, noise: Rows, for_minutes: int, value: str
) -> dict[str, Any]:
    """A ratio over 60 calls (and attempts) a minute, steady from t=0: true from 1m, firing at 1m + for.

    Beside the job that fires: `noise` below the threshold, a job with 0.4 calls a minute whose
    ratio is far above it (too few calls to judge), and a job with no calls at all.
    """
    minutes = for_minutes + 20
    s: list[dict[str, Any]] = []
    for job, rows in (("fire", fire), ("noise", noise)):
        s += _traffic(job, minutes, 60, attempts=True)
        s += [_c(metric, job, counter((minutes, per_minute)), **labels) for labels, per_minute in rows]
    s += _traffic("low", minutes, 0.4, attempts=True)
    s.append(_c(metric, "low", counter((minutes, 2)), **fire[0][0]))
    s.append(_c("streamtap_requests_total", "zero", counter((minutes, 0), start=9), outcome="ok"))
    s.append(_c("streamtap_attempts_total", "zero", counter((minutes, 0), start=9), result="ok"))
    s.append(_c(metric, "zero", counter((minutes, 0), start=3), **fire[0][0]))
    fired = ("warning", {"job": "fire"}, value)
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(name, [(for_minutes, []), (for_minutes + 1, [fired]), (minutes, [fired])]),
    }


def _err(error_type: str, phase: str = "headers") -> dict[str, str]:
    return {"error_type": error_type, "phase": phase}


def _minutes(text: str) -> int:
    return round(_durations.parse(text) / 60)


def _rate_limited_burst(b: _Builder, for_minutes: int) -> dict[str, Any]:
    # 10% rate limited for 10 minutes, then none: shorter than `for:`, so never fires.
    err = "streamtap_attempt_errors_total"
    s = [
        *_traffic("burst", 40, 60, attempts=True),
        _c(err, "burst", counter((10, 6), (30, 0)), error_type="rate_limited", phase="headers"),
    ]
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case("StreamtapRateLimited", [(m, []) for m in (10, for_minutes + 1, 40)]),
    }


def _ttft(b: _Builder) -> dict[str, Any]:
    les = ("0.25", "0.5", "1", "2", "5", "+Inf")

    def hist(job: str, rows: list[tuple[int, str]], per_minute: float) -> list[dict[str, Any]]:
        # rows: (minutes, the smallest bucket the observations fall in)
        out = []
        for le in les:
            segments = [(m, per_minute if float(le) >= float(b_) else 0.0) for m, b_ in rows]
            out.append(_c("streamtap_time_to_first_token_seconds_bucket", job, counter(*segments), le=le))
        return out

    s = [
        *_traffic("degraded", 180, 60),
        *hist("degraded", [(120, "0.5"), (60, "5")], 60),
        *_traffic("steady", 180, 60),
        *hist("steady", [(180, "0.5")], 60),
        *_traffic("slow_baseline", 180, 60),  # always slow: no worse than its baseline
        *hist("slow_baseline", [(180, "5")], 60),
        *_traffic("low", 180, 0.4),
        *hist("low", [(120, "0.5"), (60, "5")], 0.4),
        *hist("zero", [(180, "0.5")], 0),
    ]
    fired = ("warning", {"job": "degraded"}, "4.85s")
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": b.case(
            "StreamtapTimeToFirstTokenDegraded", [(120, []), (130, []), (131, [fired]), (170, [fired])]
        ),
    }


def _breaker(b: _Builder) -> dict[str, Any]:
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


def _up(job: str, values: str, instance: str | None = None) -> dict[str, Any]:
    return series("up", {"job": job, "instance": instance or f"{job}:9464"}, values)


def _absent(b: _Builder) -> list[dict[str, Any]]:
    req = "streamtap_requests_total"
    day = 24 * 60
    gone = [
        # Stops exporting at 60m while still scraped: fires from 75m for as long as the job is
        # remembered (the lookback, 1d, after its last rate was recorded at 63m), then resolves.
        _c(req, "gone", counter((60, 60)), outcome="ok"),
        _up("gone", gauge((day + 100, 1))),
        _c(req, "alive", counter((day + 100, 60)), outcome="ok"),
        _up("alive", gauge((day + 100, 1))),
        _c(req, "down", counter((60, 60)), outcome="ok"),
        _up("down", gauge((60, 1), (70, 0))),
        series("streamtap_telemetry_errors_total", {"job": "idle", "instance": "idle:9464"}, gauge((130, 0))),
        _up("idle", gauge((130, 1))),
    ]
    nothing = [_up("other", gauge((20, 1)))]
    name = "StreamtapInstrumentationAbsent"
    fired = [("warning", {"job": "gone"}, "1")]
    return [
        {
            "interval": "1m",
            "input_series": gone,
            "alert_rule_test": b.case(
                name, [(60, []), (73, []), (80, fired), (130, fired), (day, fired), (day + 90, [])]
            ),
        },
        {
            "interval": "1m",
            "input_series": nothing,
            "alert_rule_test": b.case(name, [(9, []), (10, [("warning", {}, "1")])]),
        },
    ]


def _all_down(b: _Builder) -> dict[str, Any]:
    """Every streamtap target goes down at 10m: each failed scrape marks its series stale, so no
    streamtap series is left, which is StreamtapScrapeTargetDown's to say, not a missing install."""
    req = "streamtap_requests_total"
    s = [
        _c(req, "api", counter((10, 60)) + " stale", instance="a:9464", outcome="ok"),
        _c(req, "api", counter((10, 60)) + " stale", instance="b:9464", outcome="ok"),
        _up("api", gauge((10, 1), (60, 0)), "a:9464"),
        _up("api", gauge((10, 1), (60, 0)), "b:9464"),
        _c(req, "proxy", counter((10, 60)) + " stale", outcome="ok"),
        _up("proxy", gauge((10, 1), (60, 0))),
        _up("prometheus", gauge((70, 1)), "localhost:9090"),  # not streamtap's: up, and no say
    ]
    down = [
        ("warning", {"job": job, "instance": instance}, "0")
        for job, instance in (("api", "a:9464"), ("api", "b:9464"), ("proxy", "proxy:9464"))
    ]
    return {
        "interval": "1m",
        "input_series": s,
        "alert_rule_test": [
            *b.case("StreamtapScrapeTargetDown", [(11, []), (12, down), (69, down)]),
            # absent() has held since 10m; its `for:` would have run out at 20m.
            *b.case("StreamtapInstrumentationAbsent", [(25, []), (69, [])]),
        ],
    }


def _scrape(b: _Builder) -> dict[str, Any]:
    s = [
        _c("streamtap_requests_total", "api", counter((10, 60)), instance="c:9464", outcome="ok"),
        _up("api", gauge((10, 0)), "a:9464"),
        _up("api", gauge((1, 0), (9, 1)), "b:9464"),
        _up("api", gauge((10, 1)), "c:9464"),
        # Down from the start, never exported streamtap metrics: not a streamtap target.
        _up("tempo", gauge((10, 0))),
        # A streamtap job whose only target went down at 3m: still known, so it fires.
        _c("streamtap_requests_total", "proxy", counter((3, 60)), outcome="ok"),
        _up("proxy", gauge((3, 1), (7, 0))),
    ]
    a = ("warning", {"job": "api", "instance": "a:9464"}, "0")
    proxy = ("warning", {"job": "proxy", "instance": "proxy:9464"}, "0")
    return {
        "interval": "1m",
        "input_series": s,
        # `a` is down from 0m, but its job is known once its first rate is recorded at 1m.
        "alert_rule_test": b.case(
            "StreamtapScrapeTargetDown", [(2, []), (3, [a]), (4, [a]), (5, [a, proxy]), (9, [a, proxy])]
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
    b = _Builder(rules)
    ae = "streamtap_attempt_errors_total"
    tests = [
        _error_spike(b),
        _long_error_spike(b),
        _burn(b),
        _attempt_spike(b),
        _ratio_alert(
            b,
            "StreamtapRateLimited",
            ae,
            [(_err("rate_limited"), 6), (_err("server_error"), 6)],
            [(_err("rate_limited"), 1.8), (_err("server_error"), 30)],
            _minutes(p.rate_limited_for),
            "10%",
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
        ),
        _ratio_alert(
            b,
            "StreamtapStreamFailureSurge",
            ae,
            [
                (_err("stall", "streaming"), 1.8),
                (_err("stream_truncated", "streaming"), 1.2),
                (_err("server_error"), 12),
            ],
            [(_err("first_token_timeout", "first_token"), 0.6), (_err("rate_limited"), 30)],
            _minutes(p.stream_failure_for),
            "5%",
        ),
        _ttft(b),
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
        ),
        *_absent(b),
        _scrape(b),
        _all_down(b),
    ]
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}

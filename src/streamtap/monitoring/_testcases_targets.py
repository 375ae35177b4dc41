"""The promtool tests of the alerts on streamtap's telemetry itself rather than its calls: a
scrape target down (StreamtapScrapeTargetDown) and streamtap's series gone
(StreamtapInstrumentationAbsent), told apart when every target is down.
"""

from __future__ import annotations

from typing import Any

from ._series import counter, gauge, series
from ._testkit import Builder, of_job


def _up(job: str, values: str, instance: str | None = None) -> dict[str, Any]:
    return series("up", {"job": job, "instance": instance or f"{job}:9464"}, values)


def absent(b: Builder) -> list[dict[str, Any]]:
    req = "streamtap_requests_total"
    day = 24 * 60
    gone = [
        # Stops exporting at 60m while still scraped: fires from 75m for as long as the job is
        # remembered (the lookback, 1d, after its last rate was recorded at 63m), then resolves.
        of_job(req, "gone", counter((60, 60)), outcome="ok"),
        _up("gone", gauge((day + 100, 1))),
        of_job(req, "alive", counter((day + 100, 60)), outcome="ok"),
        _up("alive", gauge((day + 100, 1))),
        of_job(req, "down", counter((60, 60)), outcome="ok"),
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


def all_down(b: Builder) -> dict[str, Any]:
    """Every streamtap target goes down at 10m: each failed scrape marks its series stale, so no
    streamtap series is left, which is StreamtapScrapeTargetDown's to say, not a missing install."""
    req = "streamtap_requests_total"
    s = [
        of_job(req, "api", counter((10, 60)) + " stale", instance="a:9464", outcome="ok"),
        of_job(req, "api", counter((10, 60)) + " stale", instance="b:9464", outcome="ok"),
        _up("api", gauge((10, 1), (60, 0)), "a:9464"),
        _up("api", gauge((10, 1), (60, 0)), "b:9464"),
        of_job(req, "proxy", counter((10, 60)) + " stale", outcome="ok"),
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


def scrape(b: Builder) -> dict[str, Any]:
    s = [
        of_job("streamtap_requests_total", "api", counter((10, 60)), instance="c:9464", outcome="ok"),
        _up("api", gauge((10, 0)), "a:9464"),
        _up("api", gauge((1, 0), (9, 1)), "b:9464"),
        _up("api", gauge((10, 1)), "c:9464"),
        # Down from the start, never exported streamtap metrics: not a streamtap target.
        _up("tempo", gauge((10, 0))),
        # A streamtap job whose only target went down at 3m: still known, so it fires.
        of_job("streamtap_requests_total", "proxy", counter((3, 60)), outcome="ok"),
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

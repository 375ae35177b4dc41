"""The demo's words: alert bookkeeping, log lines, the live view and the summary."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
from rich.console import Console

from streamtap.demo._alerts import AlertEvent, AlertLog
from streamtap.demo._stats import Snapshot, Totals
from streamtap.demo._story import story
from streamtap.demo._summary import RunInfo, summary
from streamtap.demo._view import Frame, PlainView, alert_line, phase_line, render, status_line


def _alert(name: str, status: str, starts: str, severity: str = "critical") -> dict[str, object]:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": severity, "job": "streamtap"},
        "annotations": {"summary": f"{name} {status}"},
        "startsAt": starts,
    }


def test_alert_log_counts_each_firing_and_resolution_once() -> None:
    log = AlertLog()
    first = [_alert("Spike", "firing", "t1")]
    assert log.update(first, 10.0) == [AlertEvent("Spike", "firing", "critical", 10.0, "Spike firing")]
    # Alertmanager repeats the group on every notification; nothing new.
    assert log.update(first, 11.0) == []
    both = [*first, _alert("Spike", "resolved", "t1"), _alert("Burn", "firing", "t2", "ticket")]
    assert [(e.name, e.status, e.at) for e in log.update(both, 20.0)] == [
        ("Spike", "resolved", 20.0),
        ("Burn", "firing", 20.0),
    ]
    # The same alert firing again later is a new instance (a new startsAt).
    assert [e.status for e in log.update([*both, _alert("Spike", "firing", "t3")], 30.0)] == ["firing"]
    assert log.fired() == ["Spike", "Burn"]
    assert log.resolved() == ["Spike"]
    assert log.firing_now() == ["Spike", "Burn"]


def _stats() -> Snapshot:
    return Snapshot(
        at=42.0,
        window_s=10.0,
        request_rate=13.4,
        error_ratio=0.125,
        attempt_error_ratio=0.5,
        retry_rate=4.25,
        fallback_rate=1.0,
        ttft_p50=0.18,
        ttft_p95=1.5,
        ttft_p99=None,
        calls=500.0,
        errors=20.0,
        retries=80.0,
        fallbacks=12.0,
        breaker="open",
        active_streams=3.0,
    )


def _frame() -> Frame:
    phase = story(100)[1]
    event = AlertEvent("StreamtapErrorRateSpike", "firing", "critical", 41.0, "error rate spiked")
    return Frame(42.0, 100.0, phase, _stats(), (event,), ("StreamtapErrorRateSpike",), ("metrics: http://x",))


def test_status_line() -> None:
    assert status_line(_frame()) == (
        "[   42s] error_spike: 13.4 calls/s, errors 12.5% (upstream 50.0%), retries 4.2/s (80 total), "
        "fallbacks 12, ttft p50/p95/p99 0.18s/1.50s/-, breaker open, calls 500, failed 20"
    )


def test_phase_and_alert_lines() -> None:
    phase = story(100)[1]
    assert phase_line(phase) == (
        "[   20s] phase error_spike: Error-rate spike: 60% of requests get 503. Watch: retries, the retry "
        "budget running out, the breaker, the model fallback; StreamtapErrorRateSpike pages."
    )
    assert alert_line(AlertEvent("X", "resolved", "warning", 61.4, "it is over")) == (
        "[   61s] ALERT RESOLVED X (warning): it is over"
    )
    assert alert_line(AlertEvent("X", "firing", "", 3.0, "")) == "[    3s] ALERT FIRING X"


@pytest.mark.parametrize(
    ("ticks", "printed"),
    [
        pytest.param((0.0, 2.0, 4.9, 5.0, 7.0, 10.5), ["0", "5", "10"], id="every-5s"),
        # A late tick prints late, and the next line is still due at 10 s, not 5 s after it.
        pytest.param((0.0, 5.7, 9.9, 10.1, 14.0, 15.0), ["0", "6", "10", "15"], id="late-tick"),
    ],
)
def test_plain_view_prints_a_status_line_on_a_5s_grid(ticks: tuple[float, ...], printed: list[str]) -> None:
    out = io.StringIO()
    view = PlainView(out, every=5.0)
    frame = _frame()
    for elapsed in ticks:
        view.update(dataclasses.replace(frame, elapsed=elapsed))
    assert [line.split("]")[0] for line in out.getvalue().splitlines()] == [f"[{s:>5}s" for s in printed]


def test_live_view_says_when_alerts_are_not_watched() -> None:
    console = Console(record=True, width=140, file=io.StringIO())
    note = "alerts off: prometheus and alertmanager are not installed"
    console.print(render(dataclasses.replace(_frame(), alerts=(), firing=(), alerts_off=note)))
    text = console.export_text()
    assert "Alerts: not watched in this run" in text
    assert note in text
    assert "firing now" not in text


def test_live_view_shows_phase_numbers_and_alerts() -> None:
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render(_frame()))
    text = console.export_text()
    for expected in (
        "Error-rate spike: 60% of requests get 503",
        "42s / 100s",
        "12.5%",
        "50.0%",
        "open",
        "TTFT p95",
        "1.50s",
        "StreamtapErrorRateSpike",
        "firing now: StreamtapErrorRateSpike",
        "metrics: http://x",
    ):
        assert expected in text, expected


def _totals() -> Totals:
    return Totals(
        at=60.0,
        requests={"ok": 90.0, "error": 10.0},
        request_errors={"server_error": 7.0, "stall": 3.0},
        attempts={"ok": 100.0, "error": 40.0},
        attempt_errors={"server_error": 30.0, "rate_limited": 10.0},
        retries={"server_error": 25.0, "rate_limited": 9.0},
        suppressed={"budget": 4.0},
        fallbacks={("model", "ok"): 5.0, ("cache", "error"): 1.0},
        ttft_buckets=((0.1, 50.0), (1.0, 100.0), (math.inf, 100.0)),
    )


def _info(**changes: object) -> RunInfo:
    info = RunInfo(
        ran_s=60.2,
        duration=60.0,
        interrupted=False,
        calls_by_door={"instrument": 70, "proxy": 30},
        caller_errors={"instrument: server_error": 6, "proxy: HTTP 503": 4},
        stack_note="",
        metrics_url="http://127.0.0.1:9464/metrics",
    )
    return RunInfo(**{**info.__dict__, **changes})  # type: ignore[arg-type]


def test_summary_with_alerts() -> None:
    events = [
        AlertEvent("Spike", "firing", "critical", 20.0, ""),
        AlertEvent("Circuit", "firing", "warning", 22.0, ""),
        AlertEvent("Spike", "resolved", "critical", 31.0, ""),
    ]
    lines = summary(_totals(), events, _info()).splitlines()
    assert lines[:13] == [
        "streamtap demo summary (finished after 60s of 60s)",
        "Calls: 100 (outcomes: ok 90, error 10)",
        "  made by the demo, by door: instrument 70, proxy 30",
        "Errors raised to callers, by type: server_error 7, stall 3",
        "Upstream attempt errors, by type: server_error 30, rate_limited 10",
        "Retries, by reason: server_error 25, rate_limited 9",
        "Retries suppressed, by cause: budget 4",
        "Fallbacks, by kind and result: model ok 5, cache error 1",
        "Time to first token: p50 0.10s, p95 0.91s, p99 0.98s",
        "What the callers caught, by door: instrument: server_error 6, proxy: HTTP 503 4",
        "Alerts delivered by Alertmanager:",
        "  Spike: fired at 20s, resolved at 31s",
        "  Circuit: fired at 22s, still firing",
    ]
    assert lines[13] == "Next:"
    assert "  - this run's metrics were served on http://127.0.0.1:9464/metrics" in lines
    assert any("docker compose up" in line and "http://localhost:3000" in line for line in lines)


def test_summary_without_the_stack_says_why() -> None:
    text = summary(Totals(at=1.0), [], _info(interrupted=True, stack_note="No Prometheus.", ran_s=3.0))
    assert text.splitlines()[0] == "streamtap demo summary (interrupted after 3s of 60s)"
    assert "Calls: 0 (outcomes: none)" in text
    assert "Time to first token: p50 -, p95 -, p99 -" in text
    assert "Alerts: not watched. No Prometheus." in text


def test_summary_with_stack_and_no_alerts_and_an_external_proxy() -> None:
    text = summary(_totals(), [], _info(external_proxy=True))
    assert "Alerts: none fired." in text
    assert "(the proxy share went to an external proxy: its calls are in that proxy's /metrics)" in text

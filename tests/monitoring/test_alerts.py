"""The generated Prometheus rules: fresh, valid, unit-tested by promtool, documented."""

from __future__ import annotations

import subprocess
from pathlib import Path

import _repo  # noqa: F401
import pytest
import yaml
from _repo import ROOT
from alerts.generate import outputs

from conftest import require_binary
from streamtap.monitoring import _durations
from streamtap.monitoring.rules import Params, alert_names, dump, recording_names, render

ALERTS = [
    "StreamtapErrorRateSpike",
    "StreamtapErrorBudgetBurn",
    "StreamtapUpstreamErrorRateSpike",
    "StreamtapRateLimited",
    "StreamtapRetryStorm",
    "StreamtapStreamFailureSurge",
    "StreamtapTimeToFirstTokenDegraded",
    "StreamtapCircuitOpen",
    "StreamtapFallbackSurge",
    "StreamtapInstrumentationAbsent",
    "StreamtapScrapeTargetDown",
]


def _alert_rules(params: Params | None = None) -> list[dict[str, object]]:
    return [r for g in render(params)["groups"] for r in g["rules"] if "alert" in r]


def test_committed_rules_and_tests_are_fresh() -> None:
    stale = [p.name for p, text in outputs(Params()).items() if p.read_text() != text]
    assert stale == [], "run: python -m alerts.generate"


def test_alert_names() -> None:
    assert alert_names() == ALERTS


def test_recording_names() -> None:
    windows = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
    per_window = [
        f"streamtap:{kind}:rate{w}"
        for w in windows
        for kind in ("requests", "request_errors", "request_error_ratio", "error_budget_burn_rate")
    ]
    assert recording_names() == [
        *per_window,
        *[
            name
            for w in ("5m", "1h")  # the spikes' current window and their baseline's
            for name in (
                f"streamtap:attempts:rate{w}",
                f"streamtap:attempt_errors:rate{w}",
                f"streamtap:attempt_error_ratio:rate{w}",
                f"streamtap:time_to_first_token_seconds:p95_rate{w}",
            )
        ],
        "streamtap:rate_limited_ratio:rate5m",
        "streamtap:stream_failure_ratio:rate5m",
        "streamtap:retries_per_request:rate5m",
        "streamtap:fallbacks_per_request:rate5m",
    ]


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    anchors = {
        line[3:].strip().lower()
        for line in (ROOT / "docs" / "runbooks.md").read_text().splitlines()
        if line.startswith("## ")
    }
    valued = {
        "StreamtapCircuitOpen",
        "StreamtapInstrumentationAbsent",
        "StreamtapScrapeTargetDown",
    }  # their value is a constant; they name labels instead
    for rule in _alert_rules():
        name = str(rule["alert"])
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in {"critical", "warning", "ticket"}, name
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/runbooks.md has no section {name}"
        if name not in valued:
            assert "$value" in annotations["description"], name


def test_severities() -> None:
    severities = {(str(r["alert"]), r["labels"]["severity"]) for r in _alert_rules()}  # type: ignore[index]
    assert ("StreamtapErrorRateSpike", "critical") in severities
    assert ("StreamtapErrorBudgetBurn", "critical") in severities
    assert ("StreamtapErrorBudgetBurn", "ticket") in severities
    assert ("StreamtapRetryStorm", "warning") in severities
    assert len(severities) == 12


def test_runbook_base_is_configurable() -> None:
    base = "https://example.com/streamtap/blob/main/docs/runbooks.md"
    urls = {r["annotations"]["runbook_url"] for r in _alert_rules(Params(runbook_base=base))}  # type: ignore[index]
    assert f"{base}#streamtaperrorratespike" in urls


@pytest.mark.parametrize(
    ("base", "refused"),
    [
        ("https://wiki.example.com/streamtap#runbooks", "must not carry a #fragment"),
        (
            "https://wiki.example.com/runbooks.md\n- injected: true",
            "must be a URL or path without control characters",
        ),
    ],
)
def test_a_runbook_base_that_would_break_its_links_or_the_file_is_refused(base: str, refused: str) -> None:
    with pytest.raises(ValueError, match=f"^runbook_base {refused}"):
        Params(runbook_base=base)


def test_compressed_render_divides_every_duration_and_keeps_names() -> None:
    fast = Params().compressed(60)
    assert recording_names(fast) == recording_names()
    assert alert_names(fast) == alert_names()
    group = render(fast)["groups"][0]
    assert group["interval"] == "1s"
    rules = {r.get("record") or (r["alert"], r["labels"]["severity"]): r for r in group["rules"]}
    assert (
        rules["streamtap:requests:rate3d"]["expr"] == "sum by (job) (rate(streamtap_requests_total[1h12m]))"
    )
    assert rules["streamtap:requests:rate5m"]["expr"] == "sum by (job) (rate(streamtap_requests_total[5s]))"
    spike = rules[("StreamtapErrorRateSpike", "critical")]
    assert spike["for"] == "2s"
    assert "min_over_time(streamtap:request_error_ratio:rate1h[6m] offset 1m)" in spike["expr"]
    assert rules[("StreamtapErrorBudgetBurn", "ticket")]["for"] == "15s"


def test_spike_expression() -> None:
    spike = next(r for r in _alert_rules() if r["alert"] == "StreamtapErrorRateSpike")
    assert spike["expr"] == (
        "streamtap:request_error_ratio:rate5m\n"
        "> on (job)\n"
        "(\n"
        "  3 * (min_over_time(streamtap:request_error_ratio:rate1h[6h] offset 1h) >= 0)\n"
        "  or on (job) 0 * streamtap:requests:rate5m\n"
        ")\n"
        "and on (job) streamtap:request_error_ratio:rate5m > 0.05\n"
        "and on (job) streamtap:requests:rate5m >= 0.1"
    )


GUARDED = {
    "StreamtapErrorRateSpike",
    "StreamtapUpstreamErrorRateSpike",
    "StreamtapRateLimited",
    "StreamtapRetryStorm",
    "StreamtapStreamFailureSurge",
    "StreamtapTimeToFirstTokenDegraded",
    "StreamtapFallbackSurge",
}


@pytest.mark.parametrize(("params", "held"), [(Params(), "15m"), (Params().compressed(60), "15s")])
def test_the_alerts_on_guarded_ratios_keep_firing_through_a_lapse(params: Params, held: str) -> None:
    """Exactly the alerts whose condition lapses when the spike window holds too few calls (the
    `min_request_rate` guard) keep firing through it; the budget burn, the breaker and the
    telemetry alerts do not: their conditions end when what they watch ends."""
    rules = _alert_rules(params)
    guard = f"streamtap:requests:rate5m >= {params.min_request_rate:g}"
    assert {str(r["alert"]) for r in rules if guard in str(r["expr"])} == GUARDED
    assert {str(r["alert"]): r.get("keep_firing_for") for r in rules} == {
        str(r["alert"]): held if r["alert"] in GUARDED else None for r in rules
    }
    # Rendered after `for:`, as Prometheus documents the fields.
    spike = next(r for r in rules if r["alert"] == "StreamtapErrorRateSpike")
    assert list(spike)[:4] == ["alert", "expr", "for", "keep_firing_for"]


def test_keep_firing_for_zero_leaves_the_field_out() -> None:
    """For a Prometheus older than 2.42, which rejects the field."""
    assert all("keep_firing_for" not in r for r in _alert_rules(Params(keep_firing_for="0s")))
    assert {r.get("keep_firing_for") for r in _alert_rules(Params(keep_firing_for="10m"))} == {"10m", None}
    with pytest.raises(ValueError, match=r"^keep_firing_for: bad unit in duration '15'"):
        Params(keep_firing_for="15")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (4320, "1h12m"), (259200, "3d"), (0.5, "500ms"), (5, "5s"), (86400 / 60, "24m")],
)
def test_durations(seconds: float, text: str) -> None:
    assert _durations.fmt(seconds) == text
    assert _durations.parse(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5x", "m5", "1h5"])
def test_bad_durations_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        _durations.parse(bad)


def test_bad_params_are_named() -> None:
    with pytest.raises(ValueError, match="slo_target must be between 0 and 1"):
        Params(slo_target=99)
    with pytest.raises(ValueError, match="min_burn_errors must be an integer >= 1, got 0"):
        Params(min_burn_errors=0)
    with pytest.raises(ValueError, match="time_scale must be positive"):
        Params(time_scale=0)
    with pytest.raises(ValueError, match=r"^spike_window: bad unit in duration '5 minutes'"):
        Params(spike_window="5 minutes")


@pytest.mark.integration
def test_promtool_checks_the_rules() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", "alerts/streamtap.rules.yml"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(recording_names()) + len(_alert_rules())} rules found" in result.stdout


@pytest.mark.integration
def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    promtool = require_binary("promtool")
    tests = yaml.safe_load((ROOT / "alerts" / "tests" / "streamtap_test.yml").read_text())
    covered = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])}
    assert covered == set(ALERTS)
    # Every alert is asserted firing somewhere and silent at an earlier time (before its `for:`).
    for name in ALERTS:
        cases = [c for t in tests["tests"] for c in t.get("alert_rule_test", []) if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in cases), name
        assert any(not c["exp_alerts"] for c in cases), name
    result = subprocess.run(
        [promtool, "test", "rules", "alerts/tests/streamtap_test.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_compressed_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    path = tmp_path / "fast.rules.yml"
    path.write_text(dump(render(Params().compressed(60))))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

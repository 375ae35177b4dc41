"""The generated Grafana dashboard: fresh, fixed uid, the panels the issue asks for, real metric names."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import _repo  # noqa: F401
import pytest
from _repo import ROOT
from dashboards.generate import render
from dashboards.queries import DEFAULTS, panel_queries, substitute

from conftest import require_binary
from streamtap.monitoring._series import counter, gauge, series
from streamtap.monitoring.rules import STREAM_FAILURE_TYPES, Params, dump, recording_names
from streamtap.monitoring.rules import render as render_rules

OVERVIEW = ROOT / "dashboards" / "streamtap-overview.json"

# DESIGN.md's metric table; histograms are queried through their _bucket series.
CONTRACT = {
    "streamtap_requests_total",
    "streamtap_request_errors_total",
    "streamtap_attempts_total",
    "streamtap_attempt_errors_total",
    "streamtap_retries_total",
    "streamtap_retries_suppressed_total",
    "streamtap_fallbacks_total",
    "streamtap_circuit_state",
    "streamtap_time_to_first_token_seconds_bucket",
    "streamtap_attempt_time_to_first_token_seconds_bucket",
    "streamtap_request_duration_seconds_bucket",
    "streamtap_max_chunk_gap_seconds_bucket",
    "streamtap_tokens_total",
    "streamtap_usage_missing_total",
    "streamtap_active_streams",
    "streamtap_telemetry_errors_total",
}


def _model() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(OVERVIEW.read_text())
    return model


def test_committed_json_is_fresh() -> None:
    assert {name: (ROOT / "dashboards" / name).read_text() for name in render()} == render(), (
        "run: python -m dashboards.generate"
    )


def test_runbooks_link_only_to_an_absolute_runbook_url() -> None:
    assert _model().get("links", []) == []  # the default base is a path in this repo
    url = "https://example.com/streamtap/docs/runbooks.md"
    (board,) = (json.loads(text) for text in render(Params(runbook_base=url)).values())
    assert [(link["title"], link["url"]) for link in board["links"]] == [("Runbooks", url)]


def test_uid_title_and_variables() -> None:
    model = _model()
    assert model["uid"] == "streamtap-overview"
    assert model["title"] == "streamtap overview"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "model", "slo"]
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["query"] == "label_values(streamtap_requests_total, job)"
    assert variables["model"]["query"] == 'label_values(streamtap_requests_total{job=~"$job"}, model)'
    assert (variables["slo"]["type"], variables["slo"]["query"]) == ("textbox", "0.99")
    assert "hide" not in variables["slo"]  # a team with another SLO sets its own


def test_the_slo_comes_from_the_rules_slo() -> None:
    """Generated for rules made with `streamtap rules --slo 0.995`, the budget panel reads a 0.5%
    budget, as the alerts do."""
    (text,) = render(Params(slo_target=0.995)).values()
    variables = {v["name"]: v for v in json.loads(text)["templating"]["list"]}
    assert variables["slo"]["query"] == variables["slo"]["current"]["value"] == "0.995"


def test_panels() -> None:
    titles = [p["title"] for p in _model()["panels"] if p["type"] != "row"]
    assert titles == [
        "Requests/s",
        "User-visible error ratio",
        "Upstream attempt error ratio",
        "p95 time to first token",
        "Retries per request",
        "Error budget remaining",
        "Firing alerts",
        "Error ratios",
        "Errors by type",
        "Attempt errors by phase",
        "Attempt errors by type and phase",
        "Stalls, truncations, interruptions",
        "Requests by outcome",
        "Error budget burn rate",
        "Time to first token",
        "Time to first token p50 / p95 / p99",
        "Request duration p95 by outcome",
        "Largest chunk gap p95 / p99",
        "Retries by reason",
        "Suppressed retries by cause",
        "Fallbacks",
        "Circuit breaker state",
        "Tokens/s",
        "Active streams",
        "Usage missing and telemetry errors",
    ]


def test_every_target_uses_the_datasource_variable() -> None:
    for panel in _model()["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_ttft_heatmap_shows_exemplars() -> None:
    heatmap = next(p for p in _model()["panels"] if p["type"] == "heatmap")
    assert heatmap["title"] == "Time to first token"
    (target,) = heatmap["targets"]
    assert target["exemplar"] is True
    assert target["format"] == "heatmap"
    assert heatmap["options"]["calculate"] is False


def test_burn_rate_panel_draws_the_alert_factors() -> None:
    panel = next(p for p in _model()["panels"] if p["title"] == "Error budget burn rate")
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 1, 3, 6, 14.4]
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "dashed"}


def test_queries_use_only_contract_metrics_and_recorded_series() -> None:
    known = CONTRACT | set(recording_names()) | {"ALERTS"}
    used = {
        name
        for _, expr in panel_queries(OVERVIEW)
        for name in re.findall(r"\b(streamtap[_:][a-z0-9_:]+|ALERTS)\b", expr)
    }
    assert used - known == set()
    # Every contract metric is on the dashboard.
    assert CONTRACT - used == set()


def test_panel_queries_substitutes_every_variable() -> None:
    queries = panel_queries(OVERVIEW)
    assert len(queries) == 38
    assert all("$" not in expr for _, expr in queries)
    assert queries[0] == (
        "Requests/s",
        'sum (rate(streamtap_requests_total{job=~".*", model=~".*"}[1m]))',
    )
    budget = dict(queries)["Error budget remaining"]
    assert budget == (
        '1 - (sum(increase(streamtap_request_errors_total{job=~".*", model=~".*"}[1h]))'
        ' / sum(increase(streamtap_requests_total{job=~".*", model=~".*"}[1h]))) / (1 - 0.99)'
    )


def test_panel_queries_overrides() -> None:
    queries = panel_queries(OVERVIEW, {"__rate_interval": "4s", "job": "demo"})
    assert queries[0][1] == 'sum (rate(streamtap_requests_total{job=~"demo", model=~".*"}[4s]))'


def test_substitute() -> None:
    assert substitute("x[${__range}] ${job:regex} $model", {"__range": "1h", "job": "a", "model": "b"}) == (
        "x[1h] a b"
    )
    with pytest.raises(KeyError, match=r"dashboard variable \$nope has no value"):
        substitute("$nope")


def _expr(title: str) -> str:
    (target,) = next(p for p in _model()["panels"] if p["title"] == title)["targets"]
    expr: str = target["expr"]
    return expr


def test_breaker_panel_shows_the_worst_state_of_each_step() -> None:
    assert _expr("Circuit breaker state") == (
        "max by (upstream, model) "
        '(max_over_time(streamtap_circuit_state{job=~"$job", model=~"$model"}[$__rate_interval]))'
    )


def test_firing_alerts_follow_the_job_variable_and_keep_job_less_alerts() -> None:
    assert 'job=~"$job|"' in _expr("Firing alerts")


def _promtool(
    tmp_path: Path,
    interval: str,
    inputs: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    *,
    rules: bool = False,
) -> None:
    """Run `checks` (promql_expr_test entries) under promtool against `inputs` sampled every
    `interval`; with `rules`, streamtap's rules evaluate too (their recorded series, ALERTS)."""
    promtool = require_binary("promtool")
    if rules:
        (tmp_path / "streamtap.rules.yml").write_text(dump(render_rules()))
    tests = {
        "rule_files": ["streamtap.rules.yml"] if rules else [],
        "evaluation_interval": interval,
        "tests": [{"interval": interval, "input_series": inputs, "promql_expr_test": checks}],
    }
    (tmp_path / "panels_test.yml").write_text(dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", "panels_test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _concrete(title: str, **values: str) -> str:
    return substitute(_expr(title), {**DEFAULTS, **values})


def _targets(title: str, **values: str) -> list[str]:
    panel = next(p for p in _model()["panels"] if p["title"] == title)
    return [substitute(t["expr"], {**DEFAULTS, **values}) for t in panel["targets"]]


def test_stream_failure_panel_draws_the_ratio_its_alert_fires_on() -> None:
    panel = next(p for p in _model()["panels"] if p["title"] == "Stalls, truncations, interruptions")
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, Params().stream_failure_ratio]
    assert [(t["expr"], t["legendFormat"]) for t in panel["targets"]][1] == (
        'streamtap:stream_failure_ratio:rate5m{job=~"$job"}',
        "{{job}} total",
    )


@pytest.mark.integration
def test_stream_failures_under_the_line_each_are_over_it_in_total(tmp_path: Path) -> None:
    """1%, 0.7% and 0.6% of attempts stall, are truncated, are interrupted: each type's line is
    under the 2% threshold, StreamtapStreamFailureSurge fires on their 2.3%, and the panel's
    total line shows it over the threshold (and a quiet job's under it)."""
    labels = {"api": "chat_completions", "model": "gpt-4o"}
    inputs = []
    for job, share in (("api", 1.0), ("quiet", 0.1)):
        inputs += [
            series("streamtap_requests_total", {"job": job, **labels, "outcome": "ok"}, counter((40, 600))),
            series("streamtap_attempts_total", {"job": job, **labels, "result": "ok"}, counter((40, 600))),
        ]
        inputs += [
            series(
                "streamtap_attempt_errors_total",
                {"job": job, **labels, "error_type": error_type, "phase": "streaming"},
                counter((40, per_minute * share)),
            )
            for error_type, per_minute in (
                ("stall", 6),
                ("stream_truncated", 4.2),
                ("stream_interrupted", 3.6),
            )
        ]
    assert {"stall", "stream_truncated", "stream_interrupted"} <= set(STREAM_FAILURE_TYPES)
    by_type, total = _targets("Stalls, truncations, interruptions")
    threshold = Params().stream_failure_ratio
    at = "20m"
    _promtool(
        tmp_path,
        "1m",
        inputs,
        [
            {"expr": f"count(({by_type}) >= {threshold})", "eval_time": at, "exp_samples": []},
            {
                "expr": f"round(({total}) * 10000)",  # in basis points
                "eval_time": at,
                "exp_samples": [
                    {"labels": '{job="api"}', "value": 230},
                    {"labels": '{job="quiet"}', "value": 23},
                ],
            },
            {
                "expr": f"({total}) > bool {threshold}",
                "eval_time": at,
                "exp_samples": [
                    {"labels": '{job="api"}', "value": 1},
                    {"labels": '{job="quiet"}', "value": 0},
                ],
            },
            {
                "expr": 'ALERTS{alertname="StreamtapStreamFailureSurge", alertstate="firing"}',
                "eval_time": at,
                "exp_samples": [
                    {
                        "labels": 'ALERTS{alertname="StreamtapStreamFailureSurge", alertstate="firing", '
                        'job="api", severity="warning"}',
                        "value": 1,
                    }
                ],
            },
        ],
        rules=True,
    )


@pytest.mark.integration
def test_breaker_panel_reads_open_at_any_instant_of_a_cycling_breaker(tmp_path: Path) -> None:
    """Open 30 s, half-open 45 s, over and over (15 s samples): at a 1m step the panel reads open
    even at the instants the breaker is half-open."""
    labels = {"job": "a", "instance": "a:9464", "upstream": "api.openai.com", "model": "gpt-4o"}
    expr = _concrete("Circuit breaker state", __rate_interval="1m")
    opened = [{"labels": '{model="gpt-4o", upstream="api.openai.com"}', "value": 2}]
    _promtool(
        tmp_path,
        "15s",
        [series("streamtap_circuit_state", labels, " ".join(["2 2 1 1 1"] * 8))],
        [{"expr": expr, "eval_time": t, "exp_samples": opened} for t in ("2m", "3m15s", "4m45s")],
    )


@pytest.mark.integration
def test_alerts_table_lists_the_selected_jobs_and_the_job_less(tmp_path: Path) -> None:
    firing = {"alertstate": "firing", "severity": "warning"}
    a, b = ({"alertname": "StreamtapCircuitOpen", "job": job} for job in ("a", "b"))
    none = {"alertname": "StreamtapInstrumentationAbsent"}

    def rows(*alerts: dict[str, str]) -> list[dict[str, Any]]:
        labels = ({**alert, "severity": "warning"} for alert in alerts)
        return [
            {"labels": "{" + ", ".join(f'{k}="{v}"' for k, v in x.items()) + "}", "value": 1} for x in labels
        ]

    _promtool(
        tmp_path,
        "1m",
        [series("ALERTS", {**alert, **firing}, gauge((10, 1))) for alert in (a, b, none)],
        [
            {"expr": _concrete("Firing alerts", job="a"), "eval_time": "5m", "exp_samples": rows(a, none)},
            # All, and several jobs, as Grafana writes them into a regex.
            {"expr": _concrete("Firing alerts"), "eval_time": "5m", "exp_samples": rows(a, b, none)},
            {
                "expr": _concrete("Firing alerts", job="(a|c)"),
                "eval_time": "5m",
                "exp_samples": rows(a, none),
            },
        ],
    )

"""docs/runbooks.md keeps its promise that every query is per `job`: each PromQL line of its
Diagnose blocks runs under promtool, with the rules, against two jobs' worth of every streamtap
series, and must return something, every sample of it labelled with its job."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import _repo  # noqa: F401
import pytest
from _repo import ROOT

from conftest import require_binary
from streamtap.monitoring._series import counter, gauge, series
from streamtap.monitoring.rules import dump, render

RUNBOOKS = ROOT / "docs" / "runbooks.md"
MINUTES = 80  # one sample a minute; the queries are evaluated at the end
M = {"api": "chat_completions", "model": "gpt-4o"}


def _queries() -> list[tuple[str, str]]:
    """(alert section, query) for every line of every ```promql block."""
    out, section, block = [], "", False
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.strip() == "```promql":
            block = True
        elif line.strip() == "```":
            block = False
        elif block and line.strip():
            out.append((section, line.strip()))
    return out


def _job(job: str) -> list[dict[str, Any]]:
    """Every streamtap series a job exports, each moving, with a failing upstream and an open breaker."""

    def c(name: str, per_minute: float, **labels: str) -> dict[str, Any]:
        return series(
            name, {"job": job, "instance": f"{job}:9464", **M, **labels}, counter((MINUTES, per_minute))
        )

    s = [
        c("streamtap_requests_total", 54, outcome="ok"),
        c("streamtap_requests_total", 6, outcome="error"),
        c("streamtap_request_errors_total", 6, error_type="server_error"),
        c("streamtap_attempts_total", 60, result="ok"),
        c("streamtap_attempts_total", 12, result="error"),
        c("streamtap_attempt_errors_total", 6, error_type="rate_limited", phase="headers"),
        c("streamtap_attempt_errors_total", 6, error_type="stall", phase="streaming"),
        c("streamtap_retries_total", 12, reason="rate_limited"),
        c("streamtap_retries_suppressed_total", 1, cause="budget"),
        c("streamtap_fallbacks_total", 3, kind="model", result="ok"),
        c("streamtap_tokens_total", 600, type="output"),
        series(
            "streamtap_circuit_state",
            {"job": job, "instance": f"{job}:9464", "upstream": "api.openai.com", "model": "gpt-4o"},
            gauge((MINUTES, 2)),
        ),
        series("up", {"job": job, "instance": f"{job}:9464"}, gauge((MINUTES, 1))),
        # A second target, down for the last 10 minutes.
        series("up", {"job": job, "instance": f"{job}-2:9464"}, gauge((MINUTES - 10, 1), (10, 0))),
    ]
    for histogram in (
        "streamtap_time_to_first_token_seconds",
        "streamtap_attempt_time_to_first_token_seconds",
        "streamtap_max_chunk_gap_seconds",
    ):
        s += [
            c(f"{histogram}_bucket", per_minute, le=le)
            for le, per_minute in (("0.5", 30), ("2", 54), ("+Inf", 60))
        ]
    return s


def test_every_alert_section_has_queries() -> None:
    sections = [line[3:].strip() for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")]
    assert {section for section, _ in _queries()} == set(sections)


@pytest.mark.integration
def test_every_runbook_query_runs_and_keeps_its_job(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    (tmp_path / "rules.yml").write_text(dump(render()))
    at = f"{MINUTES - 1}m"
    checks = []
    for _, query in _queries():
        checks += [
            # Something to show, so the next check is not vacuous.
            {"expr": f"group({query})", "eval_time": at, "exp_samples": [{"labels": "{}", "value": 1}]},
            # No sample without a job: an aggregation that drops it merges every job's numbers.
            {
                "expr": f'count(({query}) unless on (job) group by (job) ({{job=~".+"}}))',
                "eval_time": at,
                "exp_samples": [],
            },
        ]
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _job("a") + _job("b"), "promql_expr_test": checks}],
    }
    (tmp_path / "runbooks_test.yml").write_text(dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", "runbooks_test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    # promtool names the failing expression; map it back to its runbook section for the reader.
    output = result.stdout + result.stderr
    failing = [section for section, query in _queries() if "(" + query.replace('"', '\\"') + ")" in output]
    assert result.returncode == 0, f"sections {failing}:\n{result.stdout}{result.stderr}"

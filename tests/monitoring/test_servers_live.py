"""The live-server helpers work: a real Prometheus scrapes fake streamtap series, evaluates the
time-compressed rules, and an always-firing alert reaches a webhook through a real Alertmanager."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _repo  # noqa: F401
import pytest
import yaml
from _repo import ROOT
from dashboards.queries import panel_queries
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from servers import Prometheus, WebhookReceiver, free_port, run_alertmanager, run_prometheus

from streamtap.monitoring.rules import Params, dump, render

OVERVIEW = ROOT / "dashboards" / "streamtap-overview.json"

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALWAYS = {
    "groups": [
        {
            "name": "always",
            "rules": [
                {
                    "alert": "AlwaysFiring",
                    "expr": "vector(1)",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "proves the notification path"},
                }
            ],
        }
    ]
}


@pytest.fixture
def exporter() -> Iterator[str]:
    """A prometheus_client exporter on 127.0.0.1 whose streamtap_* counters keep growing."""
    registry = CollectorRegistry()
    labels = ["api", "model", "outcome"]
    requests = Counter("streamtap_requests", "calls", labels, registry=registry)
    errors = Counter(
        "streamtap_request_errors", "failed calls", ["api", "model", "error_type"], registry=registry
    )
    # Attempts that never fail nor retry: streamtap_attempt_errors_total and streamtap_retries_total
    # have no series at all, as in a process that has seen no failure yet.
    attempts = Counter("streamtap_attempts", "attempts", ["api", "model", "result"], registry=registry)
    ttft = Histogram(
        "streamtap_time_to_first_token_seconds",
        "ttft",
        ["api", "model"],
        registry=registry,
        buckets=(0.25, 0.5, 1, 2, 5),
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    stop = threading.Event()

    def traffic() -> None:
        # 20 calls a second, 1 in 10 failing: bounded by the test's lifetime.
        n = 0
        while not stop.wait(0.05):
            n += 1
            requests.labels("chat_completions", "gpt-4o", "ok" if n % 10 else "error").inc()
            attempts.labels("chat_completions", "gpt-4o", "ok").inc()
            if n % 10 == 0:
                errors.labels("chat_completions", "gpt-4o", "server_error").inc()
            ttft.labels("chat_completions", "gpt-4o").observe(0.3, exemplar={"trace_id": f"{n:032x}"})

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        worker.join(5)
        server.shutdown()
        server.server_close()
        thread.join(5)


def _wait_exemplars(prom: Prometheus, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Exemplar storage is on: the OpenMetrics exemplars of the TTFT histogram are queryable."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        query = urllib.parse.urlencode(
            {"query": "streamtap_time_to_first_token_seconds_bucket", "start": now - 60, "end": now}
        )
        data: Any = prom.get(f"/api/v1/query_exemplars?{query}")
        if data:
            result: list[dict[str, Any]] = data
            return result
        time.sleep(0.2)
    raise TimeoutError("no exemplars stored")


def test_prometheus_alertmanager_and_webhook(tmp_path: Path, exporter: str) -> None:
    rules = tmp_path / "streamtap.rules.yml"
    rules.write_text(dump(render(Params().compressed(60))))
    always = tmp_path / "always.rules.yml"
    always.write_text(yaml.safe_dump(ALWAYS))
    with (
        WebhookReceiver() as hook,
        run_alertmanager(tmp_path / "am", hook.url) as am,
        run_prometheus(
            tmp_path / "prom", [exporter], rule_files=[rules, always], alertmanager=am.address
        ) as prom,
    ):
        up = prom.wait_for('up{job="streamtap"} == 1')
        assert [s["metric"]["instance"] for s in up] == [exporter]
        # 5m compressed 60x is a 5s window: a few scrapes in, the recorded ratio is ~10%. Its
        # first values can be off (two scrapes with no failure between them, on a slow machine):
        # a wrong rule never gets there, and the timeout's error shows the last value.
        prom.wait_for(
            'streamtap:request_error_ratio:rate5m{job="streamtap"}',
            lambda result: bool(result) and 0.05 < float(result[0]["value"][1]) < 0.15,
            timeout=60,
        )
        exemplars = _wait_exemplars(prom)
        assert {e["labels"]["trace_id"] for e in exemplars[0]["exemplars"]} <= {
            f"{n:032x}" for n in range(10_000)
        }
        groups = prom.get("/api/v1/rules")["groups"]
        assert {g["name"]: g["interval"] for g in groups} == {"streamtap": 1, "always": 1}
        # Every dashboard query parses and runs against the real Prometheus.
        for _title, expr in panel_queries(OVERVIEW, {"__rate_interval": "5s", "__range": "1m"}):
            prom.query(expr)  # raises with Prometheus' error and the expression
        queries = dict(panel_queries(OVERVIEW, {"__rate_interval": "5s"}))
        assert float(prom.query(queries["Requests/s"])[0]["value"][1]) > 0
        for healthy in ("Upstream attempt error ratio", "Retries per request"):
            # Nothing failed nor retried: 0, where the bare ratio read "No data".
            assert [float(s["value"][1]) for s in prom.query(queries[healthy])] == [0.0], healthy
        hook.wait_for(lambda alerts: any(a["labels"]["alertname"] == "AlwaysFiring" for a in alerts))
        firing = [a for a in hook.alerts() if a["labels"]["alertname"] == "AlwaysFiring"]
        assert firing[0]["status"] == "firing"
        assert firing[0]["labels"]["severity"] == "critical"
        assert firing[0]["annotations"] == {"summary": "proves the notification path"}

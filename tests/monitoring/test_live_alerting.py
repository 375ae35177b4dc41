"""The acceptance of the monitoring: a real app streams through streamtap against the fake
upstream; a real Prometheus scrapes it with the time-compressed rules; an injected error spike
fires StreamtapErrorRateSpike, a real Alertmanager delivers it to our webhook, and it resolves
after recovery. Every dashboard panel's query runs against that Prometheus and returns data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _repo  # noqa: F401
import pytest
from _repo import ROOT
from dashboards.queries import panel_queries
from servers import WebhookReceiver, run_alertmanager, run_prometheus

from streamtap.monitoring.rules import Params, dump, render

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPRESS = 60  # 1h of rule time per minute: the spike window is 5 s, its `for:` 2 s
RUN_S, SPIKE_START_S, SPIKE_END_S = 75.0, 15.0, 40.0


@pytest.fixture
def app() -> Iterator[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("_traffic_app.py")),
            str(RUN_S),
            str(SPIKE_START_S),
            str(SPIKE_END_S),
        ],
        stdout=subprocess.PIPE,
        text=True,
        # Spans still record (for exemplars); there is just no collector here to export them to.
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("metrics on "), line
        yield f"127.0.0.1:{line.split()[-1]}"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _states(alerts: list[dict[str, Any]], name: str) -> list[str]:
    return [a["status"] for a in alerts if a["labels"]["alertname"] == name]


def test_error_spike_pages_and_resolves(app: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(dump(render(Params().compressed(COMPRESS))))
    started = time.monotonic()
    with (
        WebhookReceiver() as webhook,
        run_alertmanager(tmp_path / "am", webhook.url) as alertmanager,
        run_prometheus(
            tmp_path / "prom", [app], rule_files=[rules], alertmanager=alertmanager.address
        ) as prometheus,
    ):
        webhook.wait_for(
            lambda n: "firing" in _states(n, "StreamtapErrorRateSpike"), timeout=SPIKE_END_S + 20
        )
        fired_at = time.monotonic() - started
        assert fired_at > SPIKE_START_S  # not before the incident

        # Mid-incident every panel has something to show: run each query for real.
        empty = []
        for title, expr in panel_queries(
            ROOT / "dashboards" / "streamtap-overview.json", {"__rate_interval": "5s", "__range": "1m"}
        ):
            result = prometheus.query(expr)  # raises on a query error
            if not result:
                empty.append((title, expr))
        assert empty == []

        webhook.wait_for(lambda n: "resolved" in _states(n, "StreamtapErrorRateSpike"), timeout=RUN_S)
        alert = next(a for a in webhook.alerts() if a["labels"]["alertname"] == "StreamtapErrorRateSpike")
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook_url"].endswith("#streamtaperrorratespike")
    assert time.monotonic() - started < 170

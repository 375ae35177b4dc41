"""exposition.py runs and reports, per models served and scrape, both apps' positive times and
the exposition's size, which grows with the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _bench import run_json

ROOT = Path(__file__).resolve().parents[2]


def test_every_scrape_is_answered_and_timed() -> None:
    report = run_json("exposition.py", "--models=1,3", "--calls=1", "--chunks=2", "--repeats=2", timeout=120)
    rows = report["rows"]
    assert [(row["models"], row["scrape"]) for row in rows] == [
        (1, "openmetrics"),
        (1, "text"),
        (3, "openmetrics"),
        (3, "text"),
    ]
    for row in rows:
        assert row["prometheus_client_ms"] > 0 and row["streamtap_ms"] > 0
        if row["scrape"] == "openmetrics":  # the gzipped one: level 1 (streamtap's), 9 (prometheus_client's)
            fast, small = row["gzip"]["1"], row["gzip"]["9"]
            assert fast["ms"] > 0 and 0 < small["bytes"] <= fast["bytes"]
        else:
            assert row["gzip"] is None
    for scrape in ("openmetrics", "text"):
        one, three = (row for row in rows if row["scrape"] == scrape)
        assert three["lines"] > one["lines"] and three["bytes"] > one["bytes"]


def test_no_models_is_refused_by_name() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "exposition.py"), "--models=0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--models must be at least 1, got 0" in done.stderr

"""The in-process proxy path benchmark runs and relays every stream whole.

Only the shape and the sanity of the output are asserted; its timings are read from a full
run in docs/benchmarks.md, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    script = str(ROOT / "benchmarks" / "proxy_path.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=120)


def test_every_contender_relays_every_stream_whole_and_is_timed() -> None:
    done = _run("--rounds", "6", "--warmup", "2", "--chunks", "4", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["rounds"], result["chunks"]) == (6, 4)
    assert list(result["contenders"]) == ["none", "prometheus", "otel-noop", "telemetry"]
    for name, entry in result["contenders"].items():
        assert entry["contents"] == [4], name  # every round relayed all 4 content events
        for what in ("first", "whole"):
            stats = entry[what]
            assert 0 < stats["median"] <= stats["p90"], name
            assert ("paired_vs_none" in stats) is (name != "none"), name
        assert entry["first"]["median"] < entry["whole"]["median"], name


def test_the_markdown_table_names_every_contender() -> None:
    done = _run("--rounds", "2", "--warmup", "0", "--chunks", "2", "--contenders", "none,telemetry")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| proxy")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| proxy, no recorders",
        "| proxy, all telemetry (Prometheus, OTel traces and metrics)",
    ]
    assert rows[0].count("—") == 2  # the baseline has no paired difference to itself


def test_an_unknown_contender_is_refused_with_the_accepted_names() -> None:
    done = _run("--contenders", "none,nope")
    assert done.returncode == 2
    assert "'nope' is not one of none, prometheus, otel-noop, telemetry" in done.stderr

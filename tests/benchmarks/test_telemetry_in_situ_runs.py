"""The in-situ telemetry benchmark runs and times every recorder of every call it reads.

Only the shape of the output is asserted; its timings are read in docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_recorder_is_timed_for_every_event(mode: str) -> None:
    script = str(ROOT / "benchmarks" / "telemetry_in_situ.py")
    done = subprocess.run(
        [sys.executable, script, "--mode", mode, "--chunks", "3", "--calls", "4", "--warmup", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"chat {mode}, 3 chunks a stream, 4 calls: ")
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]) for line in lines[3:-1]}
    for recorder in ("_SpanCall", "_MetricsCall", "_PromCall"):
        for event in ("AttemptStarted", "FirstToken", "AttemptFinished", "CallFinished"):
            assert (recorder, event) in rows, (recorder, event)
    assert ("every recorder", "start_call") in rows
    assert lines[-1].startswith("| all | | ")

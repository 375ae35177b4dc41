"""loopback_send.py runs and reports a positive CPU time per write for every case."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="loopback_send.py needs two CPUs")
def test_every_case_reports_a_cost_per_write() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "loopback_send.py"), "--messages=20", "--repeats=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines()[2:]]
    assert [row[1].strip() for row in rows] == [
        "other CPU, idle receiver",
        "same CPU, idle receiver",
        "other CPU, back to back",
    ]
    for row in rows:
        assert float(row[2]) > 0

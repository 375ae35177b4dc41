"""The proxy memory benchmark runs, reads every stream whole and reports the proxy's RSS.

Only the shape of the output is asserted; its figures are read in docs/benchmarks.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_stream_is_read_whole_and_the_rss_reported() -> None:
    script = str(ROOT / "benchmarks" / "proxy_memory.py")
    done = subprocess.run(
        [sys.executable, script, "--streams", "3", "--chunks", "50", "--gap", "0.001"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert re.fullmatch(
        r"3 streams x 50 chunks \(\d+ MiB relayed, 3 streams whole, \d+ s\): "
        r"proxy RSS idle \d+ MiB, peak \d+ MiB \(\+\d+\), after \d+ MiB",
        line,
    ), line

"""`scripts/stutter.py` stops a process for the pause asked, and ends when the process does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STUTTER = Path(__file__).resolve().parents[1] / "scripts" / "stutter.py"

# Reports the largest step of its monotonic clock between two reads, over 2 s.
WATCHER = """
import time
end = time.monotonic() + 2.0
last = time.monotonic()
largest = 0.0
while last < end:
    now = time.monotonic()
    largest = max(largest, now - last)
    last = now
print(largest)
"""


def test_the_process_sees_its_time_jump_by_the_pause_and_stutter_ends_with_it() -> None:
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER], stdout=subprocess.PIPE, text=True)
    stutter = subprocess.Popen(
        [sys.executable, str(STUTTER), str(watcher.pid), "--pause", "0.4", "--every", "0.1", "0.2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, _ = watcher.communicate(timeout=30)  # reaped here: stutter then finds it gone
        _, err = stutter.communicate(timeout=10)  # long before its own 600 s limit
    finally:
        watcher.kill()
        stutter.kill()
    assert float(out) >= 0.4
    assert stutter.returncode == 0
    assert err.startswith(f"stopped process {watcher.pid} ")


def test_bad_arguments_name_the_flag_and_what_it_accepts() -> None:
    done = subprocess.run(
        [sys.executable, str(STUTTER), "1", "--every", "2", "1"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "--every needs 0 <= MIN <= MAX, got 2.0 1.0" in done.stderr

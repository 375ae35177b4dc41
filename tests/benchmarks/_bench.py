"""Run a benchmark script as a user would and read its `--json` report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_json(script: str, *args: str, timeout: float) -> Any:
    """`benchmarks/<script> <args> --json` from the repository's root; fails on a non-zero exit."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)

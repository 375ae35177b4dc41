"""A typed application meets the public API as documented: mypy --strict accepts it, types intact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a cold mypy cache reads the whole openai package
def test_a_typed_application_gets_the_sdks_types() -> None:
    # The project's mypy settings and cache (./scripts/test runs mypy first, so it is warm);
    # MYPYPATH makes the checked streamtap this checkout's, whatever is installed.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "tests/typed/public_api.py"],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

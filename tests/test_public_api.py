"""The public API as an application meets it: what `import streamtap` loads and lists, and the
types mypy --strict infers for a typed application."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A fresh interpreter: in this one, other tests have already loaded the lazy names.
_IMPORT = """
import json, pydoc, sys
import streamtap
listed = dir(streamtap)
print(json.dumps({
    "all": streamtap.__all__,
    "dir": listed,
    "loaded": sorted({name.split(".")[0] for name in sys.modules} | {n for n in sys.modules if n.startswith("streamtap.")}),
    "help": pydoc.render_doc(streamtap, renderer=pydoc.plaintext),
}))
"""


def test_import_is_light_and_lists_exactly_the_public_names() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(result.stdout)
    # The proxy, the CLI, the fake and telemetry load on first use, not for a library user.
    heavy = {"prometheus_client", "opentelemetry", "uvicorn", "click", "rich", "yaml"}
    heavy |= {"streamtap._proxy", "streamtap._cli", "streamtap.fake", "streamtap._telemetry"}
    assert heavy.isdisjoint(found["loaded"])
    public = [name for name in found["dir"] if not name.startswith("__")]
    assert public == sorted(name for name in found["all"] if not name.startswith("__"))
    # help(streamtap) lists the lazily imported functions too (listing them loads them).
    assert "setup_telemetry(" in found["help"]
    assert "serve_metrics(" in found["help"]


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

"""Run `streamtap demo` in a subprocess, as a user would, with a clean environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping

DEMO = [sys.executable, "-c", "from streamtap._cli import main; main()", "demo"]


def demo_env(extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment without keys, STREAMTAP_* flags or OTel exporters that would change the run."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STREAMTAP_", "OPENAI_", "OTEL_")) and k != "COLUMNS"
    }
    return {**env, **extra}


def run_demo(
    *args: str, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the demo to its end; `timeout` bounds it (TimeoutExpired fails the test)."""
    return subprocess.run(
        [*DEMO, *args],
        env=demo_env() if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def summary_counts(stdout: str, label: str) -> dict[str, int]:
    """The `name count, ...` pairs of a summary line such as 'Retries, by reason:'."""
    line = next(line for line in stdout.splitlines() if line.startswith(label))
    rest = line[len(label) :].strip()
    if rest == "none":
        return {}
    return {m.group(1).strip(): int(m.group(2)) for m in re.finditer(r"([^,]+?) (\d+)(?:,|$)", rest)}

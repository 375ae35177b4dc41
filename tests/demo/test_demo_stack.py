"""`streamtap demo` with a real Prometheus and Alertmanager: the error-rate spike pages.

The demo compresses the rules 60x for runs up to four minutes: StreamtapErrorRateSpike looks
at a 5 s window and fires after 2 s (`for: 2m` / 60), so the 8 s spike of a 40 s story fires
it and Alertmanager delivers it to the demo's webhook (group_wait 1 s).
"""

from __future__ import annotations

import re

import pytest

from conftest import require_binary
from streamtap.monitoring._servers import ALERTMANAGER_NAMES, PROMETHEUS_NAMES
from streamtap.monitoring.rules import Params, render

from ._run_demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_rules_fit_a_forty_second_story() -> None:
    rules = {
        r["alert"]: r for g in render(Params().compressed(60))["groups"] for r in g["rules"] if "alert" in r
    }
    assert rules["StreamtapErrorRateSpike"]["for"] == "2s"
    # Held 15 s after its condition last held: a 40 s story ends before it resolves (the default
    # four-minute one resolves it about 20 s after its spike).
    assert rules["StreamtapErrorRateSpike"]["keep_firing_for"] == "15s"
    assert "streamtap:request_error_ratio:rate5m > 0.05" in rules["StreamtapErrorRateSpike"]["expr"]


def test_demo_with_the_stack_delivers_the_error_rate_spike() -> None:
    require_binary(*PROMETHEUS_NAMES)
    require_binary(*ALERTMANAGER_NAMES)
    done = run_demo(
        "--no-ui", "--duration", "40", "--seed", "1", "--metrics-port", "0", "--stack", timeout=90
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(
        r"^Prometheus http://127\.0\.0\.1:\d+ \(rules 60x faster\), Alertmanager http://", out, re.MULTILINE
    )
    fired = re.search(r"^\[ *(\d+)s\] ALERT FIRING StreamtapErrorRateSpike \(critical\): ", out, re.MULTILINE)
    assert fired, out[-4000:]
    # The spike is the story's 20-40% (8-16 s): the page comes with it, not before.
    assert 8 <= int(fired.group(1)) <= 40
    assert "Alerts delivered by Alertmanager:" in out
    assert re.search(r"^  StreamtapErrorRateSpike: fired at \d+s", out, re.MULTILINE)

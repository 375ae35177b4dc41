"""`streamtap demo` end to end in a subprocess: the story runs, stops by itself, and summarises."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from streamtap import PrometheusRecorder
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeConfig, FakeUpstream

from ._run_demo import DEMO, demo_env, run_demo, summary_counts

pytestmark = pytest.mark.slow


def test_short_demo_runs_the_story_and_prints_the_summary() -> None:
    started = time.monotonic()
    done = run_demo("--no-ui", "--duration", "20", "--seed", "1", "--metrics-port", "0", timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 90
    out = done.stdout
    assert "Traceback" not in done.stderr
    assert "streamtap demo summary (finished after 20s of 20s)" in out
    for phase in ("steady", "error_spike", "rate_limit_storm", "stalls_and_drops", "recovery"):
        assert f"phase {phase}:" in out
    calls = int(re.search(r"^Calls: (\d+) ", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert calls > 0
    assert sum(summary_counts(out, "Retries, by reason:").values()) >= 1
    assert sum(summary_counts(out, "Errors raised to callers, by type:").values()) >= 1
    doors = summary_counts(out, "  made by the demo, by door:")
    assert doors["instrument"] > 0 and doors["proxy"] > 0
    # Every call the demo made (both doors) is in the one registry it served.
    assert calls == doors["instrument"] + doors["proxy"]


def test_real_without_a_key_exits_2_with_a_message() -> None:
    done = run_demo("--real", "--no-ui", "--metrics-port", "0", timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("streamtap demo: --real needs an API key: set OPENAI_API_KEY")
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("sigint", ["terminal", "background-job"])
def test_ctrl_c_prints_the_summary_and_exits_130(sigint: str) -> None:
    # A script's background job starts with SIGINT ignored: `kill -INT` let the demo run on to
    # its end and exit 0.
    handler = signal.SIG_DFL if sigint == "terminal" else signal.SIG_IGN
    process = subprocess.Popen(
        [*DEMO, "--no-ui", "--duration", "60", "--metrics-port", "0", "--no-stack"],
        env=demo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, handler),
    )
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        metrics_url = ""
        for line in process.stdout:
            if line.startswith("metrics: "):
                metrics_url = line.split()[1]
            # The first status line after 5 s (a loaded machine may print it at "[    6s]").
            status = re.match(r"\[\s*(\d+)s\] steady: ", line)
            if status and int(status.group(1)) >= 5:
                break
        else:
            raise AssertionError(
                f"the demo ended before its first steady status line: {process.stderr.read()}"
            )
        assert metrics_url, "the demo printed no metrics: line"
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            exposition = response.read().decode()
        assert 'streamtap_requests_total{api="chat_completions",model="gpt-4o",outcome="ok"}' in exposition
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)
    finally:
        watchdog.cancel()
        process.kill()
    assert process.returncode == 130, errors[-3000:]
    assert re.search(r"^streamtap demo summary \(interrupted after \d+s of 60s\)$", rest, re.MULTILINE)
    assert "Traceback" not in errors


def test_external_upstream_and_proxy_as_in_docker_compose() -> None:
    registry = CollectorRegistry()
    with FakeUpstream(FakeConfig(chunks=5)) as fake:
        base_url = fake.base_url
        proxy = ProxyServer(
            ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", shutdown_grace=1),
            recorders=[PrometheusRecorder(registry)],
        ).start()
        try:
            done = run_demo(
                "--no-ui",
                "--duration",
                "20",
                "--base-url",
                base_url,
                "--proxy-url",
                proxy.base_url,
                "--metrics-addr",
                "0.0.0.0",
                "--metrics-port",
                "0",
                "--no-stack",
                timeout=60,
            )
        finally:
            proxy.stop(5)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "phase steady: Steady traffic to an external upstream." in out
    assert f"upstream: the upstream at {base_url}; proxy: {proxy.base_url}" in out
    assert "(the proxy share went to an external proxy: its calls are in that proxy's /metrics)" in out
    doors = summary_counts(out, "  made by the demo, by door:")
    proxied = sum(
        s.value for m in registry.collect() for s in m.samples if s.name == "streamtap_requests_total"
    )
    assert proxied == doors["proxy"] > 0
    # Without injected faults nothing fails: the demo's own registry saw only its direct calls.
    assert re.search(
        rf"^Calls: {doors['instrument']} \(outcomes: ok {doors['instrument']}\)$", out, re.MULTILINE
    )

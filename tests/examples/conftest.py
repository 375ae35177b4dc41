"""Run the examples as their users would: subprocesses pointed at the fake upstream over loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamtap.fake import FakeConfig, FakeUpstream

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BIN = Path(sys.executable).parent
# Every subprocess of these tests ends within this many seconds or the test fails.
TIMEOUT_S = 30.0


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(chunks=20)) as upstream:
        yield upstream


def example_env(base_url: str, **extra: str) -> dict[str, str]:
    """The caller's environment with the SDK pointed at `base_url` and no stray telemetry config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "OTEL_", "STREAMTAP_")) and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-example-test", **extra)
    return env


def run(args: Sequence[str], env: dict[str, str], cwd: Path = EXAMPLES) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess that is stopped (SIGTERM, then SIGKILL) whatever the test did."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: Path = EXAMPLES) -> None:
        self.process = subprocess.Popen(
            list(args), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.output = ""

    def wait_http(self, url: str) -> None:
        """Poll `url` until it answers; fail with the server's output if it never does."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                httpx2.get(url, timeout=1.0)
                return
            except httpx2.TransportError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"{url} never answered; server output:\n{self.output}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT_S)
        assert self.process.stdout is not None
        self.output += self.process.stdout.read()
        self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition, or None when absent."""
    for family in text_string_to_metric_families(exposition):
        for metric in family.samples:
            if metric.name == name and metric.labels == labels:
                return float(metric.value)
    return None

"""examples/node/sidecar.mjs: the official OpenAI Node SDK through `streamtap proxy`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_binary
from streamtap.fake import FakeUpstream

from .conftest import BIN, EXAMPLES, Server, example_env, free_port, run

pytestmark = pytest.mark.integration

PROMPT = "Say hi."
MESSAGES = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/node with its locked dependencies installed (npm cache in the tmp dir)."""
    require_binary("node")
    npm = require_binary("npm")
    root = tmp_path_factory.mktemp("node")
    app = root / "app"
    shutil.copytree(EXAMPLES / "node", app, ignore=shutil.ignore_patterns("node_modules"))
    installed = subprocess.run(
        [npm, "ci", "--cache", str(root / "npm-cache"), "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return app


@pytest.fixture
def proxy(fake: FakeUpstream) -> Iterator[str]:
    """`streamtap proxy` in front of the fake upstream, as a sidecar runs it; yields its base URL."""
    port = free_port()
    args = [str(BIN / "streamtap"), "proxy", "--upstream", fake.base_url, "--listen", f"127.0.0.1:{port}"]
    # No collector here: without these a stop would wait out the OTLP exporters' timeout.
    env = example_env(fake.base_url, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    with Server(args, env) as server:
        server.wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}/v1"


def test_node_sdk_gets_the_whole_answer_through_a_retried_503(
    node_example: Path, proxy: str, fake: FakeUpstream
) -> None:
    fake.enqueue("status=503", "")

    result = run(["node", "sidecar.mjs", PROMPT], example_env(proxy), cwd=node_example)

    assert result.returncode == 0, result.stderr
    assert result.stdout == fake.expected_text(model="gpt-4o-mini", messages=MESSAGES) + "\n"
    assert [r.status for r in fake.requests] == [503, 200]


def test_node_sdk_throws_when_the_stream_breaks_after_the_first_token(
    node_example: Path, proxy: str, fake: FakeUpstream
) -> None:
    fake.enqueue("drop_after=2")

    result = run(["node", "sidecar.mjs", PROMPT], example_env(proxy), cwd=node_example)

    delivered = "".join(fake.expected_pieces(model="gpt-4o-mini", messages=MESSAGES)[:2])
    assert result.returncode == 1
    assert result.stdout == delivered + "\n"
    assert result.stderr.startswith("stream failed: APIError: streamtap: stream_interrupted: "), result.stderr
    assert len(fake.requests) == 1

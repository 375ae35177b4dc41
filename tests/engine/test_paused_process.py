"""A process paused while its streams wait (SIGSTOP: a CPU-throttled container, a laptop asleep,
a VM migrated) finds, when it runs again, each read's deadline passed and the bytes that came
meanwhile waiting in the socket. The event loop ran the deadline first (uvloop runs timers
before it polls; asyncio delivered the cancellation before the woken read), so every healthy
stream failed as a stall and the breaker opened for everyone. Bytes waiting are no stall."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from streamtap.fake import FakeConfig, FakeUpstream

PAUSE = 1.5  # seconds stopped, three times the idle timeout
IDLE = 0.5

_CLIENT = """
import sys, anyio, openai, streamtap
client = streamtap.instrument(
    openai.AsyncOpenAI(base_url=sys.argv[1], api_key="sk-test", max_retries=0),
    policy=streamtap.Policy(max_attempts=1, idle_timeout=float(sys.argv[3])),
)
async def main():
    pieces = 0
    async with client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for _ in stream:
            pieces += 1
            if pieces == 3:
                print("paused now", flush=True)
    print("ok", flush=True)
try:
    anyio.run(main, backend_options={"use_uvloop": sys.argv[2] == "uvloop"})
except Exception as error:
    print(type(error).__name__, error, flush=True)
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(chunks=40, gap=0.05)) as fake:
        yield fake


def _pause(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE)
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_async_client_paused_mid_stream_gets_the_whole_answer(upstream: FakeUpstream, loop: str) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT, upstream.base_url, loop, str(IDLE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "paused now"
        time.sleep(0.02)  # its next read waits
        _pause(client.pid)
        assert client.stdout.readline().strip() == "ok"  # was: StreamInterrupted streamtap: stall
    finally:
        client.kill()
        client.wait(timeout=30)
        if client.stdout is not None:
            client.stdout.close()


def test_a_proxy_paused_mid_stream_passes_the_whole_answer(upstream: FakeUpstream, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'upstream = "{upstream.base_url}"\nlisten = "127.0.0.1:{port}"\n'
        f"[policy]\nmax_attempts = 1\nidle_timeout = {IDLE}\n"
    )
    proxy = subprocess.Popen(
        [sys.executable, "-c", "from streamtap._cli import main; main()", "proxy", "--config", str(config)],
        env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0)
        pieces = []
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        for chunk in stream:  # was: openai.APIError "streamtap: stall: no event within idle_timeout"
            pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            if len(pieces) == 3:
                _pause(proxy.pid)
        assert "".join(pieces) == upstream.expected_text(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        proxy.kill()
        proxy.wait(timeout=30)

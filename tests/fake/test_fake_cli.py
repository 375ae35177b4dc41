"""`streamtap fake-upstream`: flags, environment variables, errors and graceful signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
from click.testing import CliRunner

from streamtap._cli import main
from streamtap.fake import FakeConfig
from streamtap.fake._upstream import run_until_signal


def test_serves_until_sigterm() -> None:
    command = [
        sys.executable,
        "-c",
        "from streamtap._cli import main; main()",
        "fake-upstream",
        "--port",
        "0",
    ]
    env = {**os.environ, "STREAMTAP_FAKE_UPSTREAM_CHUNKS": "3"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/v1")
        request = urllib.request.Request(
            f"{base_url}/chat/completions",
            data=json.dumps({"model": "m", "messages": [], "stream": True}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read().decode()
        assert body.count('"content":') == 1 + 3  # the role chunk's empty content, then 3 chunks
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_sigint_stops_gracefully_in_process() -> None:
    seen: list[int] = []

    def announce(base_url: str) -> None:
        def request_then_interrupt() -> None:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
                seen.append(response.status)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=request_then_interrupt).start()

    run_until_signal(FakeConfig(), announce)  # returns (no KeyboardInterrupt) once SIGINT arrives
    assert seen == [200]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["--incident", "a-b:1:reset"],
            {},
            "incident 'a-b:1:reset': window 'a-b'; accepted: START-END",
            id="window",
        ),
        pytest.param([], {"STREAMTAP_FAKE_UPSTREAM_INCIDENT": "*:1:bogus"}, "unknown key 'bogus'", id="env"),
        pytest.param(
            ["--chunks", "-1"],
            {},
            "Invalid value for '--chunks': -1 is not in the range 0<=x<=100000",
            id="chunks",
        ),
        pytest.param(
            ["--ttft", "-2"], {}, "Invalid value for '--ttft': -2.0 is not in the range 0<=x<=3600", id="ttft"
        ),
        pytest.param(["--gap", "nan"], {}, "Invalid value for '--gap': 'nan' is not a number", id="gap"),
        pytest.param(
            [], {"STREAMTAP_FAKE_UPSTREAM_PORT": "70000"}, "70000 is not in the range 0<=x<=65535", id="port"
        ),
        # It listened on every interface and printed http://:PORT/v1.
        pytest.param(["--host", ""], {}, "Invalid value for '--host': must be an address or name", id="host"),
        pytest.param(
            [],
            {"STREAMTAP_FAKE_UPSTREAM_HOST": " "},
            "Invalid value for STREAMTAP_FAKE_UPSTREAM_HOST (--host): must be an address",
            id="host-env",
        ),
        # It answered every request 401.
        pytest.param(
            ["--api-key", ""],
            {},
            "Invalid value for '--api-key': must be the key clients must send",
            id="api-key",
        ),
    ],
)
def test_bad_flags_exit_2_with_the_reason(args: list[str], env: dict[str, str], message: str) -> None:
    result = CliRunner().invoke(main, ["fake-upstream", *args], env=env)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": ""}, "host=''; accepted: an interface address or name"),
        ({"host": " "}, "host=' '; accepted: an interface address or name"),
        ({"api_key": ""}, "api_key=''; accepted: None (no key needed) or a key that is not empty"),
        ({"api_key": "\n"}, "api_key='\\n'; accepted: None (no key needed) or a key that is not empty"),
    ],
)
def test_config_refuses_an_empty_host_or_key(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        FakeConfig(**fields)  # type: ignore[arg-type]

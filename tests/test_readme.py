"""Every command and code block in the README runs here, for real, against the fake upstream.

A README line this file does not know how to run fails the test: the README cannot promise a
command nobody runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from conftest import require_binary
from streamtap.fake import FakeConfig, FakeUpstream

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
KEY = "sk-readme-test-key-0123456789"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def _commands() -> list[str]:
    lines = [line.strip() for block in _blocks("sh") for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(chunks=5, api_key=KEY)) as upstream:
        yield upstream


def _env(fake: FakeUpstream, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_", "STREAMTAP_"))}
    env.update(
        OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY=KEY, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    )
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- one runner per README command --------------------------------------------------------


def run_demo(command: str, fake: FakeUpstream, tmp_path: Path) -> None:
    """A fresh checkout and a fresh virtual environment, following only the README."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    checkout = tmp_path / "checkout"
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = checkout / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "STREAMTAP_", "OPENAI_"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(BIN))
    )
    args = [*shlex.split(command), "--no-ui", "--no-stack", "--duration", "20", "--metrics-port", "0"]
    done = subprocess.run(args, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (checkout / ".venv" / "bin" / "streamtap").exists()
    assert "summary" in done.stdout.lower()


def run_tests(command: str, fake: FakeUpstream, tmp_path: Path) -> None:
    """The test command is what CI runs: it cannot run itself here, so CI must call exactly it."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in [line.strip() for line in ci]


def run_instrumented_script(command: str, fake: FakeUpstream, tmp_path: Path) -> None:
    fake.clear()
    fake.enqueue("status=503", "")  # only streamtap's retry turns this into a success
    env = _env(fake, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    env["METRICS_PORT"] = "0"
    done = subprocess.run(
        shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(fake.requests) == 2


def run_check(command: str, fake: FakeUpstream, tmp_path: Path) -> None:
    done = subprocess.run(shlex.split(command), env=_env(fake), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "preflight passed" in done.stdout
    assert KEY not in done.stdout + done.stderr


def run_proxy(command: str, fake: FakeUpstream, tmp_path: Path) -> None:
    port = _free_port()
    args = shlex.split(command)
    args[args.index("--upstream") + 1] = fake.base_url  # the fake stands in for api.openai.com
    args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
    # No collector here: as the README says, without these a stop waits out the exporters' timeout.
    env = _env(fake, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.1)
        fake.clear()
        fake.enqueue("status=502", "")
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx2.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert answer.status_code == 200
        assert answer.headers["x-streamtap-attempts"] == "2"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=40)
    # uvicorn drains, then re-raises the signal it caught, which exits 128 + SIGTERM after the
    # exit handlers (the telemetry flush) ran.
    assert process.returncode in (0, 128 + signal.SIGTERM), out + err
    assert "Traceback" not in err


def run_compose(command: str, fake: FakeUpstream, tmp_path: Path) -> None:
    """No Docker engine runs here: the stack is validated as compose itself reads it."""
    compose = require_binary("docker-compose")
    done = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config", "-q"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


RUNNERS: dict[str, Callable[[str, FakeUpstream, Path], None]] = {
    "./scripts/demo": run_demo,
    "./scripts/test": run_tests,
    "opentelemetry-instrument python": run_instrumented_script,
    "streamtap check": run_check,
    "streamtap proxy": run_proxy,
    "docker compose up": run_compose,
}


def _runner(command: str) -> Callable[[str, FakeUpstream, Path], None]:
    for prefix, runner in RUNNERS.items():
        if command == prefix or command.startswith(prefix + " "):
            return runner
    raise AssertionError(f"the README promises {command!r}, which no test runs: add a runner")


@pytest.mark.slow
@pytest.mark.parametrize("command", _commands())
def test_readme_command(command: str, fake: FakeUpstream, tmp_path: Path) -> None:
    _runner(command)(command, fake, tmp_path)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_block(index: int, fake: FakeUpstream, tmp_path: Path) -> None:
    fake.clear()
    code = _blocks("python")[index]
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(fake), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if "create(" in code:
        assert fake.requests, "the block made no call"
        assert done.stdout.strip()


def test_readme_lists_every_alert() -> None:
    from streamtap.monitoring.rules import alert_names

    for name in alert_names():
        assert f"| {name} |" in README


def test_ci_runs_the_readme_test_command() -> None:
    assert "./scripts/test" in _commands()

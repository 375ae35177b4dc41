"""The processes of proxy_load.py: the fake upstream, the proxies under test, their CPU time.

Each runs as its own process, optionally pinned to a set of CPUs (affinity is set in the child
before exec, so every thread it starts inherits it). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_CLI = "from streamtap._cli import main; main()"
# The fake upstream is the instrument of every target's run: it runs on uvloop, as the proxy
# does, so its own per-event cost and timer lateness stay small beside what is measured.
_FAKE_CLI = (
    "import asyncio, importlib.util\n"
    "if importlib.util.find_spec('uvloop'):\n"
    "    import uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n" + _CLI
)
# `streamtap proxy` builds OpenTelemetry SDK providers unless OTEL_SDK_DISABLED is true; with
# exporters "none" every span and OTel metric is recorded, then dropped (nothing on the network).
# "streamtap-otlp" exports as shipped, over OTLP/HTTP to `start_otlp_sink`'s receiver, its
# metrics every 10 s rather than 60 so that every round of load holds an export;
# "streamtap-otlp-grpc" the same over OTLP/gRPC.
_STREAMTAP_ENV = {
    "streamtap": {"OTEL_SDK_DISABLED": "true"},
    "streamtap-otel": {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    "streamtap-otlp": {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "10000",
    },
    "streamtap-otlp-grpc": {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_METRIC_EXPORT_INTERVAL": "10000",
    },
    "baseline": {"OTEL_SDK_DISABLED": "true"},  # as "streamtap", from --baseline-src
}
_QUIET_LITELLM = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet
    "LITELLM_LOG": "ERROR",
    "DISABLE_SCHEMA_UPDATE": "True",
}


_GC_PROBE = Path(__file__).resolve().parent / "_gc_probe"


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (as the proxy and the fake run), else asyncio's."""
    if importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop

    return uvloop.new_event_loop


def gc_probe_env(work: Path) -> dict[str, str]:
    """The environment that makes a Python child record its GC pauses in `work` (see _gc_probe)."""
    path = os.pathsep.join(p for p in (str(_GC_PROBE), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "STREAMTAP_BENCH_GC_DIR": str(work)}


def gc_pauses(work: Path, pid: int) -> list[tuple[float, int, float]]:
    """The (monotonic start, generation, seconds) of every collection of process `pid`, once it exited."""
    try:
        data = json.loads((work / f"gc-{pid}.json").read_text())
    except (OSError, ValueError):
        return []
    return [(float(s), int(g), float(d)) for s, g, d in data["pauses"]]


def gc_summary(pauses: list[tuple[float, int, float]], windows: list[tuple[float, float]]) -> dict[str, Any]:
    """Collections that started inside the windows: count and longest per generation, share of time."""
    inside = [(g, d) for s, g, d in pauses if any(a <= s < b for a, b in windows)]
    seconds = sum(b - a for a, b in windows)
    return {
        "generations": {
            str(gen): {
                "count": sum(1 for g, _ in inside if g == gen),
                "longest_ms": max((d * 1000 for g, d in inside if g == gen), default=0.0),
            }
            for gen in (0, 1, 2)
        },
        "ms_per_s": sum(d for _, d in inside) * 1000 / seconds if seconds else None,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    command: Sequence[str],
    cpus: set[int] | None,
    log: Path,
    env: dict[str, str] | None = None,
    *,
    pipe: bool = False,
) -> subprocess.Popen[str]:
    """Start a process; its stderr (and stdout unless `pipe`) go to `log`, never to a full pipe."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    with log.open("a") as sink:
        return subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE if pipe else sink,
            stderr=sink,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=pin,  # only sets the affinity, before exec
        )


def wait_http(url: str, process: subprocess.Popen[str], timeout: float, log: Path) -> None:
    def answers() -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    _wait_until(answers, url, "did not answer 200", process, timeout, log)


def wait_listening(port: int, process: subprocess.Popen[str], log: Path) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port` (no HTTP asked)."""

    def listening() -> bool:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True

    _wait_until(listening, f"127.0.0.1:{port}", "did not listen", process, 10, log)


def _wait_until(
    ready: Callable[[], bool],
    what: str,
    failed: str,
    process: subprocess.Popen[str],
    timeout: float,
    log: Path,
) -> None:
    """Poll `ready` (an OSError counts as not yet) until it holds, the process exits, or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited: {log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} {failed} within {timeout} s")


def start_fake(
    chunks: int, ttft: float, gap: float, cpus: set[int] | None, work: Path
) -> tuple[subprocess.Popen[str], str]:
    log = work / "fake.log"
    command = [sys.executable, "-c", _FAKE_CLI, "fake-upstream", "--port", "0", f"--chunks={chunks}"]
    process = spawn([*command, f"--ttft={ttft}", f"--gap={gap}"], cpus, log, gc_probe_env(work), pipe=True)
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"the fake upstream did not start: {base_url!r}")
    wait_http(base_url + "/models", process, 10, log)
    return process, base_url


def start_streamtap(
    upstream: str,
    cpus: set[int] | None,
    work: Path,
    name: str,
    *,
    source: str | None = None,
    prelude: str = "",
    otlp: str | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """`streamtap proxy` as shipped; `name` picks its telemetry (see _STREAMTAP_ENV).

    The "baseline" target imports streamtap from `source` (a `src` directory) instead.
    `prelude` is Python run in the proxy's process before the CLI (proxy_hops.py's hooks).
    "streamtap-otlp" and "streamtap-otlp-grpc" export to `otlp`, the endpoint of `start_otlp_sink`.
    """
    listen = f"127.0.0.1:{free_port()}"
    log = work / f"{name}.log"
    command = [sys.executable, "-c", prelude + _CLI, "proxy", "--upstream", upstream, "--listen", listen]
    env = {**_STREAMTAP_ENV[name], **gc_probe_env(work)}
    if name.startswith("streamtap-otlp"):
        if otlp is None:
            raise ValueError(f"the {name} target needs the endpoint of an OTLP receiver")
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    if name == "baseline":
        if not source or not (Path(source) / "streamtap" / "__init__.py").is_file():
            raise ValueError(
                f"--baseline-src must be a directory holding the streamtap package, got {source!r}"
            )
        env["PYTHONPATH"] = os.pathsep.join((str(Path(source).resolve()), env["PYTHONPATH"]))
    process = spawn(command, cpus, log, env)
    wait_http(f"http://{listen}/healthz", process, 20, log)
    return process, f"http://{listen}/v1"


def start_otlp_sink(
    cpus: set[int] | None, work: Path, *, grpc: bool = False
) -> tuple[subprocess.Popen[str], str]:
    """`_otlp_sink.py`, the collector of the "streamtap-otlp" target (OTLP/gRPC: of
    "streamtap-otlp-grpc"); its endpoint."""
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve().parent / "_otlp_sink.py")]
    command += ["--port", str(port), "--report", str(work / "otlp.json"), *(["--grpc"] if grpc else [])]
    log = work / "otlp.log"
    process = spawn(command, cpus, log)
    wait_listening(port, process, log)
    return process, f"http://127.0.0.1:{port}"


def otlp_received(work: Path) -> dict[str, Any] | None:
    """What the sink of `start_otlp_sink` received, once it was stopped."""
    try:
        data: dict[str, Any] = json.loads((work / "otlp.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def start_relay(upstream: str, cpus: set[int] | None, work: Path) -> tuple[subprocess.Popen[str], str]:
    """`_byte_relay.py` in front of `upstream` (an http://127.0.0.1:<port>/v1 URL)."""
    port = free_port()
    log = work / "relay.log"
    target = upstream.removeprefix("http://").split("/", 1)[0]
    command = [sys.executable, str(Path(__file__).resolve().parent / "_byte_relay.py")]
    process = spawn([*command, "--listen", str(port), "--upstream", target], cpus, log, gc_probe_env(work))
    wait_listening(port, process, log)  # its upstream may not be up yet (proxy_hops.py's rig): no HTTP check
    return process, f"http://127.0.0.1:{port}/v1"


def start_litellm(
    litellm: str, upstream: str, cpus: set[int] | None, workdir: Path, master_key: str
) -> tuple[subprocess.Popen[str], str]:
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-fake\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "  set_verbose: false\n"
    )
    port = free_port()
    command = [
        litellm,
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    log = workdir / "litellm.log"
    # LiteLLM refuses to start without a master key; clients present it as their bearer token.
    env = {**_QUIET_LITELLM, "LITELLM_MASTER_KEY": master_key, **gc_probe_env(workdir)}
    process = spawn(command, cpus, log, env)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", process, 180, log)
    return process, f"http://127.0.0.1:{port}/v1"


def litellm_version(litellm: str) -> str:
    python = Path(litellm).with_name("python")
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or "unknown"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its threads and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        todo.extend(_children(current))
    return total


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="proxy-load-")

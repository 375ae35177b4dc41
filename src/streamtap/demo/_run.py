"""`streamtap demo`: start the pieces, drive the story, show it, stop everything, summarise.

Order matters: the alerting stack starts first (so Prometheus sees the whole story), then the
fake upstream (its start is the story's time zero), the proxy and the traffic. Everything stops
in reverse order, by itself at the end of the duration or on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import IO

from prometheus_client import CollectorRegistry

from .. import Recorder
from .._bind_errors import bind_failure
from ._alerts import AlertLog
from ._plan import DemoError, DemoOptions, Plan, plan
from ._stack import HOW_TO_GET, AlertStack, binaries, install, scrape_target
from ._stats import Totals, read_totals, snapshot
from ._story import StoryPhase, compression_for, incidents, phase_at, steady_story, story
from ._summary import RunInfo, summary
from ._traffic import Traffic, TrafficConfig
from ._view import Frame, LiveView, PlainView, View

TICK_S = 0.5
WINDOW_S = 10.0  # the live rates and quantiles cover the last 10 s
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _recorders(registry: CollectorRegistry, environ: Mapping[str, str]) -> list[Recorder]:
    from .._prometheus import PrometheusRecorder

    # OpenTelemetry only when a collector is configured (the compose stack); otherwise the
    # exporters would retry against a localhost collector that is not there.
    if any(k.startswith("OTEL_EXPORTER_OTLP_") and k.endswith("ENDPOINT") for k in environ):
        from .._telemetry import setup_telemetry

        return setup_telemetry(service_name="streamtap-demo", prometheus_registry=registry)
    return [PrometheusRecorder(registry)]


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[list[bool]]:
    """Turn SIGTERM (docker stop) into KeyboardInterrupt; the list tells whether it came."""
    came: list[bool] = []
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield came
        return

    def handler(_sig: int, _frame: FrameType | None) -> None:
        came.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    # SIGINT ignored at start (a background job of a script) stops the demo all the same.
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stack(
    options: DemoOptions, target: str, compression: float, view: View
) -> tuple[AlertStack | None, str]:
    """Start the alerting stack if wanted and possible; else say why not."""
    if options.stack is False:
        return None, "Prometheus/Alertmanager were turned off (--no-stack)."
    found = binaries()
    if found is None and options.stack:
        view.message("--stack: installing prometheus and prometheus-alertmanager with apt-get ...")
        outcome = install()
        if isinstance(outcome, str):
            raise DemoError(outcome)
        found = outcome
    if found is None:
        return None, HOW_TO_GET
    try:
        stack = AlertStack(target, compression, *found).start()
    except (OSError, RuntimeError, TimeoutError) as error:
        return None, f"Prometheus/Alertmanager did not start ({error}); no alerts in this run."
    return stack, ""


def _metrics_url(addr: str, port: int) -> str:
    host = "localhost" if addr in ("0.0.0.0", "::", "") else (f"[{addr}]" if ":" in addr else addr)
    return f"http://{host}:{port}/metrics"


def run(options: DemoOptions, out: IO[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the demo and return the exit code (0, 130 on Ctrl-C, 143 on SIGTERM).

    Args:
        options: the flags.
        out: where the view and the summary go (default stdout).
        environ: the environment (default os.environ).

    Raises:
        DemoError: a problem the user can fix, e.g. --real without a key or a busy port.
    """
    out = out or sys.stdout
    env = os.environ if environ is None else environ
    the_plan = plan(options, env)
    ui = out.isatty() if options.ui is None else options.ui
    view: View
    if ui:
        from rich.console import Console

        view = LiveView(Console(file=out))
    else:
        view = PlainView(out)
    registry = CollectorRegistry()
    recorders = _recorders(registry, env)
    from .._exposition import serve_metrics

    try:
        metrics = serve_metrics(options.metrics_port, options.metrics_addr, registry)
    except OSError as error:
        raise DemoError(
            bind_failure(
                error,
                host_flag="--metrics-addr",
                host=options.metrics_addr,
                port_flag="--metrics-port",
                port=options.metrics_port,
            )
        ) from None
    port = metrics.server_port
    with contextlib.ExitStack() as cleanup, _sigterm_as_interrupt() as terminated:
        cleanup.callback(metrics.server_close)
        cleanup.callback(metrics.shutdown)
        return _run(options, the_plan, view, registry, recorders, port, cleanup, out, terminated)


def _run(
    options: DemoOptions,
    the_plan: Plan,
    view: View,
    registry: CollectorRegistry,
    recorders: list[Recorder],
    port: int,
    cleanup: contextlib.ExitStack,
    out: IO[str],
    terminated: list[bool],
) -> int:
    started = time.monotonic()
    interrupted = False
    notes = [f"metrics: {_metrics_url(options.metrics_addr, port)}"]
    alerts = AlertLog()
    traffic: Traffic | None = None
    stack_note = ""
    stop = threading.Event()
    try:
        target = scrape_target(options.metrics_addr, port)
        stack, stack_note = _stack(options, target, compression_for(options.duration), view)
        if stack is not None:
            cleanup.callback(stack.stop)
            assert stack.prometheus is not None and stack.alertmanager is not None
            notes.append(
                f"Prometheus {stack.prometheus.url} (rules {stack.compression:g}x faster), "
                f"Alertmanager {stack.alertmanager.url}"
            )
        else:
            view.message(stack_note)
        base_url, phases = _upstream(options, the_plan, cleanup)
        proxy_url = _proxy(options, the_plan, base_url, recorders, cleanup)
        notes.append(f"upstream: {the_plan.description or base_url}; proxy: {proxy_url}")
        traffic = Traffic(
            TrafficConfig(
                base_url,
                proxy_url,
                the_plan.api_key,
                the_plan.model,
                the_plan.policy,
                the_plan.fallbacks,
                recorders,
                the_plan.workloads,
                options.seed,
                the_plan.max_tokens,
            ),
            stop,
        )
        for note in notes:
            view.message(note)
        started = time.monotonic()
        traffic.start()
        with view:
            alerts_off = stack_note if stack is None else None
            _loop(options, view, registry, phases, stack, alerts, tuple(notes), alerts_off, started)
    except KeyboardInterrupt:
        interrupted = True
    ran = time.monotonic() - started
    stop.set()
    try:
        if traffic is not None and not traffic.join(20.0):
            view.message("some calls were still running after 20s; leaving them behind")
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the calls in flight
        interrupted = True
    tally = traffic.tally if traffic is not None else None
    info = RunInfo(
        ran_s=ran,
        duration=options.duration,
        interrupted=interrupted,
        calls_by_door=dict(tally.calls) if tally else {},
        caller_errors=dict(tally.errors) if tally else {},
        stack_note=stack_note,
        metrics_url=_metrics_url(options.metrics_addr, port),
        external_proxy=options.proxy_url is not None,
    )
    try:
        cleanup.close()
    except KeyboardInterrupt:  # the servers are daemon threads and children told to stop already
        interrupted = True
    # Read after the proxy has stopped: its handler records a call just after the caller has read
    # the last event, so a reading taken as soon as the callers return can miss the last one.
    final = read_totals(registry, ran)
    print("\n" + summary(final, alerts.events, info), file=out, flush=True)
    if interrupted:
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    return 0


def _upstream(
    options: DemoOptions, the_plan: Plan, cleanup: contextlib.ExitStack
) -> tuple[str, tuple[StoryPhase, ...]]:
    if the_plan.base_url is not None:
        return the_plan.base_url, steady_story(options.duration)
    from ..fake import FakeConfig, FakeUpstream

    phases = story(options.duration)
    config = FakeConfig(chunks=12, ttft=0.12, gap=0.015, seed=options.seed, incidents=incidents(phases))
    fake = FakeUpstream(config).start()
    cleanup.callback(fake.stop)
    return fake.base_url, phases


def _proxy(
    options: DemoOptions,
    the_plan: Plan,
    base_url: str,
    recorders: list[Recorder],
    cleanup: contextlib.ExitStack,
) -> str:
    if options.proxy_url is not None:
        return options.proxy_url
    from .._proxy_config import ProxyConfig
    from .._proxy_server import ProxyServer

    fallbacks = tuple(f for f in the_plan.fallbacks if f.kind == "model")
    config = ProxyConfig(
        upstream=base_url,
        listen="127.0.0.1:0",
        shutdown_grace=2.0,
        policy=the_plan.policy,
        fallbacks=fallbacks,
    )
    # The same recorders: the proxy's calls land in the registry the demo serves and shows.
    proxy = ProxyServer(config, recorders=recorders).start()
    cleanup.callback(proxy.stop, 5.0)
    return proxy.base_url


def _loop(
    options: DemoOptions,
    view: View,
    registry: CollectorRegistry,
    phases: tuple[StoryPhase, ...],
    stack: AlertStack | None,
    alerts: AlertLog,
    notes: tuple[str, ...],
    alerts_off: str | None,
    started: float,
) -> None:
    history: deque[Totals] = deque()
    phase: StoryPhase | None = None
    while True:
        elapsed = time.monotonic() - started
        current = phase_at(phases, elapsed)
        if current is not phase:
            phase = current
            view.phase(phase)
        if stack is not None:
            for event in alerts.update(stack.alerts(), elapsed):
                view.alert(event)
        totals = read_totals(registry, elapsed)
        history.append(totals)
        while len(history) > 1 and totals.at - history[1].at >= WINDOW_S:
            history.popleft()
        frame = Frame(
            elapsed=elapsed,
            duration=options.duration,
            phase=phase,
            stats=snapshot(history[0], totals),
            alerts=tuple(alerts.events),
            firing=tuple(alerts.firing_now()),
            notes=notes,
            alerts_off=alerts_off,
        )
        view.update(frame)
        if elapsed >= options.duration:
            return
        time.sleep(min(TICK_S, max(options.duration - elapsed, 0.0)) or TICK_S)

"""Runs in a spawned worker process: records a known sequence of calls, then stays until told."""

from __future__ import annotations

from multiprocessing.synchronize import Event

from prometheus_client import CollectorRegistry

from streamtap._events import Fanout
from streamtap._prometheus import PrometheusRecorder

from ._builder import Call, two_429s_then_success


def record(calls: int, open_streams: int, breaker: str, ready: Event, leave: Event) -> None:
    """`calls` x the two-429s scenario, `open_streams` streams left in progress, one breaker
    transition to `breaker`; then `ready` is set, and the worker lives until `leave` is."""
    recorder = PrometheusRecorder(CollectorRegistry())
    for _ in range(calls):
        two_429s_then_success([recorder])
    fanout = Fanout([recorder])
    for _ in range(open_streams):
        Call(fanout).start()
    from streamtap._events import BreakerTransition

    recorder.breaker_changed(BreakerTransition("primary", "gpt-4o-mini", "closed", breaker))  # type: ignore[arg-type]
    ready.set()
    leave.wait(120)

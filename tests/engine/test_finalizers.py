"""What the garbage collector finalizes never records where the collector runs.

A collection runs in whichever thread allocated, inside whatever lock that thread holds: a
recorder reached from a finalizer there (a dropped client's engine, an abandoned stream) would
wait for itself for ever on a lock that is not reentrant, as prometheus_client's and most
recorders' are. Each test holds such a lock while the collector runs, in a thread it can leave
behind if it hangs.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

import streamtap
from streamtap import CallFinished
from streamtap._background import WORKER
from streamtap._events import BreakerTransition, CallEvent
from streamtap.fake import FakeUpstream

from .support import CHAT_MESSAGES, Recording

OPENS_AT_ONCE = streamtap.Policy(
    max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=1, failure_ratio=0.5, open_for=60)
)


class _Locking(Recording):
    """A recorder that records under a plain lock, and can run the collector while it holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.collect_inside = False

    def _record(self, event: Any) -> None:
        with self.lock:
            if self.collect_inside:
                self.collect_inside = False
                gc.collect()
            self.events.append(event)

    def on_event(self, event: CallEvent) -> None:
        self._record(event)

    def breaker_changed(self, event: BreakerTransition) -> None:
        self._record(event)


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Only the tests' own collections run: what they drop waits for them."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _finishes(action: Callable[[], None], seconds: float = 20.0) -> bool:
    thread = threading.Thread(target=action, daemon=True)  # left behind if it hangs
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def _client(fake: FakeUpstream, recorder: Recording) -> Any:
    raw = openai.OpenAI(base_url=fake.base_url, api_key="sk-test-secret-key-0000", max_retries=0)
    return streamtap.instrument(raw, policy=OPENS_AT_ONCE, recorders=[recorder])


def test_a_dropped_clients_open_breaker_is_reported_closed_off_the_collectors_thread(
    fake: FakeUpstream, collector_off: None
) -> None:
    recorder = _Locking()
    dropped = _client(fake, recorder)
    fake.enqueue("status=500")
    with pytest.raises(openai.InternalServerError):
        dropped.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
    del dropped  # its engine goes with the collector's next run
    live = _client(fake, recorder)
    fake.enqueue("status=500")

    def open_the_live_breaker() -> None:
        recorder.collect_inside = True  # the live breaker's transition runs the collector
        with pytest.raises(openai.InternalServerError):
            live.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)

    assert _finishes(open_the_live_breaker), "a finalizer recorded under the recorder's own lock"
    assert WORKER.settle()
    # Process-wide (the calls' own are span events): both opened, the dropped one closed.
    moves = [(e.engine_id, e.old, e.new) for e in recorder.of(BreakerTransition) if e.call_id is None]
    dropped_id = moves[0][0]
    assert sorted(moves) == [
        (dropped_id, "closed", "open"),
        (dropped_id, "open", "closed"),
        (dropped_id + 1, "closed", "open"),
    ]


def test_an_abandoned_stream_is_recorded_off_the_collectors_thread(
    fake: FakeUpstream, collector_off: None
) -> None:
    recorder = _Locking()
    client = _client(fake, recorder)
    stream = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    del stream  # never read: abandoned when the collector finds it

    def another_call() -> None:
        recorder.collect_inside = True  # its first event runs the collector
        client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)

    assert _finishes(another_call), "a finalizer recorded under the recorder's own lock"
    assert WORKER.settle()
    outcomes = sorted(e.outcome for e in recorder.of(CallFinished))
    assert outcomes == ["abandoned", "ok"]
    client.close()

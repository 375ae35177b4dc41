"""The exit flush: every provider streamtap built shuts down at once, within one OTLP timeout."""

from __future__ import annotations

import threading
import time

import pytest

from streamtap import _otel_exit


class _Provider:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.done = threading.Event()

    def shutdown(self) -> None:
        time.sleep(self.seconds)
        self.done.set()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    monkeypatch.setattr(_otel_exit, "_providers", [])
    monkeypatch.setattr(_otel_exit.atexit, "register", lambda f: None)
    return _otel_exit._providers


def test_providers_shut_down_side_by_side(registered: list[object]) -> None:
    together = threading.Barrier(3, timeout=5)  # broken unless all three shut down at once

    class Meeting(_Provider):
        def shutdown(self) -> None:
            together.wait()
            self.done.set()

    providers = [Meeting(0), Meeting(0), Meeting(0)]
    for provider in providers:
        _otel_exit.flush_at_exit(provider, 10)
    assert _otel_exit.flush()
    assert all(p.done.is_set() for p in providers)
    assert registered == []  # flushed once


def test_a_provider_still_exporting_at_the_deadline_is_left_with_a_warning(
    registered: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    stuck = _Provider(30)
    _otel_exit.flush_at_exit(stuck, 0.2)
    started = time.monotonic()
    assert not _otel_exit.flush()
    assert time.monotonic() - started < 5
    assert "telemetry not exported within 0.2 s at exit was dropped" in caplog.text


def test_the_wait_is_the_longest_of_the_providers_timeouts(registered: list[object]) -> None:
    slow = _Provider(0.4)
    _otel_exit.flush_at_exit(slow, 0.1)
    _otel_exit.flush_at_exit(_Provider(0), 5)
    assert _otel_exit.flush()
    assert slow.done.is_set()

"""The exit flush: every provider streamtap built shuts down at once, within one OTLP timeout."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

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


_FORKED: list[Any] = []  # the provider the forked workers inherit (a pool's arguments are pickled)


def _record_a_span(_: int) -> None:
    _FORKED[0].get_tracer("test").start_span("in the worker").end()


@pytest.mark.parametrize("how", ["process", "pool"])
def test_a_forked_multiprocessing_worker_flushes_its_spans_as_it_ends(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """multiprocessing's workers end with os._exit, which runs no atexit handler: the spans a
    worker recorded last (in the batch processor's queue, 5 s by default) were lost."""
    import multiprocessing

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    written = tmp_path / "spans.txt"

    class ToFile(SpanExporter):  # what crosses the process boundary: a file
        def export(self, spans: Any) -> SpanExportResult:
            with written.open("a") as out:
                out.writelines(f"{span.name}\n" for span in spans)
            return SpanExportResult.SUCCESS

    monkeypatch.setattr(_otel_exit, "_providers", [])
    monkeypatch.setattr(_otel_exit.atexit, "register", lambda f: None)  # this test process's own exit
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(ToFile(), schedule_delay_millis=60_000))
    _otel_exit.flush_at_exit(provider, 10)
    monkeypatch.setattr(sys.modules[__name__], "_FORKED", [provider])
    fork = multiprocessing.get_context("fork")
    if how == "process":
        worker = fork.Process(target=_record_a_span, args=(0,))
        worker.start()
        worker.join(60)
        assert worker.exitcode == 0
    else:
        with fork.Pool(1, maxtasksperchild=1) as pool:  # workers recycled, as a prefork pool does
            pool.map(_record_a_span, [0, 1])
            pool.close()
            pool.join()
    assert written.read_text().splitlines() == ["in the worker"] * (1 if how == "process" else 2)
    provider.shutdown()

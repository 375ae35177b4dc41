"""At exit, the OpenTelemetry providers streamtap built flush what they hold: all at once, within
one deadline.

Left to the SDK, each provider's exit handler runs after the other's (events, metrics, spans),
each bounded only by the SDK's own 30 s, and the span provider exports its whole queue a batch
at a time, each batch waiting up to the exporter's timeout: with the collector down or hanging,
a proxy stopped after 300 calls took about a minute to exit. Here every provider shuts down on
a thread of its own, and exit waits for them at most the longest of their OTLP timeouts
(OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default); what is not sent by then is dropped, with a
warning. A second Ctrl-C or SIGTERM ends the wait at once.

A worker process that `multiprocessing` forks (a Process, a Pool's workers) ends with `os._exit`,
which runs no `atexit` handler: it flushes as its last finalizer instead, or the spans it recorded
in its last seconds were lost. (A worker a pool terminates is killed first; celery's billiard
has its own fork hooks, not covered.)
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any

from ._background import WORKER

log = logging.getLogger("streamtap")

_lock = threading.Lock()
_providers: list[tuple[Any, float]] = []  # (provider, its OTLP timeout in seconds)
_SETTLE = 2.0  # seconds


def flush_at_exit(provider: Any, timeout: float) -> None:
    """Shut `provider` (built with the SDK's `shutdown_on_exit=False`) down at exit, waiting at
    most `timeout` seconds (its exporters' OTLP timeout, as read when they were built)."""
    with _lock:
        if not _providers:
            atexit.register(flush)
            import multiprocessing.util

            multiprocessing.util.register_after_fork(_WORKERS, _flush_when_the_worker_ends)
        _providers.append((provider, timeout))


class _Workers:
    """What `multiprocessing.util.register_after_fork` keys its call on (it keeps a weak one)."""


_WORKERS = _Workers()


def _flush_when_the_worker_ends(_: _Workers) -> None:
    """In a process `multiprocessing` started by fork: flush as it ends (`multiprocessing` runs
    the finalizers with an exit priority then, as its workers skip `atexit`)."""
    import multiprocessing.util

    multiprocessing.util.Finalize(None, flush, exitpriority=0)


def flush() -> bool:
    """Shut down every provider handed to `flush_at_exit`, at once, within the longest of their
    timeouts; False when one was still exporting then (or a signal ended the wait)."""
    with _lock:
        providers = list(_providers)
        _providers.clear()
    if not providers:
        return True
    deadline = max(timeout for _, timeout in providers)
    threads = [
        threading.Thread(target=_shut_down, args=(provider,), name="streamtap-otel-flush", daemon=True)
        for provider, _ in providers
    ]
    try:
        WORKER.settle(_SETTLE)  # the spans that recording handed to the background thread first
        for thread in threads:
            thread.start()
        end = time.monotonic() + deadline
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
    except (KeyboardInterrupt, SystemExit):  # asked twice to stop: go now
        return False
    if any(thread.is_alive() for thread in threads):
        log.warning(
            "streamtap: telemetry not exported within %g s at exit was dropped "
            "(is the OTLP endpoint reachable? OTEL_EXPORTER_OTLP_TIMEOUT sets the wait)",
            deadline,
        )
        return False
    return True


def _shut_down(provider: Any) -> None:
    try:
        provider.shutdown()
    except Exception:
        log.debug("streamtap: an OpenTelemetry provider failed to shut down", exc_info=True)

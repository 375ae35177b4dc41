"""streamtap's one background thread: work due later, and work that must not run where it arose.

The garbage collector runs finalizers (a dropped engine's, an abandoned stream's, a generator's
`finally`) in whichever thread allocated, inside whatever lock that thread holds at the time:
prometheus_client's, the OTel SDK's, streamtap's own. Telemetry reached from there can wait for
itself for ever. So while a collection is under way in a thread (`COLLECTING`, told by
`gc.callbacks`), the recorders' work raised in that thread is handed to this one (`soon`: a
`SimpleQueue.put`, which is reentrant) and done here, in the order it was handed over, before
any work that falls due. Other threads, which run whenever a finalizer lets go of the GIL,
record as ever. The circuit breakers' open periods end here too (`later`): one thread for all
of them, not a timer thread each.
"""

from __future__ import annotations

import atexit
import gc
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("streamtap")

Action = Callable[[], Any]
_NOW = -1.0  # the due time of work handed over by `soon`: before any other
_AT_EXIT = 2.0  # seconds exit waits for the work handed over (its recording) to be done


class _Collecting:
    """Which thread the garbage collector is collecting in (`thread`, 0: none)."""

    __slots__ = ("thread",)

    def __init__(self) -> None:
        self.thread = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        self.thread = threading.get_ident() if phase == "start" else 0

    def here(self) -> bool:
        """Whether the collector runs in this thread: this code runs inside a collection."""
        thread = self.thread
        return thread != 0 and thread == threading.get_ident()


COLLECTING = _Collecting()
gc.callbacks.append(COLLECTING)


class _Worker:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[float, Action]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Work not yet due, by due time (monotonic); the worker thread alone touches it.
        self._due: list[tuple[float, int, Action]] = []
        self._order = itertools.count()
        self._settles_at_exit = False

    def start(self) -> None:
        """Start the thread if it is not running (never from a finalizer: see `soon`)."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="streamtap-background", daemon=True)
                    thread.start()
                    self._thread = thread
                    if not self._settles_at_exit:  # once: a forked child inherits the handler
                        self._settles_at_exit = True
                        atexit.register(self.settle, _AT_EXIT)

    def soon(self, action: Action) -> None:
        """Do `action` on the thread as soon as it can. Safe in a finalizer: it only queues."""
        self._queue.put((_NOW, action))

    def later(self, delay: float, action: Action) -> None:
        """Do `action` on the thread `delay` seconds from now."""
        self.start()
        self._queue.put((time.monotonic() + delay, action))

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until the work handed over so far is done (not work due later); False if it
        took over `timeout` seconds or the thread is not running."""
        if self._thread is None:
            return False
        done = threading.Event()
        self.soon(done.set)
        return done.wait(timeout)

    def _run(self) -> None:
        due = self._due
        queued = self._queue
        while True:
            wait = max(0.0, due[0][0] - time.monotonic()) if due else None
            try:
                item = queued.get(timeout=wait)
                while True:  # everything handed over goes before what falls due meanwhile
                    when, action = item
                    if when == _NOW:
                        _do(action)
                    else:
                        heapq.heappush(due, (when, next(self._order), action))
                    item = queued.get_nowait()
            except queue.Empty:
                pass
            now = time.monotonic()
            while due and due[0][0] <= now:
                _do(heapq.heappop(due)[2])

    def _after_fork_in_child(self) -> None:
        # The thread did not come along; the work it held did (in `_due`), and so did the work
        # still queued, moved to a new queue (taking without waiting needs no lock that a thread
        # now gone may hold). A new start lock, for the same reason.
        running = self._thread is not None
        inherited, self._queue = self._queue, queue.SimpleQueue()
        while True:
            try:
                self._queue.put(inherited.get_nowait())
            except queue.Empty:
                break
        self._start_lock = threading.Lock()
        self._thread = None
        if running:
            self.start()


def _do(action: Action) -> None:
    try:
        action()
    except Exception:
        log.debug("streamtap background work failed", exc_info=True)


WORKER = _Worker()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=WORKER._after_fork_in_child)

"""streamtap's background thread: work handed over in order, work due later on time, and a
thread again in a forked child."""

from __future__ import annotations

import gc
import os
import threading
import time

import pytest

from streamtap._background import COLLECTING, WORKER


def test_work_handed_over_is_done_in_order() -> None:
    WORKER.start()
    done: list[int] = []
    for n in range(50):
        WORKER.soon(lambda n=n: done.append(n))
    assert WORKER.settle()
    assert done == list(range(50))


def test_work_due_later_is_done_when_due_and_not_before() -> None:
    ran = threading.Event()
    asked = time.monotonic()
    ran_at: list[float] = []
    WORKER.later(0.2, lambda: (ran_at.append(time.monotonic()), ran.set()))
    WORKER.later(30, ran.clear)  # far off: it holds nothing up
    assert WORKER.settle()
    assert not ran.is_set()
    assert ran.wait(5)
    assert ran_at[0] - asked >= 0.2


def test_a_failing_action_leaves_the_thread_working() -> None:
    WORKER.soon(lambda: 1 / 0)
    assert WORKER.settle()


def test_the_collecting_thread_is_told_apart_from_the_others() -> None:
    """Inside a collection its own thread knows; another thread, run while a finalizer lets go
    of the GIL, does not: its calls record as ever."""
    seen: list[tuple[bool, bool]] = []

    class Finalized:
        def __del__(self) -> None:
            other: list[bool] = []
            thread = threading.Thread(target=lambda: other.append(COLLECTING.here()))
            thread.start()
            thread.join()
            seen.append((COLLECTING.here(), other[0]))

    a, b = Finalized(), Finalized()
    a.other, b.other = b, a  # type: ignore[attr-defined]  # a cycle: only the collector frees it
    del a, b
    gc.collect()
    assert seen == [(True, False), (True, False)]
    assert not COLLECTING.here()


def test_work_handed_over_goes_before_work_that_fell_due_meanwhile() -> None:
    WORKER.start()
    done: list[str] = []
    gate = threading.Event()
    WORKER.soon(lambda: gate.wait(5))  # the thread is busy while the rest is queued
    WORKER.later(0, lambda: done.append("due"))
    time.sleep(0.05)
    WORKER.soon(lambda: done.append("handed over"))
    gate.set()
    assert WORKER.settle()
    deadline = time.monotonic() + 5
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == ["handed over", "due"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
def test_a_forked_child_has_the_thread_and_the_work_due_later() -> None:
    """Work due later that the thread held, and work still queued at the fork (the thread busy),
    both run in the child."""
    WORKER.start()
    held = threading.Event()
    queued = threading.Event()
    WORKER.later(0.2, held.set)
    assert WORKER.settle()  # the thread holds it now
    gate, busy = threading.Event(), threading.Event()
    WORKER.soon(lambda: (busy.set(), gate.wait(5)))  # busy: what follows stays queued across the fork
    assert busy.wait(5)  # taken, not queued: a child would wait on its own copy of the gate
    WORKER.later(0.1, queued.set)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether all of it runs, then leave
        try:
            ok = threading.Event()
            WORKER.soon(ok.set)
            done = ok.wait(5) and held.wait(5) and queued.wait(5)
            os.write(write, b"1" if done else b"0")
        finally:
            os._exit(0)
    gate.set()
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)

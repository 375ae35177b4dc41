"""Circuit breakers, one per (upstream, model): stop hammering an upstream that is failing.

States and moves (`BreakerSettings` supplies the numbers):

* closed: every call is allowed. Outcomes are counted in a sliding `window` of 10 time
  buckets (an outcome counts until 0.9–1.0 × window after it happened). After each counted
  outcome, if the window holds >= `min_requests` outcomes and failures/outcomes >=
  `failure_ratio`, the breaker opens.
* open: calls are refused until `open_for` seconds have passed; the first `admit()` after
  that moves to half_open, or `expire()` does, whichever comes first. (`state` does not move by
  itself: the registry calls `expire()` from a timer when it has one, so an idle breaker's
  state, and the gauge fed by its transitions, does not read open forever.)
* half_open: up to `half_open_probes` calls are admitted concurrently. A success closes the
  breaker with an empty window, as does a call's first content (`answering`: the upstream is
  serving again, which a long answer would otherwise tell only when it ends); a failure opens
  it again and restarts the timer; `release(probe)` gives a probe's slot back without counting
  anything.

Every admitted call must end with exactly one of `record_success()`, `record_failure()` or
`release(probe)` (for outcomes that say nothing about the upstream's health, e.g. a 400 or the
caller cancelling). Only a probe of the current half-open period holds a slot to give back:
`admit()` numbers each period's probes, so a call admitted while closed, or in an earlier
period, frees no slot another probe holds. Outcomes are not tied to the call that was
admitted: a late result of a call admitted while closed also decides a half-open breaker,
which errs on the side of believing the newest evidence.

`on_transition(old, new)` is called outside the lock, in the order the transitions happened,
even when several threads move the breaker at once; an exception it raises is logged at debug
and swallowed.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable

from ._policy import BreakerSettings
from ._taxonomy import BreakerState

log = logging.getLogger("streamtap")

_BUCKETS = 10


class CircuitBreaker:
    """The breaker of one (upstream, model) key. Thread-safe.

    Args:
        settings: window, thresholds, open time, probes and the on/off switch.
        clock: monotonic seconds; injectable for tests.
        on_transition: called with (old, new) after each state change.
    """

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._width = settings.window / _BUCKETS
        # Reentrant: the collector runs finalizers wherever an allocation triggers it, in this
        # lock's own critical sections too, and an abandoned stream's finalizer releases its
        # breaker (`Call.finish`); with a plain lock that thread would wait for itself forever.
        self._lock = threading.RLock()
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._probes = 0  # half-open calls admitted and not yet finished
        self._period = 0  # which half-open period this is (or was last): its probes' number
        # [bucket index, successes, failures], oldest first; at most _BUCKETS entries.
        self._buckets: deque[list[int]] = deque()
        # Transitions waiting to be reported, and who is reporting them (see _notify).
        self._pending: deque[tuple[BreakerState, BreakerState]] = deque()
        self._notifying = threading.Lock()
        self._retired = False

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    @property
    def state(self) -> BreakerState:
        """The current state; open stays open until an `admit()` after `open_for`."""
        with self._lock:
            return self._state

    @property
    def retired(self) -> bool:
        """Whether its registry let it go (`Breakers` evicted it): its moves are no one's news."""
        return self._retired

    def retire(self) -> None:
        """Report no more transitions: a call still holding the breaker may move it, but the
        registry's new breaker of its key is the one that counts (and that the gauge shows)."""
        with self._lock:
            self._retired = True
            self._on_transition = None
            self._pending.clear()

    # -- decisions -------------------------------------------------------------------------

    def admit(self) -> int | None:
        """May a call go to this upstream now? None when it may not; else the probe it holds,
        to give back with `release`: 0 (none) when the breaker is closed or disabled, the
        half-open period's number when the call is one of its probes."""
        if not self._settings.enabled:
            return 0
        with self._lock:
            if self._state == "closed":
                return 0
            if self._state == "open":
                if self._clock() - self._opened_at < self._settings.open_for:
                    return None
                self._move("half_open")
            probe: int | None = None
            if self._probes < self._settings.half_open_probes:
                self._probes += 1
                probe = self._period
        self._notify()
        return probe

    def refuses_at(self, when: float) -> bool:
        """Whether the breaker is open and still will be at monotonic time `when`: an `admit()`
        then would be refused (so a retry due then need not wait to learn it)."""
        if not self._settings.enabled:
            return False
        with self._lock:
            return self._state == "open" and when - self._opened_at < self._settings.open_for

    def record_success(self) -> None:
        """An allowed call succeeded: counts in the window; closes a half-open breaker."""
        self._record(failure=False)

    def record_failure(self) -> None:
        """An allowed call failed in a way that blames the upstream: may open the breaker."""
        self._record(failure=True)

    def expire(self) -> None:
        """Move an open breaker whose `open_for` has passed to half_open, as the next `admit()`
        would; anything else is left as it is."""
        if not self._settings.enabled:
            return
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self._settings.open_for:
                self._move("half_open")
        self._notify()

    def answering(self) -> None:
        """An admitted call's answer has begun (its first content reached the caller): the
        upstream serves again, so a half-open breaker closes now, not when that answer ends.
        The call's own outcome is still recorded when it ends."""
        if not self._settings.enabled:
            return
        with self._lock:
            if self._state == "half_open":
                self._move("closed")
        self._notify()

    def release(self, probe: int) -> None:
        """An admitted call ended without a verdict on the upstream: gives back its probe's
        slot, if `probe` (what `admit` returned) is one of the current half-open period's."""
        if not self._settings.enabled or not probe:
            return
        with self._lock:
            if self._state == "half_open" and probe == self._period and self._probes > 0:
                self._probes -= 1

    # -- internals (called with self._lock held unless said otherwise) -----------------------

    def _record(self, *, failure: bool) -> None:
        if not self._settings.enabled:
            return
        with self._lock:
            if self._state == "half_open":
                self._move("open" if failure else "closed")
            elif self._state == "closed":
                self._count(failure)
            # open: a straggler admitted before the breaker opened; it changes nothing.
        self._notify()

    def _count(self, failure: bool) -> None:
        index = math.floor(self._clock() / self._width)
        buckets = self._buckets
        while buckets and buckets[0][0] <= index - _BUCKETS:
            buckets.popleft()
        if buckets and buckets[-1][0] >= index:  # same bucket (or a clock that stepped back)
            bucket = buckets[-1]
        else:
            bucket = [index, 0, 0]
            buckets.append(bucket)
        bucket[2 if failure else 1] += 1
        failures = sum(b[2] for b in buckets)
        total = failures + sum(b[1] for b in buckets)
        # Division, not failures >= ratio * total: 0.3 * 10 is 3.0000000000000004.
        if total >= self._settings.min_requests and failures / total >= self._settings.failure_ratio:
            self._move("open")

    def _move(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._probes = 0
        if new == "half_open":
            self._period += 1
        if new == "open":
            self._opened_at = self._clock()
        self._buckets.clear()  # a breaker that opens or closes starts from a fresh window
        if self._on_transition is not None:
            self._pending.append((old, new))

    def _notify(self) -> None:
        """Report pending transitions in order, outside the state lock (lock NOT held).

        Whoever holds `_notifying` delivers everything queued, including transitions queued by
        other threads meanwhile; a callback that re-enters the breaker just queues more.
        """
        callback = self._on_transition
        if callback is None:
            return
        while self._pending:
            if not self._notifying.acquire(blocking=False):
                return  # another thread (or an outer frame of this one) is delivering
            try:
                while True:
                    with self._lock:
                        if not self._pending:
                            break
                        old, new = self._pending.popleft()
                    try:
                        callback(old, new)
                    except Exception:
                        log.debug("streamtap: breaker on_transition callback failed", exc_info=True)
            finally:
                self._notifying.release()
            # Loop: a transition queued between our last check and the release is ours to send.


# The longest model name a breaker is kept under. The name is the caller's (any request to the
# proxy names one, up to its body limit), and a kept breaker outlives its call: a longer one is
# kept as its start and a digest of the whole, still one breaker per distinct name.
MAX_MODEL_KEY = 256


def model_key(model: str) -> str:
    """`model` as a breaker is kept under: itself, or, past `MAX_MODEL_KEY` characters, its
    start and a digest of it (as long as `MAX_MODEL_KEY`)."""
    if len(model) <= MAX_MODEL_KEY:
        return model
    digest = hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{model[: MAX_MODEL_KEY - len(digest) - 1]}~{digest}"


class Breakers:
    """Thread-safe registry of circuit breakers keyed by (upstream, model).

    Breakers are created on first use with shared settings, clock and callback. At most
    `max_keys` are kept: a new key evicts the least recently used closed breaker (or, when
    none is closed, the least recently used one, reporting it as moving to closed, which is
    what a recreated breaker would be), and a long model name is kept as `model_key` makes it,
    so unbounded model names cannot grow memory, however many or long.

    Args:
        settings: the settings of every breaker.
        clock: monotonic seconds; injectable for tests.
        on_transition: called with (upstream, model, old, new) after each state change.
        max_keys: the most breakers kept (>= 1).
        schedule: `schedule(delay, action)` runs `action` once, `delay` seconds of `clock` from
            now. Given, each breaker that opens is expired (`CircuitBreaker.expire`) when its
            `open_for` has passed, so a breaker no call reaches any more reports half_open
            instead of open for ever; None leaves the move to the next `admit()`.
    """

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[str, str, BreakerState, BreakerState], None] | None = None,
        max_keys: int = 1000,
        schedule: Callable[[float, Callable[[], None]], None] | None = None,
    ) -> None:
        if not isinstance(max_keys, int) or isinstance(max_keys, bool) or max_keys < 1:
            raise ValueError(f"Breakers.max_keys must be an integer >= 1, got {max_keys!r}")
        self._settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._max_keys = max_keys
        self._schedule = schedule
        self._lock = threading.Lock()
        self._breakers: OrderedDict[tuple[str, str], CircuitBreaker] = OrderedDict()

    def get(self, upstream: str, model: str) -> CircuitBreaker:
        """The breaker of (upstream, model), created closed on first use.

        Args:
            upstream: the upstream's name or base URL.
            model: the model the attempt asks for.
        """
        key = (upstream, model_key(model))
        evicted: tuple[tuple[str, str], BreakerState] | None = None
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is not None:
                self._breakers.move_to_end(key)
                return breaker
            if len(self._breakers) >= self._max_keys:
                evicted = self._evict()
            breaker = CircuitBreaker(self._settings, clock=self._clock, on_transition=self._callback(key))
            self._breakers[key] = breaker
        if evicted is not None and evicted[1] != "closed" and self._on_transition is not None:
            (old_upstream, old_model), old_state = evicted
            try:
                self._on_transition(old_upstream, old_model, old_state, "closed")
            except Exception:
                log.debug("streamtap: breaker on_transition callback failed", exc_info=True)
        return breaker

    def _evict(self) -> tuple[tuple[str, str], BreakerState]:
        """Drop the LRU closed breaker, else the LRU one (caller holds the lock)."""
        victim = next(iter(self._breakers))
        for key, breaker in self._breakers.items():  # oldest first
            if breaker.state == "closed":
                victim = key
                break
        breaker = self._breakers.pop(victim)
        breaker.retire()
        return victim, breaker.state

    def _callback(self, key: tuple[str, str]) -> Callable[[BreakerState, BreakerState], None] | None:
        outer, schedule = self._on_transition, self._schedule
        if outer is None and schedule is None:
            return None
        upstream, model = key
        open_for = self._settings.open_for
        # Weakly: each breaker keeps this callback, and these breakers keep each breaker. (A
        # timer that fires after the breakers are gone has nothing left to expire.)
        breakers = weakref.ref(self)

        def expire() -> None:
            kept = breakers()
            if kept is not None:
                kept._expire(key)

        def report(old: BreakerState, new: BreakerState) -> None:
            if outer is not None:
                outer(upstream, model, old, new)
            if new == "open" and schedule is not None:
                schedule(open_for, expire)

        return report

    def _expire(self, key: tuple[str, str]) -> None:
        with self._lock:
            breaker = self._breakers.get(key)  # not move_to_end: a timer is not a use
        if breaker is not None:
            breaker.expire()

    def states(self) -> dict[tuple[str, str], BreakerState]:
        """A snapshot of every kept breaker's state, least recently used first."""
        with self._lock:
            items = list(self._breakers.items())
        return {key: breaker.state for key, breaker in items}

    def __len__(self) -> int:
        with self._lock:
            return len(self._breakers)

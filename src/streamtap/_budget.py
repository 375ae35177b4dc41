"""The retry budget: retries may add at most `ratio` extra load, plus a small floor.

Semantics (Finagle's RetryBudget, as in gRPC retry throttling):

* every call deposits `ratio` of a retry once (`deposit()`), every retry withdraws one whole
  retry (`try_withdraw()`);
* `balance = min_per_second * ttl + ratio * (live deposits) - (live withdrawals)`, and a
  withdrawal succeeds only when `balance >= 1` (otherwise nothing is withdrawn);
* time is cut into buckets of `w = ttl / 10`. A deposit made at time t lives while
  `floor(now / w) < floor(t / w) + 10`: it expires between 0.9·ttl and ttl after it was made,
  at a bucket boundary. A withdrawal lives one bucket longer (`+ 11`), between ttl and 1.1·ttl,
  so every retry of the last ttl seconds is still counted: with 10 buckets for both, a burst
  late in one bucket and another once it expired put twice the floor within 0.9·ttl. Memory
  is O(11) whatever the traffic.

So within any ttl window at most `min_per_second * ttl + ratio * calls` retries happen, `calls`
those of the ttl before the window's last retry: with the defaults (0.2, 1/s, 10 s) 100 calls
allow exactly 20 + 10 = 30 retries. Because withdrawals outlive the deposits they spent, the
balance can dip below the floor (even below zero) for a while after a burst: that is
deliberate, it keeps a retry storm from restarting the moment old deposits expire.

The arithmetic is exact (integer counts, `ratio` and the floor as fractions), so "exactly 20"
never becomes 19 by float rounding.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction

from ._policy import BudgetSettings

_BUCKETS = 10  # a deposit's life, in buckets of ttl / 10
_WITHDRAWAL_BUCKETS = _BUCKETS + 1  # a withdrawal's: never less than ttl
# Settings are floats; as fractions with a bounded denominator 0.2 is exactly 1/5.
_DENOMINATOR = 1_000_000


def _exact(value: float) -> Fraction:
    return Fraction(value).limit_denominator(_DENOMINATOR)


class RetryBudget:
    """A thread-safe retry budget shared by all calls of one client (or proxy).

    Args:
        settings: ratio, floor, ttl and the on/off switch.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, settings: BudgetSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._width = settings.ttl / _BUCKETS
        self._ratio = _exact(settings.ratio)
        self._floor = _exact(settings.min_per_second) * _exact(settings.ttl)
        self._lock = threading.Lock()
        # [bucket index, deposits, withdrawals], oldest first; at most _WITHDRAWAL_BUCKETS entries.
        self._buckets: deque[list[int]] = deque()

    @property
    def settings(self) -> BudgetSettings:
        return self._settings

    def _current(self) -> list[int]:
        """Drop expired buckets and return the live one for now (caller holds the lock)."""
        index = math.floor(self._clock() / self._width)
        buckets = self._buckets
        while buckets and buckets[0][0] <= index - _WITHDRAWAL_BUCKETS:
            buckets.popleft()
        # A clock that steps back (it should not) reuses the newest bucket rather than reorder.
        if buckets and buckets[-1][0] >= index:
            return buckets[-1]
        bucket = [index, 0, 0]
        buckets.append(bucket)
        return bucket

    def _balance(self) -> Fraction:
        """The balance now (caller holds the lock, `_current` just ran): a deposit in the
        oldest bucket kept has expired, only withdrawals live that long."""
        buckets = self._buckets
        oldest = buckets[-1][0] - _BUCKETS if buckets else 0
        deposits = sum(b[1] for b in buckets if b[0] > oldest)
        withdrawals = sum(b[2] for b in buckets)
        return self._floor + self._ratio * deposits - withdrawals

    def deposit(self) -> None:
        """Record one call (once per call, not per attempt): adds `ratio` of a retry."""
        if not self._settings.enabled:
            return
        with self._lock:
            self._current()[1] += 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False when it is exhausted (nothing is taken).

        Always True when the budget is disabled.
        """
        if not self._settings.enabled:
            return True
        with self._lock:
            bucket = self._current()
            if self._balance() < 1:
                return False
            bucket[2] += 1
            return True

    def balance(self) -> float:
        """Retries available now (may be negative after a burst); inf when disabled."""
        if not self._settings.enabled:
            return math.inf
        with self._lock:
            self._current()
            return float(self._balance())

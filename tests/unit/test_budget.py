"""Retry budget: ratio, floor, expiry, exact arithmetic, thread safety."""

from __future__ import annotations

import math
import threading

from streamtap._budget import RetryBudget
from streamtap._policy import BudgetSettings


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def withdraw_all(budget: RetryBudget, limit: int = 10_000) -> int:
    """How many retries the budget grants right now."""
    granted = 0
    while granted < limit and budget.try_withdraw():
        granted += 1
    return granted


def test_floor_only() -> None:
    budget = RetryBudget(BudgetSettings(), clock=FakeClock())  # floor 1/s * 10 s
    assert budget.balance() == 10.0
    assert withdraw_all(budget) == 10
    assert budget.balance() == 0.0


def test_hundred_calls_allow_ratio_plus_floor() -> None:
    budget = RetryBudget(BudgetSettings(ratio=0.2, min_per_second=1.0, ttl=10.0), clock=FakeClock())
    for _ in range(100):
        budget.deposit()
    assert budget.balance() == 30.0
    assert withdraw_all(budget) == 30
    assert budget.try_withdraw() is False
    assert budget.balance() == 0.0


def test_refused_withdrawal_takes_nothing() -> None:
    budget = RetryBudget(BudgetSettings(ratio=0.5, min_per_second=0.0), clock=FakeClock())
    budget.deposit()
    assert budget.balance() == 0.5
    assert budget.try_withdraw() is False
    assert budget.balance() == 0.5
    budget.deposit()
    assert budget.try_withdraw() is True
    assert budget.balance() == 0.0


def test_exact_thirds() -> None:
    budget = RetryBudget(BudgetSettings(ratio=1 / 3, min_per_second=0.0), clock=FakeClock())
    for _ in range(3):
        budget.deposit()
    assert withdraw_all(budget) == 1


def test_fractional_ratio_and_floor_are_exact() -> None:
    # 0.1 * 30 would be 3.0000000000000004 in floats; 0.3 * 10 would be 3.0000000000000004.
    budget = RetryBudget(BudgetSettings(ratio=0.1, min_per_second=0.3, ttl=10.0), clock=FakeClock())
    for _ in range(30):
        budget.deposit()
    assert withdraw_all(budget) == 6


def test_deposits_expire_after_ttl() -> None:
    clock = FakeClock(1000.0)  # bucket boundaries every 1 s (ttl 10 / 10)
    budget = RetryBudget(BudgetSettings(ratio=0.2, min_per_second=0.0, ttl=10.0), clock=clock)
    for _ in range(100):
        budget.deposit()
    clock.now = 1009.999
    assert budget.balance() == 20.0
    clock.now = 1010.0
    assert budget.balance() == 0.0
    assert budget.try_withdraw() is False


def test_expiry_is_bucketed_between_point_nine_and_one_ttl() -> None:
    clock = FakeClock(1000.5)  # mid-bucket: the deposit lives until the bucket ends + 9 buckets
    budget = RetryBudget(BudgetSettings(ratio=1.0, min_per_second=0.0, ttl=10.0), clock=clock)
    budget.deposit()
    clock.now = 1009.999
    assert budget.balance() == 1.0
    clock.now = 1010.0  # 9.5 s after the deposit
    assert budget.balance() == 0.0


def test_withdrawals_expire_too_and_can_leave_a_debt() -> None:
    clock = FakeClock(1000.0)
    budget = RetryBudget(BudgetSettings(ratio=0.2, min_per_second=1.0, ttl=10.0), clock=clock)
    for _ in range(100):
        budget.deposit()
    clock.now = 1005.0
    assert withdraw_all(budget) == 30
    clock.now = 1010.0  # the deposits expired, the withdrawals (made at 1005) did not
    assert budget.balance() == -20.0
    assert budget.try_withdraw() is False
    clock.now = 1015.999  # a withdrawal lives one bucket longer than a deposit: ttl at least
    assert budget.balance() == -20.0
    clock.now = 1016.0  # the withdrawals expired: the floor is back
    assert budget.balance() == 10.0
    assert withdraw_all(budget) == 10


def test_no_ttl_window_holds_more_retries_than_the_floor() -> None:
    # 4 retries per 2 s: a burst late in one bucket, another as soon as it may. With both kept 10
    # buckets, the second came 1.8 s after the first, 8 retries within one ttl.
    clock = FakeClock(1000.19)  # late in the bucket [1000.0, 1000.2)
    budget = RetryBudget(BudgetSettings(ratio=0.0, min_per_second=2.0, ttl=2.0), clock=clock)
    assert withdraw_all(budget) == 4
    clock.now = 1002.0  # 1.81 s later
    assert withdraw_all(budget) == 0
    clock.now = 1002.2  # 2.01 s later: the first burst is out of every window with the next
    assert withdraw_all(budget) == 4


def test_sliding_window_mixes_old_and_new_deposits() -> None:
    clock = FakeClock(1000.0)
    budget = RetryBudget(BudgetSettings(ratio=0.5, min_per_second=0.0, ttl=10.0), clock=clock)
    for _ in range(4):
        budget.deposit()  # +2 at t=1000
    clock.now = 1006.0
    for _ in range(6):
        budget.deposit()  # +3 at t=1006
    assert budget.balance() == 5.0
    clock.now = 1010.0
    assert budget.balance() == 3.0
    clock.now = 1016.0
    assert budget.balance() == 0.0


def test_memory_is_bounded_by_buckets() -> None:
    clock = FakeClock(0.0)
    budget = RetryBudget(BudgetSettings(ttl=10.0), clock=clock)
    for step in range(1000):
        clock.now = step * 0.37
        budget.deposit()
        budget.try_withdraw()
    assert len(budget._buckets) <= 11


def test_disabled_always_allows() -> None:
    budget = RetryBudget(BudgetSettings(enabled=False, ratio=0.0, min_per_second=0.0), clock=FakeClock())
    budget.deposit()
    assert all(budget.try_withdraw() for _ in range(1000))
    assert budget.balance() == math.inf


def test_zero_budget_never_allows() -> None:
    budget = RetryBudget(BudgetSettings(ratio=0.0, min_per_second=0.0), clock=FakeClock())
    for _ in range(100):
        budget.deposit()
    assert budget.try_withdraw() is False


def test_concurrent_withdrawals_never_overdraw() -> None:
    threads = 8
    budget = RetryBudget(BudgetSettings(ratio=0.2, min_per_second=1.0, ttl=10.0), clock=FakeClock())
    for _ in range(500):
        budget.deposit()  # 100 + floor 10
    granted: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait(timeout=5)
        mine = sum(1 for _ in range(50) if budget.try_withdraw())
        with lock:
            granted.append(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in pool)
    assert len(granted) == threads
    assert sum(granted) == 110
    assert budget.balance() == 0.0

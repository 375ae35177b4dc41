"""Circuit breaker and the per-(upstream, model) registry."""

from __future__ import annotations

import gc
import itertools
import threading
import weakref
from collections.abc import Callable

import pytest

from streamtap._breaker import MAX_MODEL_KEY, Breakers, CircuitBreaker, model_key
from streamtap._engine import start_timer
from streamtap._policy import BreakerSettings
from streamtap._taxonomy import BreakerState

Transition = tuple[BreakerState, BreakerState]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    clock: FakeClock | None = None, **settings: object
) -> tuple[CircuitBreaker, list[Transition], FakeClock]:
    clock = clock or FakeClock()
    seen: list[Transition] = []
    base: dict[str, object] = {"window": 10.0, "min_requests": 4, "failure_ratio": 0.5, "open_for": 5.0}
    base.update(settings)
    breaker = CircuitBreaker(
        BreakerSettings(**base),  # type: ignore[arg-type]
        clock=clock,
        on_transition=lambda old, new: seen.append((old, new)),
    )
    return breaker, seen, clock


def trip(breaker: CircuitBreaker, failures: int = 4) -> None:
    for _ in range(failures):
        assert breaker.admit() is not None
        breaker.record_failure()


def test_starts_closed_and_allows() -> None:
    breaker, seen, _ = make()
    assert breaker.state == "closed"
    assert all(breaker.admit() == 0 for _ in range(100))  # closed: no probe held
    assert seen == []


def test_opens_only_at_min_requests() -> None:
    breaker, seen, _ = make()
    trip(breaker, 3)
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert seen == [("closed", "open")]
    assert breaker.admit() is None


def test_opens_at_exact_failure_ratio() -> None:
    breaker, _, _ = make(min_requests=4, failure_ratio=0.5)
    breaker.record_success()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.record_failure()  # 2 of 4
    assert breaker.state == "open"


def test_ratio_just_below_threshold_stays_closed() -> None:
    breaker, _, _ = make(min_requests=10, failure_ratio=0.3)
    for _ in range(8):
        breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()  # 2 of 10 < 0.3
    assert breaker.state == "closed"
    breaker.record_failure()  # 3 of 11 = 0.27
    assert breaker.state == "closed"
    breaker.record_failure()  # 4 of 12 = 0.33
    assert breaker.state == "open"


def test_float_ratio_compared_exactly() -> None:
    # 0.3 * 10 == 3.0000000000000004: multiplying would keep 3 failures of 10 closed.
    breaker, _, _ = make(min_requests=10, failure_ratio=0.3)
    for _ in range(7):
        breaker.record_success()
    trip(breaker, 3)
    assert breaker.state == "open"


def test_success_can_complete_min_requests() -> None:
    breaker, _, _ = make(min_requests=4)
    trip(breaker, 3)
    breaker.record_success()  # 3 of 4 failed
    assert breaker.state == "open"


def test_old_outcomes_leave_the_window() -> None:
    breaker, _, clock = make(window=10.0, min_requests=4)
    trip(breaker, 3)
    clock.now += 10.0  # the 3 failures expired (bucket width 1 s)
    breaker.record_failure()
    assert breaker.state == "closed"
    trip(breaker, 3)
    assert breaker.state == "open"


def test_outcomes_within_window_still_count() -> None:
    breaker, _, clock = make(window=10.0, min_requests=4)
    trip(breaker, 3)
    clock.now += 9.0
    breaker.record_failure()
    assert breaker.state == "open"


def test_open_refuses_until_open_for_then_half_open() -> None:
    breaker, seen, clock = make(open_for=5.0)
    trip(breaker)
    clock.now += 4.999
    assert breaker.admit() is None
    assert breaker.state == "open"
    clock.now += 0.001
    assert breaker.state == "open"  # state does not move by itself
    assert breaker.admit() is not None
    assert breaker.state == "half_open"
    assert seen == [("closed", "open"), ("open", "half_open")]


def test_half_open_admits_exactly_the_probe_count() -> None:
    breaker, _, clock = make(half_open_probes=3)
    trip(breaker)
    clock.now += 5.0
    assert [breaker.admit() is not None for _ in range(5)] == [True, True, True, False, False]


def test_probe_success_closes_with_fresh_window() -> None:
    breaker, seen, clock = make()
    trip(breaker)
    clock.now += 5.0
    assert breaker.admit() is not None
    breaker.record_success()
    assert breaker.state == "closed"
    trip(breaker, 3)  # would open if the old failures still counted
    assert breaker.state == "closed"
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_probe_failure_reopens_and_restarts_timer() -> None:
    breaker, seen, clock = make(open_for=5.0)
    trip(breaker)
    clock.now += 5.0
    assert breaker.admit() is not None
    clock.now += 2.0
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4.999
    assert breaker.admit() is None
    clock.now += 0.001
    assert breaker.admit() is not None
    assert seen == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
    ]


def test_release_frees_a_probe_without_counting() -> None:
    breaker, seen, clock = make(half_open_probes=1)
    trip(breaker)
    clock.now += 5.0
    probe = breaker.admit()
    assert probe
    assert breaker.admit() is None
    breaker.release(probe)
    assert breaker.state == "half_open"
    assert breaker.admit() is not None
    assert breaker.admit() is None
    assert seen[-1] == ("open", "half_open")


def test_only_a_probe_frees_a_probe_slot() -> None:
    """Calls admitted while closed, or as probes of an earlier half-open period, end without a
    verdict (cancelled, a 400) while a probe is in flight: the slot stays taken, so no second
    call reaches the upstream that is being tried."""
    breaker, _, clock = make(half_open_probes=1)
    before_outage = [breaker.admit() for _ in range(3)]
    assert before_outage == [0, 0, 0]
    trip(breaker)
    clock.now += 5.0
    earlier = breaker.admit()
    assert earlier
    breaker.record_failure()  # the probe failed: open again, then half-open again
    clock.now += 5.0
    probe = breaker.admit()
    assert probe and probe != earlier
    for held in [*before_outage, earlier]:
        breaker.release(held)  # type: ignore[arg-type]
    assert breaker.admit() is None  # the probe is still in flight
    breaker.release(probe)
    assert breaker.admit() is not None


def test_a_first_content_closes_a_half_open_breaker() -> None:
    """The probe's answer has begun: callers need not fail fast until a long answer ends."""
    breaker, seen, clock = make(half_open_probes=1)
    trip(breaker)
    clock.now += 5.0
    assert breaker.admit()
    breaker.answering()
    assert breaker.state == "closed"
    assert breaker.admit() == 0
    breaker.answering()  # closed: nothing moves
    breaker.record_success()  # the probe's own outcome, counted in the fresh window
    assert seen[-2:] == [("open", "half_open"), ("half_open", "closed")]


def test_a_finalizer_may_release_the_breaker_inside_its_own_critical_section() -> None:
    """A stream left unclosed (`for chunk in stream: break`) is a reference cycle, so the
    collector finalises it (`Call.finish` releases its breaker) wherever an allocation triggers
    a collection: also inside this breaker's lock, in the same thread. That must not hang."""
    collecting = threading.Event()

    def clock() -> float:  # read under the lock: a collection runs there
        if collecting.is_set():
            gc.collect()
        return 1000.0

    breaker = CircuitBreaker(BreakerSettings(), clock=clock)

    class Abandoned:
        def __init__(self) -> None:
            self.cycle = self

    weakref.finalize(Abandoned(), breaker.release, 1)
    done = threading.Event()

    def record() -> None:
        collecting.set()
        breaker.record_failure()
        done.set()

    threading.Thread(target=record, daemon=True).start()
    assert done.wait(5), "record_failure hung: the finalizer waited for the lock its own thread held"


def test_release_is_harmless_when_closed_or_unbalanced() -> None:
    breaker, seen, clock = make(half_open_probes=1)
    breaker.release(0)
    trip(breaker)
    clock.now += 5.0
    probe = breaker.admit()
    assert probe
    breaker.release(probe)
    breaker.release(probe)  # one more than admitted: must not create a second slot
    assert [breaker.admit() is not None, breaker.admit() is not None] == [True, False]
    assert len(seen) == 2


def test_straggler_outcomes_while_open_change_nothing() -> None:
    breaker, seen, clock = make(open_for=5.0)
    trip(breaker)
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 5.0
    assert breaker.admit() is not None
    assert seen == [("closed", "open"), ("open", "half_open")]


def test_disabled_breaker_allows_everything() -> None:
    breaker, seen, _ = make(enabled=False)
    trip(breaker, 100)
    breaker.release(0)
    assert breaker.state == "closed"
    assert breaker.admit() is not None
    assert seen == []


def test_window_memory_is_bounded() -> None:
    breaker, _, clock = make(min_requests=1_000_000)
    for _ in range(1000):
        clock.now += 0.37
        breaker.record_success()
    assert len(breaker._buckets) <= 10


def test_callback_error_is_swallowed() -> None:
    def boom(old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("recorder broke")

    breaker = CircuitBreaker(BreakerSettings(min_requests=1), clock=FakeClock(), on_transition=boom)
    breaker.record_failure()
    assert breaker.state == "open"


def test_reentrant_callback_keeps_order() -> None:
    clock = FakeClock()
    seen: list[Transition] = []
    breaker: CircuitBreaker

    def on_transition(old: BreakerState, new: BreakerState) -> None:
        seen.append((old, new))
        if new == "open" and len(seen) == 1:
            clock.now += 100.0
            assert breaker.admit() is not None  # moves to half_open from inside the callback

    breaker = CircuitBreaker(BreakerSettings(min_requests=1), clock=clock, on_transition=on_transition)
    breaker.record_failure()
    assert seen == [("closed", "open"), ("open", "half_open")]
    assert breaker.state == "half_open"


def test_concurrent_probes_and_transitions() -> None:
    """Threads hammer a half-open breaker: never more probes than allowed, transitions alternate."""
    clock = FakeClock()
    seen: list[Transition] = []
    breaker = CircuitBreaker(
        BreakerSettings(min_requests=1, open_for=1.0, half_open_probes=2),
        clock=clock,
        on_transition=lambda old, new: seen.append((old, new)),
    )
    breaker.record_failure()
    clock.now += 1.0
    active = 0
    peak = 0
    admitted = 0
    guard = threading.Lock()
    start = threading.Barrier(8)

    def worker(index: int) -> None:
        nonlocal active, peak, admitted
        start.wait(timeout=5)
        for i in range(300):
            probe = breaker.admit()
            if probe is None:
                continue
            # `active` lags admit() and leads the outcome, so it never exceeds the true number
            # of outstanding probes: more than 2 can only mean the breaker over-admitted.
            with guard:
                active += 1
                admitted += 1
                peak = max(peak, active)
            sum(range(50))  # a little work so probes overlap
            with guard:
                active -= 1
            if (index + i) % 50 == 0:
                breaker.record_failure()  # reopens; move the fake clock past open_for
                clock.now += 1.0
            else:
                breaker.release(probe)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in pool)
    assert peak <= 2
    assert admitted >= 2
    # Every reported transition starts where the previous one ended.
    assert seen[0] == ("closed", "open")
    assert all(prev[1] == cur[0] for prev, cur in itertools.pairwise(seen))
    assert seen[-1][1] == breaker.state


# -- registry ---------------------------------------------------------------------------------


def test_registry_creates_one_breaker_per_key() -> None:
    breakers = Breakers(BreakerSettings(), clock=FakeClock())
    a = breakers.get("api.openai.com", "gpt-4o")
    assert breakers.get("api.openai.com", "gpt-4o") is a
    assert breakers.get("api.openai.com", "gpt-4o-mini") is not a
    assert breakers.get("azure", "gpt-4o") is not a
    assert len(breakers) == 3


def test_registry_reports_key_with_transitions() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str, BreakerState, BreakerState]] = []
    breakers = Breakers(
        BreakerSettings(min_requests=1, open_for=1.0),
        clock=clock,
        on_transition=lambda up, model, old, new: seen.append((up, model, old, new)),
    )
    breakers.get("up", "m1").record_failure()
    clock.now += 1.0
    assert breakers.get("up", "m1").admit() is not None
    breakers.get("up", "m1").record_success()
    assert seen == [
        ("up", "m1", "closed", "open"),
        ("up", "m1", "open", "half_open"),
        ("up", "m1", "half_open", "closed"),
    ]
    assert breakers.states() == {("up", "m1"): "closed"}


def test_registry_evicts_least_recently_used_closed() -> None:
    breakers = Breakers(BreakerSettings(min_requests=1), clock=FakeClock(), max_keys=3)
    breakers.get("u", "a").record_failure()  # open: kept while a closed one can go
    breakers.get("u", "b")
    breakers.get("u", "c")
    breakers.get("u", "b")  # b is now more recent than c
    breakers.get("u", "d")
    assert list(breakers.states()) == [("u", "a"), ("u", "b"), ("u", "d")]
    assert breakers.states()[("u", "a")] == "open"


def test_registry_evicts_lru_open_when_none_closed_and_reports_it() -> None:
    seen: list[tuple[str, str, BreakerState, BreakerState]] = []
    breakers = Breakers(
        BreakerSettings(min_requests=1),
        clock=FakeClock(),
        max_keys=2,
        on_transition=lambda up, model, old, new: seen.append((up, model, old, new)),
    )
    breakers.get("u", "a").record_failure()
    breakers.get("u", "b").record_failure()
    seen.clear()
    breakers.get("u", "c")
    assert breakers.states() == {("u", "b"): "open", ("u", "c"): "closed"}
    assert seen == [("u", "a", "open", "closed")]


def test_an_evicted_breaker_that_a_call_still_holds_reports_nothing_more() -> None:
    """A call admitted by a's breaker is in flight when a is evicted; its failure then opens
    that breaker, which no registry holds: reported, the gauge would read a open for ever
    beside the new closed breaker that serves a's calls."""
    seen: list[tuple[str, str, BreakerState, BreakerState]] = []
    breakers = Breakers(
        BreakerSettings(min_requests=1),
        clock=FakeClock(),
        max_keys=1,
        on_transition=lambda up, model, old, new: seen.append((up, model, old, new)),
    )
    held = breakers.get("u", "a")
    breakers.get("u", "b")  # evicts a, closed
    assert held.retired
    held.record_failure()
    assert held.state == "open"
    assert seen == []
    assert breakers.get("u", "a").state == "closed"


def test_registry_memory_is_capped() -> None:
    breakers = Breakers(BreakerSettings(), clock=FakeClock(), max_keys=50)
    for n in range(500):
        breakers.get("u", f"model-{n}")
    assert len(breakers) == 50
    assert ("u", "model-499") in breakers.states()


def test_a_long_model_name_is_kept_short_and_still_its_own() -> None:
    # A caller names the model, as long as a request body may be: a kept breaker, which outlives
    # the call, must not hold megabytes of it.
    breakers = Breakers(BreakerSettings(), clock=FakeClock())
    first, second = "m" * 2_000_000 + "a", "m" * 2_000_000 + "b"
    a = breakers.get("u", first)
    assert breakers.get("u", first) is a and breakers.get("u", second) is not a
    assert all(len(model) == MAX_MODEL_KEY for _, model in breakers.states())
    assert model_key("gpt-4o") == "gpt-4o" and model_key(first).startswith("m" * 200)


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_registry_rejects_bad_max_keys(value: object) -> None:
    with pytest.raises(ValueError, match=r"^Breakers.max_keys must be an integer >= 1, got "):
        Breakers(BreakerSettings(), max_keys=value)  # type: ignore[arg-type]


def test_registry_concurrent_get_returns_one_breaker() -> None:
    breakers = Breakers(BreakerSettings(), clock=FakeClock())
    got: list[CircuitBreaker] = []
    guard = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait(timeout=5)
        breaker = breakers.get("u", "m")
        with guard:
            got.append(breaker)

    pool = [threading.Thread(target=worker) for _ in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=5)
    assert len(got) == 8
    assert len({id(b) for b in got}) == 1


# -- expiry: an open breaker no call reaches ------------------------------------------------------


def test_expire_moves_open_to_half_open_only_once_open_for_has_passed() -> None:
    breaker, seen, clock = make(min_requests=1, open_for=5.0)
    breaker.expire()  # closed: nothing to do
    breaker.record_failure()
    clock.now += 4.9
    breaker.expire()
    assert breaker.state == "open"
    clock.now += 0.1
    breaker.expire()
    assert breaker.state == "half_open"
    assert seen == [("closed", "open"), ("open", "half_open")]
    breaker.expire()  # half_open: nothing to do
    assert breaker.admit() is not None  # the probe slot is there, as after admit()'s own move
    assert breaker.admit() is None


def test_expire_does_nothing_when_disabled() -> None:
    breaker, seen, clock = make(min_requests=1, enabled=False)
    breaker.record_failure()
    clock.now += 100
    breaker.expire()
    assert (breaker.state, seen) == ("closed", [])


def test_registry_schedules_the_expiry_of_each_opening() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str, BreakerState, BreakerState]] = []
    timers: list[tuple[float, Callable[[], None]]] = []
    breakers = Breakers(
        BreakerSettings(min_requests=1, open_for=7.0),
        clock=clock,
        on_transition=lambda up, model, old, new: seen.append((up, model, old, new)),
        schedule=lambda delay, action: timers.append((delay, action)),
    )
    breakers.get("up", "m").record_failure()
    assert [delay for delay, _ in timers] == [7.0]
    timers[0][1]()  # early (an injected clock that did not move): still open
    assert breakers.states() == {("up", "m"): "open"}
    clock.now += 7.0
    timers[0][1]()
    assert breakers.states() == {("up", "m"): "half_open"}
    assert seen[-1] == ("up", "m", "open", "half_open")
    breakers.get("up", "m").admit()
    breakers.get("up", "m").record_failure()  # the probe fails: open again, a new timer
    assert [delay for delay, _ in timers] == [7.0, 7.0]


def test_registry_expiry_of_an_evicted_breaker_touches_nothing() -> None:
    clock = FakeClock()
    timers: list[Callable[[], None]] = []
    breakers = Breakers(
        BreakerSettings(min_requests=1, open_for=1.0),
        clock=clock,
        max_keys=1,
        schedule=lambda delay, action: timers.append(action),
    )
    breakers.get("u", "a").record_failure()
    breakers.get("u", "b")  # evicts a
    clock.now += 1.0
    timers[0]()
    assert breakers.states() == {("u", "b"): "closed"}


def test_registry_expires_by_itself_with_a_real_timer() -> None:
    moved = threading.Event()
    breakers = Breakers(
        BreakerSettings(min_requests=1, open_for=0.05),
        on_transition=lambda up, model, old, new: moved.set() if new == "half_open" else None,
        schedule=start_timer,
    )
    breakers.get("u", "m").record_failure()
    assert moved.wait(timeout=10)
    assert breakers.states() == {("u", "m"): "half_open"}

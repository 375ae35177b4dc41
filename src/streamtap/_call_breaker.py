"""A call's dealings with its routes' circuit breakers: admission, verdicts, the events they make.

`Call` holds one `CallBreaker`. Before each attempt it asks `admit`; each attempt's end gives the
breaker a verdict (`concluded`), the first content closes a half-open one (`answering`), and a
call that ends with an attempt still admitted frees its probe (`release`). Every move of a
breaker becomes a `BreakerTransition` on the call's observer. No I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._events import BreakerTransition, CallObserver
from ._fallback import Route

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker
    from ._engine import Engine
    from ._errors import Failure
    from ._taxonomy import BreakerState


class CallBreaker:
    """The breaker that admitted a call's current attempt, and the probe it holds."""

    __slots__ = ("_breaker", "_call_id", "_engine", "_observer", "_probe")

    def __init__(self, engine: Engine, call_id: int, observer: CallObserver) -> None:
        self._engine = engine
        self._call_id = call_id
        self._observer = observer
        self._breaker: CircuitBreaker | None = None
        self._probe = 0  # the half-open probe the current attempt holds (0: none)

    def admit(self, route: Route) -> bool:
        """Whether `route`'s breaker lets an attempt go now; if so, the attempt holds it."""
        breaker = self._engine.breakers.get(route.upstream, route.model)
        probe = breaker.admit()
        if probe is None:
            return False
        self._breaker, self._probe = breaker, probe
        return True

    def refuses_at(self, route: Route, when: float) -> bool:
        """Whether `route`'s breaker will be open at monotonic time `when`."""
        return self._engine.breakers.get(route.upstream, route.model).refuses_at(when)

    def concluded(self, route: Route, failure: Failure | None) -> None:
        """The admitted attempt ended: a success (None), or a failure that counts against the
        upstream or, the caller's fault, merely frees its probe."""
        breaker, self._breaker = self._breaker, None
        if breaker is None:
            return
        before = breaker.state
        if failure is None:
            breaker.record_success()
        elif failure.counts_for_breaker:
            breaker.record_failure()
        else:
            breaker.release(self._probe)
        self._moved(route, breaker, before)

    def answering(self, route: Route) -> None:
        """The admitted attempt's first content: the upstream serves again, a half-open breaker
        closes now rather than at the answer's end."""
        breaker = self._breaker
        if breaker is not None:
            before = breaker.state
            breaker.answering()
            self._moved(route, breaker, before)

    def release(self) -> None:
        """The call ended with its attempt admitted but never concluded (cancelled, abandoned)."""
        if self._breaker is not None:
            self._breaker.release(self._probe)
            self._breaker = None

    def _moved(self, route: Route, breaker: CircuitBreaker, before: BreakerState) -> None:
        after = breaker.state
        if after != before and not breaker.retired:
            self._observer.on_event(
                BreakerTransition(route.upstream, route.model, before, after, self._call_id, self._engine.id)
            )

"""The per-call state machine: attempt, retry, fall back or give up. No I/O.

Drivers ask `next()` what to do (Send, Wait, Serve or GiveUp), do it, and report back
(`sending`, `attempt_failed`, `committed_at`, `attempt_ok`, `finish`); like tenacity's `iter()`, one machine
serves the sync and async drivers of both doors. The rules it decides by are pure functions
beside it: what follows a failed attempt in `_call_recovery.py`, the answer caches in
`_call_cache.py`, what a finished call records in `_call_finish.py`; its dealings with the
circuit breakers are `_call_breaker.py`'s.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping, MutableSequence
from typing import TYPE_CHECKING, Any, Protocol

from ._attempt import StreamAttempt
from ._call_breaker import CallBreaker
from ._call_cache import cached_answer, cached_text, keep_answer
from ._call_finish import answer_messages, cacheable, call_finished
from ._call_recovery import (
    NO_CACHE,
    falls_back,
    give_up_type,
    next_fallback,
    resume_after,
    retry_wait,
    still_running,
)
from ._dialect import Dialect, StreamFacts
from ._errors import Failure
from ._events import (
    AttemptFinished,
    AttemptStarted,
    CallObserver,
    FallbackUsed,
    FirstToken,
    RetryScheduled,
    RetrySuppressed,
)
from ._fallback import Fallback, Route, cache_key, cache_scope, cacheable_request, split_url
from ._resume import retrieve_url
from ._steps import ErrorResponse, GiveUp, Send, Step, Wait
from ._taxonomy import Api, ErrorType, Outcome, SuppressCause
from ._utf8 import json_bytes

if TYPE_CHECKING:
    from ._engine import Engine


class Caller(Protocol):
    """Who a call serves, when a door can tell whether they left (the proxy's client watch)."""

    @property
    def left(self) -> bool: ...


class Call:
    """One logical call: its routes, attempts, retries and exactly-once finish."""

    def __init__(
        self,
        engine: Engine,
        *,
        call_id: int,
        api: Api,
        dialect: Dialect,
        primary: Route,
        suffix: str,
        observer: CallObserver,
        started_at: float,
    ) -> None:
        self.engine = engine
        self.call_id = call_id
        self.api = api
        self.dialect = dialect
        self.primary = primary
        self.route = primary
        self.suffix = suffix
        self.observer = observer
        self.started_at = started_at
        policy = engine.policy
        self.deadline = started_at + policy.total_timeout if policy.total_timeout is not None else None
        self.attempts = 0
        self._retries = 0  # retries on the current route
        self._total_wait = 0.0
        self._fallbacks: list[Fallback] = list(engine.fallbacks)
        self._pending: Step | None = None
        self._breaker = CallBreaker(engine, call_id, observer)
        self.last_failure: Failure | None = None
        self.error_response: ErrorResponse | None = None
        self.exception: BaseException | None = None
        self.request_id: str | None = None  # the current attempt's x-request-id, once answered
        # The background response this call created, once a stream gave its id, while it may
        # still run upstream: retries read it again, and no fallback creates another.
        self.background_id: str | None = None
        self._give_up_type: ErrorType | None = None
        # How the caller's own route ended, kept when the first fallback is taken.
        self._own_route_end: (
            tuple[Failure | None, ErrorResponse | None, BaseException | None, ErrorType | None, str | None]
            | None
        ) = None
        self.committed = False
        self.time_to_first_token: float | None = None
        self.stream: StreamAttempt | None = None  # the attempt whose content the caller receives
        self.facts = StreamFacts()
        # The bytes released to the caller: all of them for the text of an error, the cache,
        # capture and a background response's resume; else the last read only (the proxy:
        # 20,000 chunks held 6 MB a stream until it ended).
        self.delivered: MutableSequence[bytes] = (
            [] if engine.keeps_delivered or self._background else collections.deque(maxlen=1)
        )
        self.served_by: Fallback | None = None
        self._current_fallback: Fallback | None = None
        self.finished = False
        self._sent: dict[int, float] = {}
        self._resume_after: int | None = None
        self._rejoin: str | None = None  # a background response to read again from its start
        # Whose cached answers this call may read and write (`_cache_key`): until the driver
        # names the request's credential (`scope_cache`), those of its URL with no credential.
        self._cache_headers: Mapping[str, str] = {}
        # False for a request the cache may not answer (`cacheable_request`), or once the
        # primary route failed in a way in NO_CACHE.
        self._cache_allowed = cacheable_request(self.primary.body)
        # Set by a door that knows whether its caller left: then a call stopped while the caller
        # is still there (the proxy's shutdown grace ran out) failed it, and is no cancellation.
        self.caller: Caller | None = None

    def scope_cache(self, headers: Mapping[str, str]) -> None:
        """Share cached answers only with calls to the same URL with the same credential, the
        one in the request's `headers` (kept as a digest, made only if a cache is used)."""
        self._cache_headers = headers

    def _cache_key(self) -> str:
        return cache_key(self.api, self.primary.body, cache_scope(self.primary.url, self._cache_headers))

    # -- decisions -------------------------------------------------------------------------

    def next(self) -> Step:
        """What the driver does now."""
        if self._pending is not None:
            step, self._pending = self._pending, None
            return step
        if self._resume_after is not None:
            after, self._resume_after = self._resume_after, None
            assert self.facts.response_id is not None
            return self._get(self.route, self.facts.response_id, after)
        if self._rejoin is not None:
            response_id, self._rejoin = self._rejoin, None
            return self._get(self.route, response_id, None)
        route = self.route
        if route.fallback == "cache":
            return self._serve_cache()
        engine = self.engine
        if engine.policy.breaker.enabled and not self.committed and not self._breaker.admit(route):
            # A retry the breaker refuses when it falls due was counted when scheduled (it
            # opened during the wait): the call gives up as circuit_open, counted once. A
            # fallback it refuses failed; the call's error stays its last failure's.
            if route.fallback is None:
                self._give_up_type = "circuit_open"
            else:
                self.observer.on_event(FallbackUsed(self.call_id, route.fallback, route.model, False))
            return self._fall_back() or GiveUp()
        return self._send(route)

    def _get(self, route: Route, response_id: str, after: int | None) -> Send:
        """Read a background response's stream again: after the event numbered `after` (a
        resume, the caller has what came before), or from its start (None, before commit)."""
        index = self.attempts
        self.attempts += 1
        url = retrieve_url(route.url, response_id, after)
        started = AttemptStarted(
            self.call_id, index, "GET", event_url(url.split("?", 1)[0]), route.model, route.fallback
        )
        self.observer.on_event(started)
        return Send("GET", url, None, route, index, started.carrier, after=after)

    def _send(self, route: Route) -> Send:
        index = self.attempts
        self.attempts += 1
        started = AttemptStarted(
            self.call_id, index, "POST", event_url(route.url.split("?", 1)[0]), route.model, route.fallback
        )
        self.observer.on_event(started)
        body = route.content
        if body is None:
            body = json_bytes(route.body)
        return Send("POST", route.url, body, route, index, started.carrier)

    def attempt_failed(
        self,
        send: Send,
        failure: Failure,
        *,
        now: float,
        wall: float,
        headers: Mapping[str, str] | None = None,
        error_response: ErrorResponse | None = None,
        exception: BaseException | None = None,
        time_to_first_token: float | None = None,
        status_code: int | None = None,
        response_id: str | None = None,
    ) -> None:
        """Record a failed attempt and decide what comes next.

        `status_code` is the HTTP status of an attempt that failed after its headers (a 200
        whose stream broke), for the attempt's telemetry; `response_id` the id its stream gave
        before it broke (a background response's, which a retry rejoins).
        """
        if self._background:
            self.background_id = still_running(failure, response_id or self.background_id)
        self.observer.on_event(
            AttemptFinished(
                self.call_id,
                send.attempt,
                failure.status_code if failure.status_code is not None else status_code,
                failure.error_type,
                failure.phase,
                now - self.sent_at(send, now),
                time_to_first_token,
                failure.retryable,
                failure.code,
            )
        )
        self._breaker.concluded(self.route, failure)
        self.last_failure = failure
        self.error_response = error_response
        # Kept to raise again when the call gives up before its first content, and only then:
        # held by a committed stream's call, its traceback's frames would hold that stream, and
        # the stream's finalizer (which holds the call) would never run.
        self.exception = None if self.committed else exception
        self._give_up_type = None
        if self.route.fallback is None and failure.error_type in NO_CACHE:
            self._cache_allowed = False
        if self.committed:
            self._after_commit_failure(failure, headers or {}, now, wall)
            return
        if failure.retryable and self.route.fallback is None:
            cause = self._retry_blocker(headers or {}, now, wall)
            if cause is None:
                self._rejoin = self.background_id  # if any, next() sends it after the pending Wait
                return
            self._suppress(cause, failure)
            self._give_up_type = give_up_type(cause)
        if self._current_fallback is not None:
            self.observer.on_event(
                FallbackUsed(self.call_id, self.route.fallback or "model", self.route.model, False)
            )
            # A fallback's failure is its own (its key, its model, its account, its upstream),
            # even what would stop the chain for the caller's route (a 401, a 400): the next
            # fallback may serve, and a call none serves fails with the error its own route
            # met, never one about a key or model the caller did not choose.
            assert self._own_route_end is not None
            self.last_failure, self.error_response, self.exception, self._give_up_type, self.request_id = (
                self._own_route_end
            )
            self._pending = self._fall_back() or GiveUp()
            return
        if not falls_back(failure):
            self._pending = GiveUp()
            return
        self._pending = self._fall_back() or GiveUp()

    def _retry_blocker(self, headers: Mapping[str, str], now: float, wall: float) -> SuppressCause | None:
        """Schedule a retry and return None, or say what stops it."""
        engine = self.engine
        delay = retry_wait(
            engine.policy, self._retries, self._total_wait, self.deadline, headers, now, wall, engine.rng
        )
        if isinstance(delay, str):
            return delay
        # Open until after the wait: no retry to wait for. (A resume after commit is the one way
        # to save the answer the caller is reading, and goes whatever the breaker says.)
        if (
            engine.policy.breaker.enabled
            and not self.committed
            and self._breaker.refuses_at(self.route, now + delay)
        ):
            return "breaker"
        if not engine.budget.try_withdraw():
            return "budget"
        assert self.last_failure is not None
        self.observer.on_event(
            RetryScheduled(self.call_id, self.attempts - 1, self.last_failure.error_type, delay)
        )
        self._retries += 1
        self._total_wait += delay
        self._pending = Wait(delay)
        return None

    def _after_commit_failure(
        self, failure: Failure, headers: Mapping[str, str], now: float, wall: float
    ) -> None:
        # After commit the only invisible repair is resuming a background response.
        after = resume_after(failure, self._background, self.facts.response_id, self.delivered)
        if after is not None:
            # A resume request that got an error status waits as long as it asked (Retry-After).
            cause = self._retry_blocker(headers, now, wall)
            if cause is None:
                self._resume_after = after  # next() sends it after the pending Wait
                return
            self._suppress(cause, failure)
        self._pending = GiveUp()

    @property
    def _background(self) -> bool:
        """A background response: it runs upstream whatever becomes of the stream reading it."""
        return self.api == "responses" and bool(self.primary.body.get("background"))

    def _fall_back(self) -> Step | None:
        if self._current_fallback is None:
            # How the caller's own route ended, which a call no fallback serves fails with (its
            # x-request-id with it: the one support would ask for).
            self._own_route_end = (
                self.last_failure,
                self.error_response,
                self.exception,
                self._give_up_type,
                self.request_id,
            )
        # Past the total timeout, or beside a background response that may still run, only the
        # cache may serve (see `next_fallback`).
        late = self.deadline is not None and self.engine.clock() >= self.deadline
        chosen = next_fallback(
            self._fallbacks,
            self.primary,
            self.suffix,
            cache_allowed=self._cache_allowed,
            cache_only=late or self.background_id is not None,
        )
        if chosen is None:
            return None
        self._current_fallback, self.route = chosen
        self._retries = 0
        return self.next()

    def _serve_cache(self) -> Step:
        fallback = self._current_fallback
        assert fallback is not None and fallback.cache is not None
        text = cached_text(fallback.cache, self._cache_key())
        ok = text is not None
        self.observer.on_event(FallbackUsed(self.call_id, "cache", self.primary.model, ok))
        if text is None:
            return self._fall_back() or GiveUp()
        self.served_by = fallback
        self._give_up_type = None
        return cached_answer(self.dialect, self.primary, text)

    def _suppress(self, cause: SuppressCause, failure: Failure) -> None:
        self.observer.on_event(
            RetrySuppressed(self.call_id, max(self.attempts - 1, 0), failure.error_type, cause)
        )

    # -- progress --------------------------------------------------------------------------

    def sent_at(self, send: Send, default: float) -> float:
        """When `send` was sent (monotonic)."""
        return self._sent.get(send.attempt, default)

    def sending(self, send: Send, now: float) -> None:
        """The driver is about to send `send`."""
        self._sent[send.attempt] = now
        self.request_id = None

    def committed_at(self, send: Send, attempt: StreamAttempt, now: float, status_code: int) -> None:
        """The attempt's first content (of an answer with `status_code`) is being released to
        the caller."""
        self.committed = True
        self.exception = None  # an earlier attempt's: no longer the call's to raise (`attempt_failed`)
        self._own_route_end = None  # so is the exception kept with it
        self.stream = attempt
        self.facts = attempt.facts
        if self._background:
            self.background_id = attempt.facts.response_id or self.background_id
        self.time_to_first_token = now - self.started_at
        self.observer.on_event(FirstToken(self.call_id, self.time_to_first_token, send.attempt, status_code))
        self._breaker.answering(self.route)
        if self._current_fallback is not None:
            self.served_by = self._current_fallback
            self.observer.on_event(
                FallbackUsed(self.call_id, self.route.fallback or "model", self.route.model, True)
            )

    def delivered_whole(self, now: float) -> None:
        """A streaming caller gets a whole answer at once (cache, non-streaming fallback)."""
        if self.primary.stream and not self.committed:
            self.committed = True
            self.time_to_first_token = now - self.started_at
            self.observer.on_event(
                FirstToken(self.call_id, self.time_to_first_token, max(self.attempts - 1, 0))
            )

    def attempt_ok(self, send: Send, now: float, status: int, time_to_first_token: float | None) -> None:
        """The attempt served the call to its end."""
        self.observer.on_event(
            AttemptFinished(
                self.call_id,
                send.attempt,
                status,
                None,
                None,
                now - self.sent_at(send, now),
                time_to_first_token,
            )
        )
        self._breaker.concluded(self.route, None)
        if not self.committed and self._current_fallback is not None:
            self.served_by = self._current_fallback
            self.observer.on_event(
                FallbackUsed(self.call_id, self.route.fallback or "model", self.route.model, True)
            )

    @property
    def error_type(self) -> ErrorType:
        if self._give_up_type is not None:
            return self._give_up_type
        return self.last_failure.error_type if self.last_failure is not None else "other"

    def finish(self, outcome: Outcome, now: float, *, body: Mapping[str, Any] | None = None) -> None:
        """Finalise the call exactly once; later calls are ignored."""
        if self.finished:
            return
        self.finished = True
        # The last attempt's exception holds, in its traceback, the frames that hold this call:
        # let go of it (`give_up` took it first), so the call is freed without the cyclic
        # collector, whose pauses under load stop every stream at once.
        self.exception = None
        self._own_route_end = None
        self._breaker.release()
        engine = self.engine
        if outcome == "ok" and self.served_by is None and engine.caches and self._cache_allowed:
            kept = cacheable(self.dialect, self.delivered, body)
            if kept is not None:
                keep_answer(engine.caches, self._cache_key(), kept)
        # Whatever served it and however it ended: what the caller got is what capture records.
        messages = None
        if engine.captures_answers:
            try:
                messages = answer_messages(
                    self.dialect, self.delivered, body, outcome, stream=self.primary.stream
                )
            except Exception as error:  # content capture is telemetry: it never fails the call
                engine.recorder.failed(error)
        self.observer.on_event(call_finished(self, outcome, now, messages))

    def delivered_text(self) -> str:
        """The text the caller got; empty when the call kept only its last read (`keep_text`)."""
        if not isinstance(self.delivered, list):
            return ""
        return self.dialect.text(b"".join(self.delivered))


@functools.lru_cache(maxsize=256)
def event_url(url: str) -> str:
    """An attempt's URL (without its query) as recorders get it: without a user:password@ too,
    which any recorder, an app's own among them, could log."""
    scheme, sep, authority, rest = split_url(url)
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{rest}" if "@" in authority else url

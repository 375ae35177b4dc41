"""The per-call state machine: attempt, retry, fall back or give up. No I/O.

Drivers ask `next()` what to do (Send, Wait, Serve or GiveUp), do it, and report back
(`attempt_failed`, `committed`, `attempt_ok`, `finish`); like tenacity's `iter()`, one machine
serves the sync and async drivers of both doors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._attempt import StreamAttempt
from ._backoff import exceeds_max_retry_after, retry_delay
from ._dialect import Dialect, StreamFacts
from ._errors import Failure
from ._events import (
    AttemptFinished,
    AttemptStarted,
    BreakerTransition,
    CallFinished,
    CallObserver,
    FallbackUsed,
    FirstToken,
    RetryScheduled,
    RetrySuppressed,
    log,
)
from ._fallback import AnswerCache, Fallback, Route, cache_key, cache_scope, fallback_route
from ._responses import last_sequence_number, retrieve_url
from ._steps import ErrorResponse, GiveUp, Send, Serve, Step, Wait
from ._taxonomy import Api, ErrorType, Outcome, SuppressCause

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker
    from ._engine import Engine

# Failures that no other model or upstream fixes.
_NO_FALLBACK: frozenset[ErrorType] = frozenset({"auth", "bad_request"})
# Failures of the primary route that its last good answer must not hide: a model this key
# cannot reach (gone, renamed, never granted) is for the caller to learn, not an outage.
_NO_CACHE: frozenset[ErrorType] = frozenset({"not_found"})
# Failures of the way to a background response, not of the response: it goes on upstream, so a
# retry before commit rejoins it from its start rather than create (and pay for) a second one.
_REJOINABLE: frozenset[ErrorType] = frozenset(
    {"stream_interrupted", "stream_truncated", "stall", "first_token_timeout", "timeout"}
)


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
        self._breaker: CircuitBreaker | None = None
        self.last_failure: Failure | None = None
        self.error_response: ErrorResponse | None = None
        self.exception: BaseException | None = None
        self._give_up_type: ErrorType | None = None
        self.committed = False
        self.time_to_first_token: float | None = None
        self.stream: StreamAttempt | None = None  # the attempt whose content the caller receives
        self.facts = StreamFacts()
        self.delivered: list[bytes] = []  # bytes released to the caller (for text on error or capture)
        self.served_by: Fallback | None = None
        self._current_fallback: Fallback | None = None
        self.finished = False
        self._sent: dict[int, float] = {}
        self._resume_after: int | None = None
        self._rejoin: str | None = None  # a background response to read again from its start
        # Whose cached answers this call may read and write (`_cache_key`): until the driver
        # names the request's credential (`scope_cache`), those of its URL with no credential.
        self._cache_headers: Mapping[str, str] = {}
        self._cache_allowed = True  # False once the primary route failed in a way in _NO_CACHE

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
        if engine.policy.breaker.enabled and not self.committed:
            breaker = engine.breakers.get(route.upstream, route.model)
            if not breaker.allow():
                if self.attempts and route.fallback is None:  # fallbacks are never retries
                    self._suppress("breaker", self.last_failure)
                self._give_up_type = "circuit_open"
                return self._fall_back() or GiveUp()
            self._breaker = breaker
        return self._send(route)

    def _get(self, route: Route, response_id: str, after: int | None) -> Send:
        """Read a background response's stream again: after the event numbered `after` (a
        resume, the caller has what came before), or from its start (None, before commit)."""
        index = self.attempts
        self.attempts += 1
        url = retrieve_url(route.url, response_id, after)
        started = AttemptStarted(
            self.call_id, index, "GET", url.split("?", 1)[0], route.model, route.fallback
        )
        self.observer.on_event(started)
        return Send("GET", url, None, route, index, started.carrier, resume=after is not None)

    def _send(self, route: Route) -> Send:
        index = self.attempts
        self.attempts += 1
        started = AttemptStarted(
            self.call_id, index, "POST", route.url.split("?", 1)[0], route.model, route.fallback
        )
        self.observer.on_event(started)
        body = route.content
        if body is None:
            body = json.dumps(route.body, separators=(",", ":"), ensure_ascii=False).encode()
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
        self.observer.on_event(
            AttemptFinished(
                self.call_id,
                send.attempt,
                failure.status_code if failure.status_code is not None else status_code,
                failure.error_type,
                failure.phase,
                now - self._sent_at(send, now),
                time_to_first_token,
                failure.retryable,
            )
        )
        self._record_breaker(failure)
        self.last_failure = failure
        self.error_response = error_response
        self.exception = exception
        self._give_up_type = None
        if self.route.fallback is None and failure.error_type in _NO_CACHE:
            self._cache_allowed = False
        if self.committed:
            self._after_commit_failure(failure, headers or {}, now, wall)
            return
        if failure.retryable and self.route.fallback is None:
            cause = self._retry_blocker(headers or {}, now, wall)
            if cause is None:
                if response_id is not None and self._background and failure.error_type in _REJOINABLE:
                    self._rejoin = response_id  # next() sends it after the pending Wait
                return
            self._suppress(cause, failure)
            if cause == "budget":
                self._give_up_type = "budget_exhausted"
            elif cause == "breaker":
                self._give_up_type = "circuit_open"
        if self._current_fallback is not None:
            self.observer.on_event(
                FallbackUsed(self.call_id, self.route.fallback or "model", self.route.model, False)
            )
        if failure.error_type in _NO_FALLBACK:
            self._pending = GiveUp()
            return
        self._pending = self._fall_back() or GiveUp()

    def _retry_blocker(self, headers: Mapping[str, str], now: float, wall: float) -> SuppressCause | None:
        """Schedule a retry and return None, or say what stops it."""
        policy = self.engine.policy
        if self._retries + 1 >= policy.max_attempts:
            return "attempts"
        if exceeds_max_retry_after(policy, headers, wall):
            return "deadline"
        delay = retry_delay(policy, self._retries, headers, wall, self.engine.rng)
        if self._total_wait + delay > policy.max_retry_wait:
            return "deadline"
        if self.deadline is not None and now + delay >= self.deadline:
            return "deadline"
        # Open until after the wait: no retry to wait for. (A resume after commit is the one way
        # to save the answer the caller is reading, and goes whatever the breaker says.)
        if policy.breaker.enabled and not self.committed and self._breaker_refuses_at(now + delay):
            return "breaker"
        if not self.engine.budget.try_withdraw():
            return "budget"
        assert self.last_failure is not None
        self.observer.on_event(
            RetryScheduled(self.call_id, self.attempts - 1, self.last_failure.error_type, delay)
        )
        self._retries += 1
        self._total_wait += delay
        self._pending = Wait(delay)
        return None

    def _breaker_refuses_at(self, when: float) -> bool:
        return self.engine.breakers.get(self.route.upstream, self.route.model).refuses_at(when)

    def _after_commit_failure(
        self, failure: Failure, headers: Mapping[str, str], now: float, wall: float
    ) -> None:
        # After commit the only invisible repair is resuming a background response.
        resumable = (
            self._background
            and self.facts.response_id is not None
            # The stream broke, or the resume request itself failed in a way a retry may fix.
            and (
                failure.error_type in ("stream_interrupted", "stream_truncated", "stall") or failure.retryable
            )
        )
        after = last_sequence_number(self.delivered) if resumable else None
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
        # Once the total timeout ran out only the cache may serve: a request upstream could not
        # finish in time, and would only end the call with its own timeout instead of the call's.
        late = self.deadline is not None and self.engine.clock() >= self.deadline
        while self._fallbacks:
            fallback = self._fallbacks.pop(0)
            if fallback.kind == "cache" and not self._cache_allowed:
                continue
            if late and fallback.kind != "cache":
                continue
            route = fallback_route(self.primary, fallback, self.suffix)
            if route is None:
                continue
            self.route = route
            self._current_fallback = fallback
            self._retries = 0
            return self.next()
        return None

    def _serve_cache(self) -> Step:
        fallback = self._current_fallback
        assert fallback is not None and fallback.cache is not None
        text = _cached_text(fallback.cache, self._cache_key())
        ok = text is not None
        self.observer.on_event(FallbackUsed(self.call_id, "cache", self.primary.model, ok))
        if text is None:
            return self._fall_back() or GiveUp()
        self.served_by = fallback
        self._give_up_type = None
        if self.primary.stream:
            return Serve(self.dialect.from_text(text, self.primary.model), stream=True)
        return Serve(json.dumps(self.dialect.answer_json(text, self.primary.model)).encode(), stream=False)

    def _suppress(self, cause: SuppressCause, failure: Failure | None) -> None:
        reason: ErrorType = failure.error_type if failure is not None else "circuit_open"
        self.observer.on_event(RetrySuppressed(self.call_id, max(self.attempts - 1, 0), reason, cause))

    def _record_breaker(self, failure: Failure | None) -> None:
        breaker, self._breaker = self._breaker, None
        if breaker is None:
            return
        before = breaker.state
        if failure is None:
            breaker.record_success()
        elif failure.counts_for_breaker:
            breaker.record_failure()
        else:
            breaker.release()
        after = breaker.state
        if after != before:  # a span event on the call that moved it
            self.observer.on_event(
                BreakerTransition(self.route.upstream, self.route.model, before, after, self.call_id)
            )

    # -- progress --------------------------------------------------------------------------

    def _sent_at(self, send: Send, now: float) -> float:
        return self._sent.get(send.attempt, now)

    def sent_at(self, send: Send, default: float) -> float:
        """When `send` was sent (monotonic)."""
        return self._sent.get(send.attempt, default)

    def sending(self, send: Send, now: float) -> None:
        """The driver is about to send `send`."""
        self._sent[send.attempt] = now

    def committed_at(self, send: Send, attempt: StreamAttempt, now: float) -> None:
        """The attempt's first content is being released to the caller."""
        self.committed = True
        self.stream = attempt
        self.facts = attempt.facts
        self.time_to_first_token = now - self.started_at
        self.observer.on_event(FirstToken(self.call_id, self.time_to_first_token, send.attempt))
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
                now - self._sent_at(send, now),
                time_to_first_token,
            )
        )
        self._record_breaker(None)
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
        if self._breaker is not None:
            self._breaker.release()  # allowed but never concluded (cancelled, abandoned)
            self._breaker = None
        engine = self.engine
        facts = self.facts
        text: str | None = None
        if outcome == "ok" and self.served_by is None:
            dialect = self.dialect
            frames = (
                b"".join(self.delivered) if body is None and (engine.output_text or engine.caches) else b""
            )
            if engine.output_text:
                text = dialect.answer_text(body) if body is not None else dialect.text(frames)
            if engine.caches:
                self._keep(
                    dialect.cacheable_answer(body) if body is not None else dialect.cacheable_text(frames)
                )
        stream = self.stream
        self.observer.on_event(
            CallFinished(
                call_id=self.call_id,
                outcome=outcome,
                error_type=None if outcome in ("ok", "cancelled", "abandoned") else self.error_type,
                duration=now - self.started_at,
                attempts=self.attempts,
                time_to_first_token=self.time_to_first_token,
                input_tokens=facts.input_tokens,
                output_tokens=facts.output_tokens,
                finish_reasons=tuple(facts.finish_reasons),
                response_model=facts.response_model,
                response_id=facts.response_id,
                cached_input_tokens=facts.cached_input_tokens,
                reasoning_output_tokens=facts.reasoning_output_tokens,
                service_tier=facts.service_tier,
                system_fingerprint=facts.system_fingerprint,
                max_chunk_gap=stream.max_gap if stream is not None and stream.chunks > 1 else None,
                chunks=stream.chunks if stream is not None else 0,
                fallback=self.served_by.kind if self.served_by is not None else None,
                output_text=text if engine.output_text else None,
            )
        )

    def _keep(self, text: str | None) -> None:
        """Keep an answer's text in the caches, when replaying it gives the same answer (None:
        it would not; one cut short (`length`), filtered or with tool calls would be replayed
        as a complete text answer)."""
        if text is None:
            return
        key = self._cache_key()
        for cache in self.engine.caches:
            try:
                cache.set(key, text)
            except Exception as error:  # the caller has its answer: a cache down must not take it
                log.warning("streamtap: the answer cache failed to keep an answer: %r", error)

    def delivered_text(self) -> str:
        return self.dialect.text(b"".join(self.delivered))


def _cached_text(cache: AnswerCache, key: str) -> str | None:
    """The cache's answer for `key`; a cache that fails or answers no text is a miss, logged."""
    try:
        text = cache.get(key)
    except Exception as error:  # a cache that is down is a miss, never the caller's error
        log.warning("streamtap: the answer cache failed to look up an answer (a miss): %r", error)
        return None
    if isinstance(text, bytes):  # e.g. a Redis client without decode_responses
        try:
            return text.decode()
        except UnicodeDecodeError:
            pass
    if text is None or isinstance(text, str):
        return text
    log.warning("streamtap: the answer cache gave a %s, not the text it kept (a miss)", type(text).__name__)
    return None

"""What the engine tells recorders: frozen dataclasses fed to a small Protocol.

The engine emits a handful of events per call (never one per chunk): recorders turn them into
Prometheus metrics, OpenTelemetry spans and metrics, or logs. A recorder's failure is logged at
debug, reported to every recorder through `telemetry_failed` (the Prometheus recorder counts it)
and never reaches the caller.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._background import COLLECTING, WORKER
from ._taxonomy import Api, BreakerState, ErrorType, FallbackKind, Outcome, Phase, SuppressCause

log = logging.getLogger("streamtap")


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A logical call began (before its first attempt)."""

    call_id: int
    api: Api
    model: str  # the requested model, as the caller wrote it
    stream: bool
    server_address: str
    server_port: int | None
    request: Mapping[str, Any]  # the parsed JSON body; recorders read content only when opted in
    # The engine's content-capture setting (instrument()'s capture_content, else the variable);
    # None when no engine says (a recorder fed by hand), and the recorder decides alone.
    capture_content: bool | None = None


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """One upstream HTTP request is about to be sent."""

    call_id: int
    attempt: int  # 0 for the first request, then 1, 2, ... (http.request.resend_count)
    method: str
    url: str  # without query string and user:password@
    model: str  # the model this attempt asks for (differs from the call's under a model fallback)
    fallback: FallbackKind | None
    # Headers to add to this attempt's request; a tracing recorder injects `traceparent` here.
    carrier: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """An upstream attempt ended: `error_type` is None when it served the call."""

    call_id: int
    attempt: int
    status_code: int | None
    error_type: ErrorType | None
    phase: Phase | None
    duration: float  # seconds, request sent to attempt end
    time_to_first_token: float | None  # seconds, request sent to its first content event
    retryable: bool = False
    error_code: str | None = None  # the upstream's error code (`Failure.code`), if it gave one


@dataclass(frozen=True, slots=True)
class FirstToken:
    """The call committed: its first content event was released to the caller."""

    call_id: int
    time_to_first_token: float  # seconds since the call started, retries included
    attempt: int
    status_code: int | None = None  # the committing attempt's answer; None for a whole answer served


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A failed attempt will be retried after `delay` seconds (the budget is spent on it)."""

    call_id: int
    attempt: int  # the attempt that failed
    reason: ErrorType
    delay: float  # seconds the engine waits before the next attempt


@dataclass(frozen=True, slots=True)
class RetrySuppressed:
    """A retryable failure was not retried."""

    call_id: int
    attempt: int
    reason: ErrorType
    cause: SuppressCause


@dataclass(frozen=True, slots=True)
class FallbackUsed:
    """A fallback was tried; `ok` says whether it served the call."""

    call_id: int
    kind: FallbackKind
    model: str
    ok: bool


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """A circuit breaker of (`upstream`, `model`) moved from `old` to `new` (closed, open,
    half_open); emitted on the call that moved it, and process-wide to each recorder."""

    upstream: str
    model: str
    old: BreakerState
    new: BreakerState
    call_id: int | None = None  # the call whose attempt moved it, if any
    # Whose breaker moved: each engine (each instrumented client, the proxy) has its own
    # breakers, so two clients' breakers of one (upstream, model) are two breakers.
    engine_id: int = 0


@dataclass(frozen=True, slots=True)
class CallFinished:
    """The call is final: emitted exactly once per call, on every path."""

    call_id: int
    outcome: Outcome
    error_type: ErrorType | None
    duration: float  # seconds since the call started
    attempts: int
    time_to_first_token: float | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reasons: Sequence[str] = ()
    response_model: str | None = None
    response_id: str | None = None
    cached_input_tokens: int | None = None  # of input_tokens, served from the provider's cache
    reasoning_output_tokens: int | None = None  # of output_tokens, spent on reasoning
    service_tier: str | None = None  # the tier the upstream says served the response
    system_fingerprint: str | None = None
    max_chunk_gap: float | None = None  # the largest gap between content events, seconds
    chunks: int = 0  # content events delivered
    fallback: FallbackKind | None = None  # which fallback served the call, if one did
    # Only when content capture is on: what the caller was given, as the GenAI conventions'
    # output messages (`gen_ai.output.messages`), one per chat choice, one for a response.
    output_messages: Sequence[Mapping[str, Any]] | None = None


CallEvent = (
    AttemptStarted
    | AttemptFinished
    | FirstToken
    | RetryScheduled
    | RetrySuppressed
    | FallbackUsed
    | BreakerTransition
    | CallFinished
)


class CallObserver(Protocol):
    """Receives the events of one call, in order, ending with CallFinished."""

    def on_event(self, event: CallEvent) -> None: ...


class Recorder(Protocol):
    """A telemetry sink: one observer per call, plus process-wide events."""

    def start_call(self, event: CallStarted) -> CallObserver: ...

    def breaker_changed(self, event: BreakerTransition) -> None: ...

    def telemetry_failed(self, error: BaseException) -> None: ...


class _GuardedCall:
    __slots__ = ("_deferred", "_fanout", "_observers")

    def __init__(self, fanout: Fanout, observers: list[CallObserver]) -> None:
        self._fanout = fanout
        self._observers = observers
        self._deferred = False

    def on_event(self, event: CallEvent) -> None:
        # Raised while the collector runs (an abandoned stream's finalizer), its recording
        # goes to the background thread, and so does the rest of the call's, in order.
        if self._deferred or COLLECTING.here():
            self._deferred = True
            WORKER.soon(functools.partial(self._deliver, event))
        else:
            self._deliver(event)

    def _deliver(self, event: CallEvent) -> None:
        for observer in self._observers:
            try:
                observer.on_event(event)
            except Exception as error:  # telemetry never breaks the caller
                self._fanout.failed(error)


class Fanout:
    """Feeds every recorder, in order, and keeps their failures away from the caller.

    Order matters: a tracing recorder placed before the Prometheus recorder lets the latter
    attach the call's trace id as an exemplar.
    """

    __slots__ = ("recorders",)

    def __init__(self, recorders: Sequence[Recorder] = ()) -> None:
        self.recorders = tuple(recorders)

    def start_call(self, event: CallStarted) -> CallObserver:
        observers: list[CallObserver] = []
        for recorder in self.recorders:
            try:
                observers.append(recorder.start_call(event))
            except Exception as error:
                self.failed(error)
        return _GuardedCall(self, observers)

    def breaker_changed(self, event: BreakerTransition) -> None:
        if COLLECTING.here():  # a dropped engine's finalizer: see `_background`
            WORKER.soon(functools.partial(self._breaker_changed, event))
        else:
            self._breaker_changed(event)

    def _breaker_changed(self, event: BreakerTransition) -> None:
        for recorder in self.recorders:
            try:
                recorder.breaker_changed(event)
            except Exception as error:
                self.failed(error)

    def failed(self, error: BaseException) -> None:
        log.debug("streamtap recorder failed; the call is not affected", exc_info=error)
        for recorder in self.recorders:
            try:
                recorder.telemetry_failed(error)
            except Exception:
                log.debug("streamtap recorder failed while counting a failure", exc_info=True)

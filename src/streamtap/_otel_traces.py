"""OtelTraceRecorder: one logical CLIENT span per call, one HTTP child span per attempt.

The call span starts in the caller's context (the engine calls start_call there), so it nests
under whatever span the application has open. Each attempt's context is injected into the
attempt's request headers as W3C `traceparent`. Every span ends exactly once: at its own end
event, or at CallFinished for anything still open (cancelled, abandoned, engine shortcuts).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import _otel_content as content
from ._events import (
    AttemptFinished,
    AttemptStarted,
    BreakerTransition,
    CallEvent,
    CallFinished,
    CallObserver,
    CallStarted,
    FallbackUsed,
    FirstToken,
    RetryScheduled,
    RetrySuppressed,
)
from ._labels import upstream_name
from ._otel_attrs import (
    attempt_attributes,
    call_attributes,
    call_span_name,
    check_provider,
    finish_attributes,
    request_model,
)
from ._version import __version__

# How many calls in flight keep their span's context for the Prometheus exemplars and the
# inference events; beyond that the oldest entry is forgotten (its exemplar and its event's link to
# the span are lost, nothing else), so state never grows unbounded.
MAX_TRACKED_CALLS: Final = 10_000
_W3C = TraceContextTextMapPropagator()
# Without a description: the error is `error.type`, and Recording Errors does not recommend
# repeating it there (streamtap has no message to add that could not hold sensitive text).
_ERROR: Final = Status(StatusCode.ERROR)


class OtelTraceRecorder:
    """Records each call as a GenAI CLIENT span with HTTP child spans per attempt.

    Args:
        tracer_provider: where spans go; None uses the global provider (resolved lazily, so an
            application that configures OpenTelemetry later is still honoured).
        inject_traceparent: add the attempt span's W3C `traceparent` to the upstream request.
        capture_content: record input and output messages. None: as the engine says for each
            call (`instrument(capture_content=...)`, else
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, off unless "true", "SPAN_ONLY"
            or "SPAN_AND_EVENT"), and never when that variable sends content to events only
            (EVENT_ONLY).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        inject_traceparent: bool = True,
        capture_content: bool | None = None,
    ) -> None:
        check_provider("OtelTraceRecorder tracer_provider", tracer_provider, "get_tracer")
        if not isinstance(inject_traceparent, bool):  # a string such as "false" would be true
            raise TypeError(
                f"OtelTraceRecorder inject_traceparent must be True or False, got {inject_traceparent!r}"
            )
        self.tracer = trace.get_tracer("streamtap", __version__, tracer_provider=tracer_provider)
        self.inject_traceparent = inject_traceparent
        if capture_content is not None and not isinstance(capture_content, bool):
            raise TypeError(
                "OtelTraceRecorder capture_content must be True, False or None "
                f"(None: as the engine says), got {capture_content!r}"
            )
        self.capture_content = capture_content
        self._mode = content.content_mode()
        self._contexts: OrderedDict[int, SpanContext] = OrderedDict()
        self._lock = threading.Lock()

    def start_call(self, event: CallStarted) -> CallObserver:
        attrs = call_attributes(event)
        capture = self.capture_content
        if capture is None:
            capture = self._mode.spans and self._mode.wanted(event.capture_content)
        if capture:
            attrs.update(content.request_content(event.request, content.to_json))
        span = self.tracer.start_span(
            call_span_name(event.api, event.model), kind=SpanKind.CLIENT, attributes=attrs
        )
        span_context = span.get_span_context()
        if span_context.is_valid:  # kept sampled or not: an unsampled call's event keeps its trace id
            with self._lock:
                self._contexts[event.call_id] = span_context
                if len(self._contexts) > MAX_TRACKED_CALLS:
                    self._contexts.popitem(last=False)
        return _SpanCall(self, event.call_id, span, request_model(event.model), capture)

    def span_context(self, call_id: int) -> SpanContext | None:
        """The span context of a call in flight, sampled or not; None without a valid one (a
        no-op tracer provider)."""
        return self._contexts.get(call_id)

    def trace_id(self, call_id: int) -> str | None:
        """The hex trace id of a call in flight whose span is sampled, else None: an exemplar
        must point at a trace that is exported."""
        span_context = self._contexts.get(call_id)
        if span_context is None or not span_context.trace_flags.sampled:
            return None
        return format(span_context.trace_id, "032x")

    def forget(self, call_id: int) -> None:
        with self._lock:
            self._contexts.pop(call_id, None)

    def breaker_changed(self, event: BreakerTransition) -> None:
        """Process-wide transitions have no span; the call's own event is recorded on its span."""

    def telemetry_failed(self, error: BaseException) -> None:
        """Counting failures is the Prometheus recorder's job."""


class _SpanCall:
    __slots__ = ("_attempts", "_call_id", "_capture", "_finished", "_model", "_recorder", "_span")

    def __init__(
        self, recorder: OtelTraceRecorder, call_id: int, span: Span, model: str, capture: bool
    ) -> None:
        self._recorder = recorder
        self._capture = capture
        self._call_id = call_id
        self._span = span
        self._model = model
        self._attempts: dict[int, Span] = {}
        self._finished = False

    def on_event(self, event: CallEvent) -> None:
        if self._finished:
            return
        span = self._span
        if isinstance(event, AttemptStarted):
            self._start_attempt(event)
        elif isinstance(event, AttemptFinished):
            self._finish_attempt(event)
        elif isinstance(event, FirstToken):
            committing = self._attempts.get(event.attempt)
            if committing is not None and event.status_code is not None:
                # Known from here on: a call cancelled in its stream still says what it received.
                committing.set_attribute("http.response.status_code", event.status_code)
        elif isinstance(event, RetryScheduled):
            span.add_event(
                "streamtap.retry",
                {
                    "streamtap.retry.reason": event.reason,
                    "streamtap.retry.delay": event.delay,
                    "streamtap.retry.attempt": event.attempt,
                },
            )
        elif isinstance(event, RetrySuppressed):
            span.add_event(
                "streamtap.retry_suppressed",
                {"streamtap.retry.reason": event.reason, "streamtap.retry.suppressed_by": event.cause},
            )
        elif isinstance(event, FallbackUsed):
            span.add_event(
                "streamtap.fallback",
                {
                    "streamtap.fallback.kind": event.kind,
                    "streamtap.fallback.model": request_model(event.model),
                    "streamtap.fallback.ok": event.ok,
                },
            )
        elif isinstance(event, BreakerTransition):
            span.add_event(
                "streamtap.breaker",
                {
                    "streamtap.breaker.upstream": upstream_name(event.upstream),
                    "streamtap.breaker.model": request_model(event.model),
                    "streamtap.breaker.old": event.old,
                    "streamtap.breaker.new": event.new,
                },
            )
        elif isinstance(event, CallFinished):
            self._finish(event)

    def _start_attempt(self, event: AttemptStarted) -> None:
        previous = self._attempts.pop(event.attempt, None)
        if previous is not None:
            previous.end()  # a repeated attempt number: close the first, never leak it
        attempt = self._recorder.tracer.start_span(
            event.method.upper() or "HTTP",
            context=trace.set_span_in_context(self._span),
            kind=SpanKind.CLIENT,
            attributes=attempt_attributes(
                method=event.method,
                url=event.url,
                attempt=event.attempt,
                model=event.model,
                call_model=self._model,
                fallback=event.fallback,
            ),
        )
        self._attempts[event.attempt] = attempt
        if self._recorder.inject_traceparent:
            _W3C.inject(event.carrier, context=trace.set_span_in_context(attempt))

    def _finish_attempt(self, event: AttemptFinished) -> None:
        attempt = self._attempts.pop(event.attempt, None)
        if attempt is None:
            return  # no AttemptStarted seen: nothing to end
        if event.status_code is not None:
            attempt.set_attribute("http.response.status_code", event.status_code)
        if event.error_type is not None:
            attempt.set_attribute("error.type", event.error_type)
            if event.phase is not None:
                attempt.set_attribute("streamtap.error.phase", event.phase)
            if event.error_code is not None:
                attempt.set_attribute("streamtap.error.code", event.error_code)
            attempt.set_status(_ERROR)
        attempt.end()

    def _finish(self, event: CallFinished) -> None:
        self._finished = True
        self._recorder.forget(self._call_id)
        span = self._span
        failed = event.outcome == "error"
        for attempt in self._attempts.values():
            # Still open: the call ended around it (cancelled, abandoned, or the engine skipped
            # AttemptFinished). Close it with the call's verdict.
            attempt.set_attribute("streamtap.outcome", event.outcome)
            if failed:
                attempt.set_attribute("error.type", event.error_type or "_OTHER")
                attempt.set_status(_ERROR)
            attempt.end()
        self._attempts.clear()
        attrs = finish_attributes(event)
        if self._capture and event.output_messages:
            attrs["gen_ai.output.messages"] = content.to_json(event.output_messages)
        span.set_attributes(attrs)
        if failed:
            span.set_status(_ERROR)
        elif event.outcome == "ok":
            # streamtap saw the terminal marker, so OK is a verified result, not a default.
            span.set_status(Status(StatusCode.OK))
        span.end()

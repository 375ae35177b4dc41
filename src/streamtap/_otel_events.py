"""OtelEventRecorder: one `gen_ai.client.inference.operation.details` event per call.

The GenAI conventions' opt-in event, a log record through the OpenTelemetry Logs API: the call's
attributes as its span has them and, when content capture sends content to events
(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=EVENT_ONLY or SPAN_AND_EVENT), the messages
as structured values, where a span holds them as JSON strings. It lets an application keep
prompts and answers in its log pipeline, apart from its traces. Emitted once, at CallFinished,
in the context of the call's span (a `spans` recorder given), so a backend links the event to
its trace; when that span is not sampled the event still carries its trace id, with the
unsampled flag, as a log bridge does.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, get_logger
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext

from . import _otel_content as content
from ._events import BreakerTransition, CallEvent, CallFinished, CallObserver, CallStarted
from ._otel_attrs import AttributeValue, call_attributes, check_provider, finish_attributes
from ._version import __version__

EVENT_NAME: Final = "gen_ai.client.inference.operation.details"


class SpanContexts(Protocol):
    def span_context(self, call_id: int) -> SpanContext | None: ...


class OtelEventRecorder:
    """Emits each call's `gen_ai.client.inference.operation.details` event.

    Args:
        logger_provider: where events go; None uses the global provider (resolved lazily, as the
            tracer provider is).
        spans: the OtelTraceRecorder whose call spans the events belong to; place it before this
            recorder. None: each event is emitted in the context current when the call ends.
        capture_content: put input and output messages on the event. None: as the engine says
            for each call (`instrument(capture_content=...)`, else
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT), and only when that variable
            sends content to events (EVENT_ONLY, SPAN_AND_EVENT).
    """

    def __init__(
        self,
        logger_provider: LoggerProvider | None = None,
        *,
        spans: SpanContexts | None = None,
        capture_content: bool | None = None,
    ) -> None:
        check_provider("OtelEventRecorder logger_provider", logger_provider, "get_logger")
        if spans is not None and not callable(getattr(spans, "span_context", None)):
            raise TypeError(
                "OtelEventRecorder spans must be an OtelTraceRecorder (anything with "
                f"span_context(call_id) -> SpanContext | None) or None, got {spans!r}"
            )
        if capture_content is not None and not isinstance(capture_content, bool):
            raise TypeError(
                "OtelEventRecorder capture_content must be True, False or None "
                f"(None: as the engine says), got {capture_content!r}"
            )
        self.logger = get_logger("streamtap", __version__, logger_provider)
        self.spans = spans
        self.capture_content = capture_content
        self._mode = content.content_mode()

    def start_call(self, event: CallStarted) -> CallObserver:
        attrs: dict[str, Any] = call_attributes(event)
        capture = self.capture_content
        if capture is None:
            capture = self._mode.events and self._mode.wanted(event.capture_content)
        if capture:
            attrs.update(content.request_content(event.request, content.to_value))
        span_context = None if self.spans is None else self.spans.span_context(event.call_id)
        context = None if span_context is None else trace.set_span_in_context(NonRecordingSpan(span_context))
        return _EventCall(self, attrs, context, capture)

    def breaker_changed(self, event: BreakerTransition) -> None:
        """Breaker states are a Prometheus gauge; nothing to emit here."""

    def telemetry_failed(self, error: BaseException) -> None:
        """Counted by the Prometheus recorder."""


class _EventCall:
    __slots__ = ("_attrs", "_capture", "_context", "_done", "_recorder")

    def __init__(
        self,
        recorder: OtelEventRecorder,
        attrs: dict[str, AttributeValue],
        context: Context | None,
        capture: bool,
    ) -> None:
        self._recorder = recorder
        self._attrs = attrs
        self._context = context
        self._capture = capture
        self._done = False

    def on_event(self, event: CallEvent) -> None:
        if not isinstance(event, CallFinished) or self._done:
            return
        self._done = True
        attrs: dict[str, Any] = {**self._attrs, **finish_attributes(event)}
        if self._capture and event.output_messages:
            attrs["gen_ai.output.messages"] = content.to_value(event.output_messages)
        self._recorder.logger.emit(event_name=EVENT_NAME, attributes=attrs, context=self._context)

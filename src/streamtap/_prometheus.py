"""PrometheusRecorder: turns the engine's events into the metrics of DESIGN.md's table.

A handful of label lookups per call, never per chunk. Histograms carry a `trace_id` exemplar
when the call's span is sampled; the trace id comes from a `TraceIdLookup` (the
OtelTraceRecorder placed before this recorder in the Fanout) read once, at CallStarted.
"""

from __future__ import annotations

import threading
from typing import Final, Protocol

from prometheus_client import REGISTRY, CollectorRegistry

from ._events import (
    AttemptFinished,
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
from ._labels import (
    DEFAULT_MODEL_CAP,
    ModelLabeler,
    api_label,
    error_type_label,
    phase_label,
    upstream_name,
)
from ._prom_metrics import Metrics, metrics_for
from ._taxonomy import (
    BREAKER_STATE_VALUE,
    FALLBACK_KINDS,
    OUTCOMES,
    SUPPRESS_CAUSES,
    ErrorType,
)

# request_errors_total series created as zeros with each (api, model): the error types a
# dashboard or alert plots by name. The rarer ones appear on their first occurrence, which
# keeps an idle model at 13 zero series instead of 24.
PRECREATED_ERROR_TYPES: Final[tuple[ErrorType, ...]] = (
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "stream_interrupted",
    "stream_truncated",
)
MAX_UPSTREAMS: Final = 50


class TraceIdLookup(Protocol):
    """Gives the hex trace id of a call's sampled span, or None."""

    def trace_id(self, call_id: int) -> str | None: ...


class PrometheusRecorder:
    """Records calls, attempts, retries, fallbacks and breaker states as Prometheus metrics.

    Args:
        registry: where the metrics live (default: prometheus_client's global REGISTRY). Two
            recorders on one registry share its metrics.
        max_models: distinct `model` label values this recorder admits before `_other`.
        trace_ids: where to find a call's trace id for exemplars; place that recorder (an
            OtelTraceRecorder) before this one in the Fanout.
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        *,
        max_models: int = DEFAULT_MODEL_CAP,
        trace_ids: TraceIdLookup | None = None,
    ) -> None:
        self.metrics: Metrics = metrics_for(registry)
        self.trace_ids = trace_ids
        self._models = ModelLabeler(max_models)
        self._upstream_models = ModelLabeler(max_models)
        self._upstreams = ModelLabeler(MAX_UPSTREAMS, normalise=False)
        self._seen: set[tuple[str, str]] = set()
        self._seen_lock = threading.Lock()
        for api in ("chat_completions", "responses", "other"):
            self.metrics.active_streams.labels(api)  # a zero, not an absent series

    def start_call(self, event: CallStarted) -> CallObserver:
        api = api_label(event.api)
        model = self._models(event.model)
        if (api, model) not in self._seen:
            self._precreate(api, model)
        exemplar: dict[str, str] | None = None
        if self.trace_ids is not None:
            trace_id = self.trace_ids.trace_id(event.call_id)
            if trace_id:
                exemplar = {"trace_id": trace_id}
        observer = _PromCall(self, api, model, event.stream, exemplar)
        if event.stream:
            self.metrics.active_streams.labels(api).inc()
        return observer

    def breaker_changed(self, event: BreakerTransition) -> None:
        self.set_circuit_state(event)

    def telemetry_failed(self, error: BaseException) -> None:
        self.metrics.telemetry_errors.inc()

    def set_circuit_state(self, event: BreakerTransition) -> None:
        value = BREAKER_STATE_VALUE.get(event.new)
        if value is None:
            return
        upstream = self._upstreams(upstream_name(event.upstream))
        self.metrics.circuit_state.labels(upstream, self._upstream_models(event.model)).set(value)

    def _precreate(self, api: str, model: str) -> None:
        with self._seen_lock:
            if (api, model) in self._seen:
                return
            self._seen.add((api, model))
        m = self.metrics
        for outcome in OUTCOMES:
            m.requests.labels(api, model, outcome)
        for result in ("ok", "error"):
            m.attempts.labels(api, model, result)
        for error_type in PRECREATED_ERROR_TYPES:
            m.request_errors.labels(api, model, error_type)
        for kind in ("input", "output"):
            m.tokens.labels(api, model, kind)
        for cause in SUPPRESS_CAUSES:
            m.retries_suppressed.labels(api, model, cause)
        m.usage_missing.labels(api, model)


class _PromCall:
    """One call's observer: its labels, exemplar and what it already counted."""

    __slots__ = ("_active", "_api", "_exemplar", "_finished", "_model", "_recorder", "_stream", "_ttft_seen")

    def __init__(
        self,
        recorder: PrometheusRecorder,
        api: str,
        model: str,
        stream: bool,
        exemplar: dict[str, str] | None,
    ) -> None:
        self._recorder = recorder
        self._api = api
        self._model = model
        self._stream = stream
        self._active = stream
        self._exemplar = exemplar
        self._finished = False
        self._ttft_seen = False

    def on_event(self, event: CallEvent) -> None:
        if self._finished:
            return  # a duplicate or late event after CallFinished must not count twice
        m = self._recorder.metrics
        api, model = self._api, self._model
        if isinstance(event, AttemptFinished):
            if event.error_type is None:
                m.attempts.labels(api, model, "ok").inc()
            else:
                m.attempts.labels(api, model, "error").inc()
                m.attempt_errors.labels(
                    api,
                    model,
                    error_type_label(event.error_type),
                    phase_label(event.phase, event.status_code),
                ).inc()
            if event.time_to_first_token is not None:
                m.attempt_ttft.labels(api, model).observe(event.time_to_first_token, self._exemplar)
        elif isinstance(event, FirstToken):
            if not self._ttft_seen:
                self._ttft_seen = True
                m.ttft.labels(api, model).observe(event.time_to_first_token, self._exemplar)
        elif isinstance(event, RetryScheduled):
            m.retries.labels(api, model, error_type_label(event.reason)).inc()
        elif isinstance(event, RetrySuppressed):
            cause = event.cause if event.cause in SUPPRESS_CAUSES else "attempts"
            m.retries_suppressed.labels(api, model, cause).inc()
        elif isinstance(event, FallbackUsed):
            if event.kind in FALLBACK_KINDS:
                m.fallbacks.labels(api, model, event.kind, "ok" if event.ok else "error").inc()
        elif isinstance(event, BreakerTransition):
            self._recorder.set_circuit_state(event)  # idempotent with breaker_changed
        elif isinstance(event, CallFinished):
            self._finish(event, m)

    def _finish(self, event: CallFinished, m: Metrics) -> None:
        self._finished = True
        api, model = self._api, self._model
        outcome = event.outcome if event.outcome in OUTCOMES else "error"
        m.requests.labels(api, model, outcome).inc()
        if outcome == "error":
            m.request_errors.labels(api, model, error_type_label(event.error_type)).inc()
        m.duration.labels(api, model, outcome).observe(max(event.duration, 0.0), self._exemplar)
        if not self._ttft_seen and event.time_to_first_token is not None:
            self._ttft_seen = True  # the engine's FirstToken went missing: the total still counts
            m.ttft.labels(api, model).observe(event.time_to_first_token, self._exemplar)
        if event.max_chunk_gap is not None:
            m.chunk_gap.labels(api, model).observe(event.max_chunk_gap, self._exemplar)
        if event.input_tokens is not None and event.input_tokens > 0:
            m.tokens.labels(api, model, "input").inc(event.input_tokens)
        if event.output_tokens is not None and event.output_tokens > 0:
            m.tokens.labels(api, model, "output").inc(event.output_tokens)
        if self._stream and outcome == "ok" and event.input_tokens is None and event.output_tokens is None:
            m.usage_missing.labels(api, model).inc()
        if self._active:
            self._active = False
            m.active_streams.labels(api).dec()

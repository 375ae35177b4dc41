"""PrometheusRecorder: turns the engine's events into the metrics of docs/metrics.md's table.

A handful of records per call, never per chunk, into label children looked up in
prometheus-client once per (api, model) and label set (`Series`), not on every record.
Histograms carry a `trace_id` exemplar when the call's span is sampled; the trace id comes
from a `TraceIdLookup` (the OtelTraceRecorder placed before this recorder in the Fanout) read
once, at CallStarted.
"""

from __future__ import annotations

import threading
from typing import Any, Final, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.metrics import MetricWrapperBase

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
    api_label,
    error_type_label,
    phase_label,
    upstream_name,
)
from ._prom_metrics import Metrics, check_registry, metrics_for
from ._taxonomy import (
    APIS,
    BREAKER_STATE_VALUE,
    FALLBACK_KINDS,
    OUTCOMES,
    SUPPRESS_CAUSES,
    ErrorType,
)

# request_errors_total series created as zeros with each (api, model): the error types a
# dashboard or alert plots by name. The rarer ones appear on their first occurrence, which
# keeps an idle (api, model) at 19 zero series instead of 29.
PRECREATED_ERROR_TYPES: Final[tuple[ErrorType, ...]] = (
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "stream_interrupted",
    "stream_truncated",
)


class TraceIdLookup(Protocol):
    """Gives the hex trace id of a call's sampled span, or None."""

    def trace_id(self, call_id: int) -> str | None: ...


class PrometheusRecorder:
    """Records calls, attempts, retries, fallbacks and breaker states as Prometheus metrics.

    Args:
        registry: where the metrics live (default: prometheus_client's global REGISTRY). Two
            recorders on one registry share its metrics.
        max_models: distinct `model` label values admitted before `_other`; the cap is the
            registry's, shared by its recorders with the same cap (a recorder per client adds none).
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
        # Checked here: a wrong registry failed with "cannot create weak reference", and a
        # wrong trace_ids failed inside every call, where telemetry errors are swallowed: no
        # metric was ever recorded.
        check_registry("PrometheusRecorder registry", registry, optional=False)
        if trace_ids is not None and not callable(getattr(trace_ids, "trace_id", None)):
            raise TypeError(
                "PrometheusRecorder trace_ids must be an OtelTraceRecorder (anything with "
                f"trace_id(call_id) -> str | None) or None, got {trace_ids!r}"
            )
        self.metrics: Metrics = metrics_for(registry)
        self.trace_ids = trace_ids
        labelers = self.metrics.labelers(max_models)  # the registry's caps, not this recorder's
        self._models = labelers.models
        self._upstream_models = labelers.upstream_models
        self._upstreams = labelers.upstreams
        self._series: dict[tuple[str, str], Series] = {}
        self._series_lock = threading.Lock()
        # A zero, not an absent series, per api; an unknown api is labelled `other`.
        self._active = {api: self.metrics.active_streams.labels(api) for api in APIS}

    def start_call(self, event: CallStarted) -> CallObserver:
        api = api_label(event.api)
        model = self._models(event.model)
        series = self._series.get((api, model)) or self._new_series(api, model)
        exemplar: dict[str, str] | None = None
        if self.trace_ids is not None:
            trace_id = self.trace_ids.trace_id(event.call_id)
            if trace_id:
                exemplar = {"trace_id": trace_id}
        active = self._active[api] if event.stream else None
        if active is not None:
            active.inc()
        return _PromCall(self, series, active, exemplar)

    def breaker_changed(self, event: BreakerTransition) -> None:
        # Only here, where the breaker reports its transitions in order: a call's own report of
        # one (for its span) may come late, after the breaker moved on, and would undo it.
        self.set_circuit_state(event)

    def telemetry_failed(self, error: BaseException) -> None:
        self.metrics.telemetry_errors.inc()

    def set_circuit_state(self, event: BreakerTransition) -> None:
        """The gauge of the breaker's labels: the worst state of the breakers that share them.

        Breakers are per engine (each instrumented client, the proxy) and exact (upstream,
        model); labels are normalised and capped, so several can share one gauge (two clients
        of one model, `GPT-4o` and `gpt-4o`, everything past the cap as `_other`), and the last
        one to move must not hide another that is still open.
        """
        value = BREAKER_STATE_VALUE.get(event.new)
        if value is None:
            return
        labels = (self._upstreams(upstream_name(event.upstream)), self._upstream_models(event.model))
        metrics = self.metrics
        with metrics.circuit_lock:  # shared by every recorder of the registry, as the gauge is
            states = metrics.circuit_states.setdefault(labels, {})
            if value:
                states[(event.engine_id, event.upstream, event.model)] = value
            else:  # only breakers that are not closed are kept
                states.pop((event.engine_id, event.upstream, event.model), None)
            metrics.circuit_state.labels(*labels).set(max(states.values(), default=0))

    def _new_series(self, api: str, model: str) -> Series:
        """The Series of a pair seen for the first time, with its common series created as zeros."""
        with self._series_lock:
            series = self._series.get((api, model))
            if series is not None:
                return series
            series = Series(api, model)
            m = self.metrics
            for outcome in OUTCOMES:
                series(m.requests, outcome)
            for result in ("ok", "error"):
                series(m.attempts, result)
            for error_type in PRECREATED_ERROR_TYPES:
                series(m.request_errors, error_type)
            for kind in ("input", "output"):
                series(m.tokens, kind)
            for cause in SUPPRESS_CAUSES:
                series(m.retries_suppressed, cause)
            series(m.usage_missing)
            self._series[(api, model)] = series
            return series


class Series:
    """The label children of one (api, model), each looked up in prometheus-client once.

    `series(metric, *rest)` is `metric.labels(api, model, *rest)`, kept: prometheus-client's
    lookup validates and locks on every call, several µs, where this is a dict lookup. The
    keys are bounded: the recorder's metrics times their closed label sets.
    """

    __slots__ = ("_children", "api", "model")

    def __init__(self, api: str, model: str) -> None:
        self.api = api
        self.model = model
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def __call__(self, metric: MetricWrapperBase, *rest: str) -> Any:
        key = (metric, rest)
        child = self._children.get(key)
        if child is None:
            # Two threads may both get here: prometheus-client hands both the same child.
            child = self._children[key] = metric.labels(self.api, self.model, *rest)
        return child


class _PromCall:
    """One call's observer: its labels, exemplar and what it already counted."""

    __slots__ = ("_active", "_exemplar", "_finished", "_recorder", "_series", "_ttft_seen")

    def __init__(
        self,
        recorder: PrometheusRecorder,
        series: Series,
        active: Gauge | None,
        exemplar: dict[str, str] | None,
    ) -> None:
        self._recorder = recorder
        self._series = series
        self._active = active  # a stream's: the api's active_streams child, until it finishes
        self._exemplar = exemplar
        self._finished = False
        self._ttft_seen = False

    def on_event(self, event: CallEvent) -> None:
        if self._finished:
            return  # a duplicate or late event after CallFinished must not count twice
        m = self._recorder.metrics
        s = self._series
        if isinstance(event, AttemptFinished):
            if event.error_type is None:
                s(m.attempts, "ok").inc()
            else:
                s(m.attempts, "error").inc()
                s(
                    m.attempt_errors,
                    error_type_label(event.error_type),
                    phase_label(event.phase, event.status_code),
                ).inc()
            if event.time_to_first_token is not None:
                s(m.attempt_ttft).observe(event.time_to_first_token, self._exemplar)
        elif isinstance(event, FirstToken):
            if not self._ttft_seen:
                self._ttft_seen = True
                s(m.ttft).observe(event.time_to_first_token, self._exemplar)
        elif isinstance(event, RetryScheduled):
            s(m.retries, error_type_label(event.reason)).inc()
        elif isinstance(event, RetrySuppressed):
            cause = event.cause if event.cause in SUPPRESS_CAUSES else "attempts"
            s(m.retries_suppressed, cause).inc()
        elif isinstance(event, FallbackUsed):
            if event.kind in FALLBACK_KINDS:
                s(m.fallbacks, event.kind, "ok" if event.ok else "error").inc()
        elif isinstance(event, CallFinished):
            self._finish(event, m)

    def _finish(self, event: CallFinished, m: Metrics) -> None:
        self._finished = True
        s = self._series
        stream = self._active is not None
        outcome = event.outcome if event.outcome in OUTCOMES else "error"
        s(m.requests, outcome).inc()
        if outcome == "error":
            s(m.request_errors, error_type_label(event.error_type)).inc()
        s(m.duration, outcome).observe(max(event.duration, 0.0), self._exemplar)
        if not self._ttft_seen and event.time_to_first_token is not None:
            self._ttft_seen = True  # the engine's FirstToken went missing: the total still counts
            s(m.ttft).observe(event.time_to_first_token, self._exemplar)
        if event.max_chunk_gap is not None:
            s(m.chunk_gap).observe(event.max_chunk_gap, self._exemplar)
        if event.input_tokens is not None and event.input_tokens > 0:
            s(m.tokens, "input").inc(event.input_tokens)
        if event.output_tokens is not None and event.output_tokens > 0:
            s(m.tokens, "output").inc(event.output_tokens)
        # A cached answer never carries usage, asked for or not: the counter's advice is wrong there.
        if (
            stream
            and outcome == "ok"
            and event.fallback != "cache"
            and event.input_tokens is None
            and event.output_tokens is None
        ):
            s(m.usage_missing).inc()
        if self._active is not None:
            self._active.dec()

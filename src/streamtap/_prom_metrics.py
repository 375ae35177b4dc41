"""The Prometheus metric set: names, types, labels and buckets of docs/metrics.md's table.

One set per CollectorRegistry: a second recorder on the same registry reuses it instead of
failing with "Duplicated timeseries".
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ._labels import ModelLabeler

Kind = Literal["counter", "gauge", "histogram"]

# Time to first token: from a fast cached answer to the minute a reasoning model may think.
TTFT_BUCKETS: Final = (
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
)
# A whole call: a short non-streaming answer up to a ten-minute generation.
DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# The largest silence inside a stream: steady token flow is ~10-50 ms, a stall is seconds.
CHUNK_GAP_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


@dataclass(frozen=True)
class MetricSpec:
    name: str  # the exposed name (counters with their `_total`)
    kind: Kind
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()


_AM = ("api", "model")
SPECS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec("streamtap_requests_total", "counter", (*_AM, "outcome"), "Logical calls by outcome."),
    MetricSpec(
        "streamtap_request_errors_total", "counter", (*_AM, "error_type"), "Failed calls by error type."
    ),
    MetricSpec("streamtap_attempts_total", "counter", (*_AM, "result"), "Upstream attempts by result."),
    MetricSpec(
        "streamtap_attempt_errors_total", "counter", (*_AM, "error_type", "phase"), "Failed attempts."
    ),
    MetricSpec("streamtap_retries_total", "counter", (*_AM, "reason"), "Retries scheduled, by reason."),
    MetricSpec(
        "streamtap_retries_suppressed_total", "counter", (*_AM, "cause"), "Retryable failures not retried."
    ),
    MetricSpec("streamtap_fallbacks_total", "counter", (*_AM, "kind", "result"), "Fallbacks tried."),
    MetricSpec(
        "streamtap_circuit_state", "gauge", ("upstream", "model"), "Breaker: 0 closed, 1 half-open, 2 open."
    ),
    MetricSpec(
        "streamtap_time_to_first_token_seconds",
        "histogram",
        _AM,
        "Call start to first content delivered, retries included.",
        TTFT_BUCKETS,
    ),
    MetricSpec(
        "streamtap_attempt_time_to_first_token_seconds",
        "histogram",
        _AM,
        "One attempt's request to its first content.",
        TTFT_BUCKETS,
    ),
    MetricSpec(
        "streamtap_request_duration_seconds",
        "histogram",
        (*_AM, "outcome"),
        "Call duration.",
        DURATION_BUCKETS,
    ),
    MetricSpec(
        "streamtap_max_chunk_gap_seconds",
        "histogram",
        _AM,
        "Largest gap between content events of a stream.",
        CHUNK_GAP_BUCKETS,
    ),
    MetricSpec("streamtap_tokens_total", "counter", (*_AM, "type"), "Tokens reported by the upstream."),
    MetricSpec(
        "streamtap_usage_missing_total", "counter", _AM, "Streams that finished ok without token usage."
    ),
    MetricSpec("streamtap_active_streams", "gauge", ("api",), "Streaming calls in progress."),
    MetricSpec(
        "streamtap_telemetry_errors_total", "counter", (), "Recorder failures (the caller was not affected)."
    ),
)

# Multi-process aggregation of the gauges (ignored outside PROMETHEUS_MULTIPROC_DIR mode):
# - active_streams: the sum over live workers is the number of streams in progress.
# - circuit_state: each worker runs its own breaker; the max over live workers answers "is the
#   breaker open (2) or probing (1) anywhere", which is what the alert and dashboard need.
#   `mostrecent` would show whichever worker wrote last and can hide an open breaker behind a
#   neighbour that just closed. "live" drops a dead worker's frozen state (mark_process_dead).
_GAUGE_MODES: Final = {"streamtap_active_streams": "livesum", "streamtap_circuit_state": "livemax"}


# Distinct `upstream` label values before `_other`.
MAX_UPSTREAMS: Final = 50


@dataclass(frozen=True, slots=True)
class Labelers:
    """The label caps of a registry's series."""

    models: ModelLabeler
    upstream_models: ModelLabeler
    upstreams: ModelLabeler


class Metrics:
    """The metric objects of one registry, by exposed name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        made: dict[str, Counter | Gauge | Histogram] = {}
        for spec in SPECS:
            if spec.kind == "counter":
                made[spec.name] = Counter(
                    spec.name.removesuffix("_total"), spec.help, spec.labels, registry=None
                )
            elif spec.kind == "gauge":
                made[spec.name] = Gauge(
                    spec.name,
                    spec.help,
                    spec.labels,
                    registry=None,
                    multiprocess_mode=_GAUGE_MODES[spec.name],  # type: ignore[arg-type]
                )
            else:
                made[spec.name] = Histogram(
                    spec.name, spec.help, spec.labels, registry=None, buckets=spec.buckets
                )
        _register_all(registry, made)
        c, g, h = self._counter, self._gauge, self._histogram
        self.requests = c(made, "streamtap_requests_total")
        self.request_errors = c(made, "streamtap_request_errors_total")
        self.attempts = c(made, "streamtap_attempts_total")
        self.attempt_errors = c(made, "streamtap_attempt_errors_total")
        self.retries = c(made, "streamtap_retries_total")
        self.retries_suppressed = c(made, "streamtap_retries_suppressed_total")
        self.fallbacks = c(made, "streamtap_fallbacks_total")
        self.circuit_state = g(made, "streamtap_circuit_state")
        self.ttft = h(made, "streamtap_time_to_first_token_seconds")
        self.attempt_ttft = h(made, "streamtap_attempt_time_to_first_token_seconds")
        self.duration = h(made, "streamtap_request_duration_seconds")
        self.chunk_gap = h(made, "streamtap_max_chunk_gap_seconds")
        self.tokens = c(made, "streamtap_tokens_total")
        self.usage_missing = c(made, "streamtap_usage_missing_total")
        self.active_streams = g(made, "streamtap_active_streams")
        self.telemetry_errors = c(made, "streamtap_telemetry_errors_total")
        # Per gauge labels, the state of each engine's exact (upstream, model) breaker that is
        # not closed: here, not in a recorder, as every recorder on this registry sets the gauge.
        self.circuit_states: dict[tuple[str, str], dict[tuple[int, str, str], int]] = {}
        self.circuit_lock = threading.Lock()
        # The label caps, per cap asked for: the registry's series are what they bound, so every
        # recorder on it shares them (a recorder per client must not add its own 50 models).
        self._labelers: dict[int, Labelers] = {}
        self._labelers_lock = threading.Lock()

    def labelers(self, max_models: int) -> Labelers:
        """The `model`, breaker `model` and `upstream` labellers of recorders capped at `max_models`."""
        with self._labelers_lock:
            found = self._labelers.get(max_models)
            if found is None:
                found = self._labelers[max_models] = Labelers(
                    ModelLabeler(max_models),
                    ModelLabeler(max_models),
                    ModelLabeler(MAX_UPSTREAMS, normalise=False),
                )
            return found

    @staticmethod
    def _counter(made: dict[str, Counter | Gauge | Histogram], name: str) -> Counter:
        metric = made[name]
        assert isinstance(metric, Counter)
        return metric

    @staticmethod
    def _gauge(made: dict[str, Counter | Gauge | Histogram], name: str) -> Gauge:
        metric = made[name]
        assert isinstance(metric, Gauge)
        return metric

    @staticmethod
    def _histogram(made: dict[str, Counter | Gauge | Histogram], name: str) -> Histogram:
        metric = made[name]
        assert isinstance(metric, Histogram)
        return metric


def _register_all(registry: CollectorRegistry, made: dict[str, Counter | Gauge | Histogram]) -> None:
    """Register every metric, or none: one whose name the registry holds already would leave the
    others registered, and every later try would fail on those."""
    done: list[Counter | Gauge | Histogram] = []
    try:
        for name, metric in made.items():
            try:
                registry.register(metric)
            except ValueError as error:
                raise ValueError(
                    f"the Prometheus registry already has a metric named like streamtap's {name} ({error}): "
                    "the application's own, or one of a streamtap module loaded before (a reload); give "
                    "streamtap a registry of its own, e.g. PrometheusRecorder(CollectorRegistry())"
                ) from None
            done.append(metric)
    except ValueError:
        for metric in done:
            registry.unregister(metric)
        raise


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def metrics_for(registry: CollectorRegistry) -> Metrics:
    """The metric set of `registry`, created on first use and shared afterwards."""
    with _lock:
        found = _by_registry.get(registry)
        if found is None:
            found = _by_registry[registry] = Metrics(registry)
        return found


def check_registry(name: str, registry: object, *, optional: bool = True) -> None:
    """A TypeError naming `name` unless `registry` is a prometheus_client registry (or None,
    when `optional`: then REGISTRY is used)."""
    if isinstance(registry, CollectorRegistry) or (optional and registry is None):
        return
    accepted = "or None (None: REGISTRY)" if optional else "(default: REGISTRY)"
    raise TypeError(f"{name} must be a prometheus_client CollectorRegistry {accepted}, got {registry!r}")

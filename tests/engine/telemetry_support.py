"""All of streamtap's telemetry wired to in-memory sinks, for end-to-end engine tests.

`Telemetry` holds a private Prometheus registry, an in-memory span exporter, an in-memory
metric reader and an in-memory log exporter (for the inference events, when the GenAI variables
ask for them), and the recorders `setup_telemetry` builds on them; its readers give exact values
to assert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import openai
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

import streamtap
from streamtap._events import Recorder

from .support import read_async, read_sync


class Telemetry:
    """Every recorder of `setup_telemetry`, on private in-memory providers."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.registry = CollectorRegistry()
        self.logs = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.recorders: list[Recorder] = streamtap.setup_telemetry(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            prometheus_registry=self.registry,
            logger_provider=self.logger_provider,
        )
        self._metrics: MetricsData | None = None

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()

    def events(self) -> Sequence[ReadableLogRecord]:
        """The inference events emitted, one per call when the GenAI variables ask for them."""
        return self.logs.get_finished_logs()

    # -- Prometheus --------------------------------------------------------------------------

    def value(
        self, name: str, api: str = "chat_completions", model: str = "gpt-4o", **labels: str
    ) -> float | None:
        """The exact value of one sample of a metric labelled by api and model."""
        return self.registry.get_sample_value(name, {"api": api, "model": model, **labels})

    def prometheus_text(self) -> str:
        return generate_latest(self.registry).decode()

    def openmetrics_text(self) -> str:
        return generate_openmetrics(self.registry).decode()

    # -- OpenTelemetry -----------------------------------------------------------------------

    def finished_spans(self) -> Sequence[ReadableSpan]:
        return self.spans.get_finished_spans()

    def call_span(self) -> ReadableSpan:
        """The one logical call span (the root span)."""
        (span,) = [s for s in self.finished_spans() if s.parent is None]
        return span

    def attempt_spans(self) -> list[ReadableSpan]:
        """The attempt spans in attempt order (they all have the call span as parent)."""
        root = self.call_span()
        children = [s for s in self.finished_spans() if s.parent is not None]
        assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children)
        return sorted(children, key=lambda s: int(s.attributes.get("http.request.resend_count", 0)))  # type: ignore[union-attr, arg-type]

    def metrics_data(self) -> MetricsData:
        if self._metrics is None:
            data = self.reader.get_metrics_data()
            assert data is not None
            self._metrics = data
        return self._metrics

    def otel_points(self) -> dict[str, list[HistogramDataPoint]]:
        """Histogram data points by metric name (read once per test: cumulative)."""
        found: dict[str, list[HistogramDataPoint]] = {}
        for resource in self.metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = [p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)]
                    found.setdefault(metric.name, []).extend(points)
        return found


def stream(client: Any, api: str, mode: str, **kwargs: Any) -> tuple[list[str], BaseException | None]:
    """Stream one call in `mode` ("sync" or "async"); the pieces received and the error, if any.

    The async client is closed by `read_async` inside its event loop.
    """
    received: list[str] = []
    try:
        if mode == "sync":
            read_sync(client, api, received, **kwargs)
        else:
            anyio.run(lambda: read_async(client, api, received, **kwargs))
    except openai.APIError as error:
        return received, error
    return received, None

"""Fixtures: a private Prometheus registry, an in-memory span exporter and metric reader."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from streamtap import _telemetry


@pytest.fixture(autouse=True)
def flushed_at_exit(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, float]]:
    """The providers streamtap builds here, with their exit flush's timeout: each test shuts
    its own down, so none is left for the test process's exit."""
    flushed: list[tuple[object, float]] = []
    monkeypatch.setattr(
        _telemetry, "flush_at_exit", lambda provider, timeout: flushed.append((provider, timeout))
    )
    return flushed


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[metric_reader])

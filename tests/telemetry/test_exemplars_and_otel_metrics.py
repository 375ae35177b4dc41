"""Trace-id exemplars in the OpenMetrics exposition, and the OTel GenAI histograms."""

from __future__ import annotations

import re

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from streamtap._events import Fanout
from streamtap._otel_metrics import (
    DURATION_BOUNDARIES,
    MAX_MODELS,
    MAX_SERVERS,
    TOKEN_BOUNDARIES,
    OtelMetricsRecorder,
    time_per_output_chunk,
)
from streamtap._otel_traces import MAX_TRACKED_CALLS, OtelTraceRecorder
from streamtap._prometheus import PrometheusRecorder

from ._builder import Call, two_429s_then_success


def test_histograms_carry_the_call_trace_id_as_exemplar(
    registry: CollectorRegistry, tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    traces = OtelTraceRecorder(tracer_provider)
    call = two_429s_then_success([traces, PrometheusRecorder(registry, trace_ids=traces)])
    trace_id = f"{spans.get_finished_spans()[-1].context.trace_id:032x}"
    text = generate_latest(registry).decode()

    # TTFT 1.6 s lands in the le=2.0 bucket; the exemplar carries the span's trace id
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("streamtap_time_to_first_token_seconds_bucket") and 'le="2.0"' in x
    )
    assert re.search(r' # \{trace_id="([0-9a-f]{32})"\} 1\.6 ', line), line
    assert f'trace_id="{trace_id}"' in line
    for metric in (
        "streamtap_attempt_time_to_first_token_seconds_bucket",
        "streamtap_request_duration_seconds_bucket",
        "streamtap_max_chunk_gap_seconds_bucket",
    ):
        assert any(metric in x and f'trace_id="{trace_id}"' in x for x in text.splitlines()), metric
    assert traces.trace_id(call.call_id) is None  # finished calls are forgotten


def test_no_exemplar_when_the_span_is_not_sampled(registry: CollectorRegistry) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    traces = OtelTraceRecorder(provider)
    two_429s_then_success([traces, PrometheusRecorder(registry, trace_ids=traces)])
    assert "trace_id" not in generate_latest(registry).decode()


def test_trace_id_lookup_is_bounded(tracer_provider: TracerProvider) -> None:
    traces = OtelTraceRecorder(tracer_provider)
    fanout = Fanout([traces])
    calls = [Call(fanout, call_id=n).start() for n in range(MAX_TRACKED_CALLS + 5)]
    assert traces.trace_id(0) is None  # the oldest were forgotten
    assert traces.trace_id(MAX_TRACKED_CALLS + 4) is not None
    for c in calls:
        c.finish("abandoned")
    assert traces.trace_id(MAX_TRACKED_CALLS + 4) is None


def points(reader: InMemoryMetricReader) -> dict[str, list[HistogramDataPoint]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[HistogramDataPoint]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)]
    return found


BASE = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "server.address": "api.openai.com",
    "server.port": 443,
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
}


def test_genai_histograms_recorded_once_per_call(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    two_429s_then_success([OtelMetricsRecorder(meter_provider)])
    found = points(metric_reader)

    (duration,) = found["gen_ai.client.operation.duration"]
    assert dict(duration.attributes) == {**BASE, "streamtap.outcome": "ok"}
    assert (duration.count, duration.sum) == (1, 3.0)
    assert tuple(duration.explicit_bounds) == DURATION_BOUNDARIES

    tokens = {p.attributes["gen_ai.token.type"]: p for p in found["gen_ai.client.token.usage"]}
    assert (tokens["input"].count, tokens["input"].sum) == (1, 12)
    assert (tokens["output"].count, tokens["output"].sum) == (1, 30)
    assert tuple(tokens["input"].explicit_bounds) == TOKEN_BOUNDARIES
    assert dict(tokens["input"].attributes) == {**BASE, "gen_ai.token.type": "input"}

    (ttfc,) = found["gen_ai.client.operation.time_to_first_chunk"]
    assert (ttfc.count, ttfc.sum) == (1, 1.6)
    assert tuple(ttfc.explicit_bounds) == DURATION_BOUNDARIES

    (per_chunk,) = found["gen_ai.client.operation.time_per_output_chunk"]
    assert per_chunk.count == 1  # once per call, not once per chunk
    assert per_chunk.sum == pytest.approx((3.0 - 1.6) / 10)
    assert tuple(per_chunk.explicit_bounds) == DURATION_BOUNDARIES


def test_response_model_is_capped_as_the_request_model_is(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """Each fine-tune answers with its own model name: uncapped, those grew one attribute set per
    model, up to the SDK's cardinality limit, where every series folds into the overflow."""
    fanout = Fanout([OtelMetricsRecorder(meter_provider)])
    for n in range(MAX_MODELS + 5):
        Call(fanout, model=f"ft:gpt-4o:org::{n}").start().finish("ok")
    durations = points(metric_reader)["gen_ai.client.operation.duration"]
    assert len(durations) == MAX_MODELS + 1
    (other,) = [p for p in durations if p.attributes["gen_ai.request.model"] == "_other"]
    assert other.attributes["gen_ai.response.model"] == "_other"
    assert other.count == 5


def test_the_caps_are_the_meter_providers_shared_by_its_recorders(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """A recorder per client (setup_telemetry() per client) on one provider: the streams are the
    provider's, so are their caps, or each recorder would add its own MAX_MODELS."""
    recorders = [Fanout([OtelMetricsRecorder(meter_provider)]) for _ in range(3)]
    for n in range(MAX_MODELS + 30):
        Call(recorders[n % 3], model=f"ft:gpt-4o:org::{n}").start().finish("ok")
    durations = points(metric_reader)["gen_ai.client.operation.duration"]
    assert len(durations) == MAX_MODELS + 1


def test_the_server_address_is_capped_and_its_overflow_has_no_port(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """An upstream per host (a fallback's, a per-tenant base URL): each would be streams of its
    own, up to the SDK's cardinality limit, where every series folds into the overflow."""
    fanout = Fanout([OtelMetricsRecorder(meter_provider)])
    for n in range(MAX_SERVERS + 3):
        Call(fanout, server_address=f"tenant-{n}.example.com").start().finish("ok")
    durations = points(metric_reader)["gen_ai.client.operation.duration"]
    assert len({p.attributes["server.address"] for p in durations}) == MAX_SERVERS + 1
    (other,) = [p for p in durations if p.attributes["server.address"] == "_other"]
    assert "server.port" not in other.attributes
    assert other.count == 3


def test_the_ports_of_one_server_are_capped_with_it(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """One host, a port per base URL: as many series as ports, under the same cap."""
    fanout = Fanout([OtelMetricsRecorder(meter_provider)])
    for n in range(MAX_SERVERS + 3):
        Call(fanout, server_address="127.0.0.1", server_port=8000 + n).start().finish("ok")
    durations = points(metric_reader)["gen_ai.client.operation.duration"]
    assert len(durations) == MAX_SERVERS + 1
    (other,) = [p for p in durations if p.attributes["server.address"] == "_other"]
    assert "server.port" not in other.attributes and other.count == 3


def test_error_call_has_error_type_and_no_stream_metrics_when_not_streaming(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    recorder = OtelMetricsRecorder(meter_provider)
    c = Call(Fanout([recorder]), stream=False).start().attempt_fails("timeout", retry=False)
    c.finish("error", error_type="timeout", duration=10.0, ttft=None)
    c.finish("error", error_type="timeout", duration=10.0)  # duplicate: ignored
    found = points(metric_reader)
    (duration,) = found["gen_ai.client.operation.duration"]
    assert duration.count == 1
    assert duration.attributes["error.type"] == "timeout"
    assert duration.attributes["streamtap.outcome"] == "error"
    assert (
        "gen_ai.client.operation.time_to_first_chunk" not in found
        or not found["gen_ai.client.operation.time_to_first_chunk"]
    )
    assert "gen_ai.client.token.usage" not in found or not found["gen_ai.client.token.usage"]


@pytest.mark.parametrize(
    ("sent", "recorded"), [("flex", "flex"), ("priority", "priority"), ("x" * 40, "_OTHER")]
)
def test_service_tier_on_metrics_is_a_closed_set(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader, sent: str, recorded: str
) -> None:
    c = Call(Fanout([OtelMetricsRecorder(meter_provider)])).start().attempt_ok()
    c.finish("ok", service_tier=sent)
    (duration,) = points(metric_reader)["gen_ai.client.operation.duration"]
    assert duration.attributes["openai.response.service_tier"] == recorded


@pytest.mark.parametrize(
    ("duration", "ttft", "chunks", "expected"),
    [(3.0, 1.0, 5, 0.5), (3.0, 1.0, 1, None), (3.0, None, 5, None), (1.0, 2.0, 3, 0.0)],
)
def test_time_per_output_chunk(
    duration: float, ttft: float | None, chunks: int, expected: float | None
) -> None:
    assert time_per_output_chunk(duration, ttft, chunks) == expected


def test_a_meter_provider_that_is_not_one_is_named() -> None:
    """Before: AttributeError: 'str' object has no attribute 'get_meter'."""
    with pytest.raises(
        TypeError, match=r"^OtelMetricsRecorder meter_provider must be an OpenTelemetry MeterProvider"
    ):
        OtelMetricsRecorder("global")  # type: ignore[arg-type]

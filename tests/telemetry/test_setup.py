"""setup_telemetry() and default_recorders(), without touching the real global providers."""

from __future__ import annotations

import os
import threading
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import ProxyTracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from streamtap import _telemetry
from streamtap._otel_metrics import OtelMetricsRecorder
from streamtap._otel_traces import OtelTraceRecorder
from streamtap._prometheus import PrometheusRecorder
from streamtap._telemetry import (
    _batch_size,
    _exporter_names,
    _grpc_compression,
    _protocol,
    build_meter_provider,
    build_tracer_provider,
    default_recorders,
    resource_of,
    setup_telemetry,
)

from ._builder import two_429s_then_success


@pytest.fixture
def globals_(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-ins for the global providers: unconfigured proxies, and a record of what is set."""
    state: dict[str, Any] = {"tracer": ProxyTracerProvider(), "meter": metrics.NoOpMeterProvider()}
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: state["tracer"])
    monkeypatch.setattr(trace, "set_tracer_provider", lambda p: state.__setitem__("set_tracer", p))
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: state["meter"])
    monkeypatch.setattr(metrics, "set_meter_provider", lambda p: state.__setitem__("set_meter", p))
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    return state


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param(
            {"prometheus_registry": "default"},
            TypeError,
            r"setup_telemetry prometheus_registry must be a prometheus_client CollectorRegistry or None .*got 'default'",
            id="registry",
        ),
        pytest.param(
            {"tracer_provider": "otlp"},
            TypeError,
            r"setup_telemetry tracer_provider must be an OpenTelemetry TracerProvider or None .*got 'otlp'",
            id="tracer-provider",
        ),
        pytest.param(
            {"meter_provider": 1},
            TypeError,
            r"setup_telemetry meter_provider must be an OpenTelemetry MeterProvider or None .*got 1",
            id="meter-provider",
        ),
        pytest.param(
            {"service_name": ""},
            ValueError,
            r"setup_telemetry service_name must be a non-empty string, got ''",
            id="service-name",
        ),
    ],
)
def test_bad_arguments_are_named_before_anything_is_set(
    globals_: dict[str, Any], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Before: a weakref TypeError, an AttributeError on get_tracer, or a provider built and set anyway."""
    with pytest.raises(error, match=message):
        setup_telemetry(**kwargs)
    assert "set_tracer" not in globals_ and "set_meter" not in globals_


def test_injected_providers_win(
    globals_: dict[str, Any],
    registry: CollectorRegistry,
    tracer_provider: TracerProvider,
    spans: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    recorders = setup_telemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider, prometheus_registry=registry
    )
    assert [type(r) for r in recorders] == [OtelTraceRecorder, PrometheusRecorder, OtelMetricsRecorder]
    assert "set_tracer" not in globals_
    assert "set_meter" not in globals_
    two_429s_then_success(recorders)
    trace_id = f"{spans.get_finished_spans()[-1].context.trace_id:032x}"
    assert f'trace_id="{trace_id}"' in generate_latest(registry).decode()  # wired in Fanout order
    data = metric_reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "gen_ai.client.operation.duration" in names


def test_unconfigured_globals_get_sdk_providers(
    globals_: dict[str, Any], registry: CollectorRegistry
) -> None:
    setup_telemetry(service_name="checkout", prometheus_registry=registry)
    tracer_provider = globals_["set_tracer"]
    meter_provider = globals_["set_meter"]
    assert isinstance(tracer_provider, TracerProvider)
    assert isinstance(meter_provider, MeterProvider)
    assert tracer_provider.resource.attributes["service.name"] == "checkout"
    assert tracer_provider._active_span_processor._span_processors == ()  # OTEL_TRACES_EXPORTER=none
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_configured_globals_are_kept(globals_: dict[str, Any], registry: CollectorRegistry) -> None:
    mine = TracerProvider()
    globals_["tracer"] = mine
    globals_["meter"] = MeterProvider()
    setup_telemetry(prometheus_registry=registry)
    assert "set_tracer" not in globals_
    assert "set_meter" not in globals_


@pytest.mark.parametrize("how", ["global", "injected"])
def test_a_meter_provider_built_beside_the_apps_tracer_provider_names_the_apps_service(
    globals_: dict[str, Any], registry: CollectorRegistry, how: str
) -> None:
    # Otherwise the app's traces say "checkout" and its streamtap metrics say "streamtap".
    mine = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "deployment.environment": "prod"})
    )
    if how == "global":
        globals_["tracer"] = mine
        setup_telemetry(prometheus_registry=registry)
    else:
        setup_telemetry(tracer_provider=mine, prometheus_registry=registry)
    assert "set_tracer" not in globals_
    built = globals_["set_meter"]
    assert resource_of(built) is mine.resource
    assert resource_of(built).attributes["deployment.environment"] == "prod"
    built.shutdown()


def test_a_tracer_provider_built_beside_the_apps_meter_provider_names_the_apps_service(
    globals_: dict[str, Any], registry: CollectorRegistry
) -> None:
    mine = MeterProvider(resource=Resource.create({"service.name": "checkout"}))
    globals_["meter"] = mine
    setup_telemetry(service_name="ignored-here", prometheus_registry=registry)
    assert "set_meter" not in globals_
    built = globals_["set_tracer"]
    assert built.resource is resource_of(mine)
    assert built.resource.attributes["service.name"] == "checkout"
    built.shutdown()
    mine.shutdown()


def test_providers_built_together_share_the_service_name(
    globals_: dict[str, Any], registry: CollectorRegistry
) -> None:
    setup_telemetry(service_name="checkout", prometheus_registry=registry)
    tracer_provider, meter_provider = globals_["set_tracer"], globals_["set_meter"]
    assert resource_of(meter_provider).attributes["service.name"] == "checkout"
    assert resource_of(tracer_provider).attributes["service.name"] == "checkout"
    assert resource_of(trace.NoOpTracerProvider()) is None
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_sdk_disabled_leaves_globals_alone(
    globals_: dict[str, Any], registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    recorders = setup_telemetry(prometheus_registry=registry)
    assert "set_tracer" not in globals_
    assert "set_meter" not in globals_
    # Every provider would hand out no-op tracers and meters: only Prometheus records.
    assert [type(r) for r in recorders] == [PrometheusRecorder]
    assert recorders[0].trace_ids is None  # type: ignore[attr-defined]
    assert "streamtap_requests" in {family.name for family in registry.collect()}


def test_sdk_disabled_still_honours_injected_providers(
    globals_: dict[str, Any], registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    recorders = setup_telemetry(tracer_provider=TracerProvider(), prometheus_registry=registry)
    assert [type(r) for r in recorders] == [OtelTraceRecorder, PrometheusRecorder, OtelMetricsRecorder]


def test_console_exporter_is_honoured() -> None:
    provider = build_tracer_provider("svc", {"OTEL_TRACES_EXPORTER": "console"})
    processors = provider._active_span_processor._span_processors
    assert len(processors) == 1
    provider.shutdown()
    meter_provider = build_meter_provider("svc", {"OTEL_METRICS_EXPORTER": "none"})
    meter_provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "size"),
    [
        pytest.param({}, 64, id="unset"),
        pytest.param({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}, None, id="the-variable-for-the-sdk"),
        pytest.param({"OTEL_BSP_MAX_QUEUE_SIZE": "40"}, 40, id="capped-by-the-queue"),
        pytest.param({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, 64, id="a-queue-the-sdk-ignores"),
    ],
)
def test_export_batch_size(
    environ: dict[str, str], size: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _batch_size(environ) == size
    for name, value in environ.items():  # where the SDK reads the rest
        monkeypatch.setenv(name, value)
    # The SDK takes what is passed: a batch larger than its queue would be a ValueError.
    build_tracer_provider("svc", {**os.environ, "OTEL_TRACES_EXPORTER": "console"}).shutdown()


def test_exporter_and_protocol_parsing() -> None:
    assert _exporter_names({}, "traces") == ["otlp"]
    assert _exporter_names({"OTEL_TRACES_EXPORTER": " OTLP, console "}, "traces") == ["otlp", "console"]
    assert _exporter_names({"OTEL_METRICS_EXPORTER": "none"}, "metrics") == ["none"]
    assert _protocol({}, "traces") == "http/protobuf"
    assert _protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "traces") == "grpc"
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"}
    assert _protocol(env, "metrics") == "http/protobuf"


@pytest.mark.parametrize(
    ("environ", "gzip", "warning"),
    [
        ({}, False, ""),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "none"}, False, ""),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": " GZIP "}, True, ""),
        (
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none"},
            False,
            "",
        ),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": ""}, True, ""),
        (
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "none", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip"},
            False,
            "",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "brotli"},
            False,
            "streamtap: OTEL_EXPORTER_OTLP_TRACES_COMPRESSION=brotli is not supported (gzip, none); "
            "exporting uncompressed",
        ),
    ],
)
def test_grpc_compression_reads_the_variables_as_the_specification_gives_them(
    caplog: pytest.LogCaptureFixture, environ: dict[str, str], gzip: bool, warning: str
) -> None:
    caplog.set_level("WARNING", "streamtap")
    expected = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
    assert _grpc_compression(environ, "traces") is expected
    assert [r.getMessage() for r in caplog.records] == ([warning] if warning else [])


def test_grpc_exporters_are_built_when_the_variables_say_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's gRPC exporters, reading the variable themselves, raise on the specification's
    # `none`: `streamtap proxy` would not start.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
    environ = {**os.environ, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    tracer_provider = build_tracer_provider("svc", environ)
    meter_provider = build_meter_provider(
        "svc", {**environ, "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "none"}
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_default_recorders_are_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_telemetry, "_defaults", None)
    seen: list[list[int]] = []
    lock = threading.Lock()

    def grab() -> None:
        ids = [id(r) for r in default_recorders()]
        with lock:
            seen.append(ids)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({tuple(ids) for ids in seen}) == 1
    traces, prom, otel_metrics = default_recorders()
    assert isinstance(traces, OtelTraceRecorder)
    assert isinstance(prom, PrometheusRecorder)
    assert isinstance(otel_metrics, OtelMetricsRecorder)
    assert prom.trace_ids is traces


def test_default_recorders_are_prometheus_alone_when_the_sdk_is_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_telemetry, "_defaults", None)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert [type(r) for r in default_recorders()] == [PrometheusRecorder]
    monkeypatch.setattr(_telemetry, "_defaults", None)
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    assert [type(r) for r in default_recorders()] == [
        OtelTraceRecorder,
        PrometheusRecorder,
        OtelMetricsRecorder,
    ]

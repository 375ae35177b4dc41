"""setup_telemetry() and default_recorders(), without touching the real global providers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import ProxyTracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

import streamtap
from streamtap import _otel_env, _telemetry
from streamtap._otel_content import CAPTURE_ENV, EMIT_EVENT_ENV
from streamtap._otel_events import EVENT_NAME, OtelEventRecorder
from streamtap._otel_metrics import OtelMetricsRecorder
from streamtap._otel_traces import OtelTraceRecorder
from streamtap._prometheus import PrometheusRecorder
from streamtap._telemetry import (
    build_logger_provider,
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
    state: dict[str, Any] = {
        "tracer": ProxyTracerProvider(),
        "meter": metrics._internal._ProxyMeterProvider(),
        "logger": _logs._internal.ProxyLoggerProvider(),
    }
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: state["tracer"])
    monkeypatch.setattr(trace, "set_tracer_provider", lambda p: state.__setitem__("set_tracer", p))
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: state["meter"])
    monkeypatch.setattr(metrics, "set_meter_provider", lambda p: state.__setitem__("set_meter", p))
    monkeypatch.setattr(_logs, "get_logger_provider", lambda: state["logger"])
    monkeypatch.setattr(_logs, "set_logger_provider", lambda p: state.__setitem__("set_logger", p))
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    monkeypatch.delenv(EMIT_EVENT_ENV, raising=False)
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
            {"logger_provider": "console"},
            TypeError,
            r"setup_telemetry logger_provider must be an OpenTelemetry LoggerProvider or None .*got 'console'",
            id="logger-provider",
        ),
        pytest.param(
            {"events": "false"},
            TypeError,
            r"setup_telemetry events must be True, False or None, got 'false'",
            id="events",
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
    assert "set_tracer" not in globals_ and "set_meter" not in globals_ and "set_logger" not in globals_


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


def test_events_go_to_an_injected_logger_provider_when_asked_for(
    globals_: dict[str, Any], registry: CollectorRegistry, tracer_provider: TracerProvider
) -> None:
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    recorders = setup_telemetry(
        tracer_provider=tracer_provider, prometheus_registry=registry, logger_provider=logger_provider
    )
    assert OtelEventRecorder not in [type(r) for r in recorders]  # the variables ask for none
    recorders = setup_telemetry(
        tracer_provider=tracer_provider,
        prometheus_registry=registry,
        logger_provider=logger_provider,
        events=True,
    )
    assert [type(r) for r in recorders] == [
        OtelTraceRecorder,
        PrometheusRecorder,
        OtelMetricsRecorder,
        OtelEventRecorder,
    ]
    two_429s_then_success(recorders)
    (record,) = logs.get_finished_logs()
    assert record.log_record.event_name == EVENT_NAME
    assert record.log_record.trace_id != 0  # linked to the trace recorder's call span
    assert "set_logger" not in globals_
    logger_provider.shutdown()


@pytest.mark.parametrize(("variable", "value"), [(CAPTURE_ENV, "EVENT_ONLY"), (EMIT_EVENT_ENV, "true")])
def test_an_unconfigured_global_logger_provider_is_built_when_the_variables_ask_for_events(
    globals_: dict[str, Any],
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    flushed_at_exit: list[tuple[object, float]],
) -> None:
    monkeypatch.setenv(variable, value)
    recorders = setup_telemetry(service_name="checkout", prometheus_registry=registry)
    assert isinstance(recorders[-1], OtelEventRecorder)
    logger_provider = globals_["set_logger"]
    assert isinstance(logger_provider, LoggerProvider)
    assert logger_provider.resource.attributes["service.name"] == "checkout"
    built = [globals_[name] for name in ("set_tracer", "set_meter", "set_logger")]
    assert [p for p, _ in flushed_at_exit] == built  # each flushed by streamtap at exit
    for provider in built:
        provider.shutdown()


def test_no_logger_provider_is_built_unless_events_are_asked_for(
    globals_: dict[str, Any], registry: CollectorRegistry
) -> None:
    recorders = setup_telemetry(prometheus_registry=registry)
    assert [type(r) for r in recorders] == [OtelTraceRecorder, PrometheusRecorder, OtelMetricsRecorder]
    assert "set_logger" not in globals_
    globals_["set_tracer"].shutdown()
    globals_["set_meter"].shutdown()


def test_a_configured_global_logger_provider_is_kept(
    globals_: dict[str, Any], registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EMIT_EVENT_ENV, "true")
    globals_["tracer"] = TracerProvider(resource=Resource.create({"service.name": "app"}))
    globals_["meter"] = MeterProvider()
    globals_["logger"] = mine = LoggerProvider()
    assert isinstance(setup_telemetry(prometheus_registry=registry)[-1], OtelEventRecorder)
    assert "set_logger" not in globals_
    mine.shutdown()


def test_a_logger_provider_built_beside_the_apps_tracer_provider_names_the_apps_service(
    globals_: dict[str, Any], registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EMIT_EVENT_ENV, "true")
    globals_["tracer"] = TracerProvider(resource=Resource.create({"service.name": "app"}))
    setup_telemetry(prometheus_registry=registry)
    assert globals_["set_logger"].resource.attributes["service.name"] == "app"
    globals_["set_logger"].shutdown()
    globals_["set_meter"].shutdown()


def test_the_logs_exporters_and_batches_follow_the_variables(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", "streamtap")
    environ = {
        "OTEL_LOGS_EXPORTER": "console,zipkin",
        "OTEL_BLRP_MAX_QUEUE_SIZE": "40",
        "OTEL_BLRP_SCHEDULE_DELAY": "0",
    }
    provider = build_logger_provider("svc", environ)
    try:
        (processor,) = provider._multi_log_record_processor._log_record_processors  # type: ignore[attr-defined]
        batches = processor._batch_processor
        assert (batches._max_queue_size, batches._max_export_batch_size) == (40, 40)
        assert batches._schedule_delay_millis == 1000
    finally:
        provider.shutdown()
    assert caplog.messages == [
        "streamtap: OTEL_BLRP_SCHEDULE_DELAY=0 is not an integer >= 1; using 1000",
        "streamtap: OTEL_LOGS_EXPORTER=zipkin is not supported (otlp, console, none)",
    ]


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


def test_the_batch_span_processor_is_given_the_variables_settings() -> None:
    environ = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_BSP_MAX_QUEUE_SIZE": "40",
        "OTEL_BSP_SCHEDULE_DELAY": "250",
    }
    provider = build_tracer_provider("svc", environ)
    try:
        (processor,) = provider._active_span_processor._span_processors
        batches = processor._batch_processor  # type: ignore[attr-defined]
        assert (batches._max_queue_size, batches._max_export_batch_size) == (40, 40)
        assert batches._schedule_delay_millis == 250
    finally:
        provider.shutdown()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_values_the_sdk_would_raise_on_are_warned_of_and_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    # Left to the SDK, each of these stops setup_telemetry, and `streamtap proxy`, at start:
    # gRPC exporters raise on the specification's `none` and on a timeout that is not a number,
    # the batch span processor on a queue of 0, the metric reader on an interval of 0.
    caplog.set_level("WARNING", "streamtap")
    invalid = {
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
        "OTEL_BSP_MAX_QUEUE_SIZE": "0",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-1",
        "OTEL_METRIC_EXPORT_INTERVAL": "0",
    }
    for name, value in invalid.items():  # where the SDK reads them too
        monkeypatch.setenv(name, value)
    environ = {**os.environ, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    tracer_provider = build_tracer_provider("svc", environ)
    meter_provider = build_meter_provider("svc", environ)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    ours = {
        r.getMessage().split("=")[0].removeprefix("streamtap: ")
        for r in caplog.records
        if r.name == "streamtap"
    }
    # `none` is valid.
    assert ours == set(invalid) - {"OTEL_EXPORTER_OTLP_COMPRESSION"}, caplog.text


@pytest.mark.parametrize("value", ["abc", ""])
@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_a_per_signal_grpc_timeout_that_does_not_parse_is_warned_of_and_not_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, signal: str, value: str
) -> None:
    """The gRPC exporters parse OTEL_EXPORTER_OTLP_{SIGNAL}_TIMEOUT with float() whatever they
    are given: after the warning saying 10 s would be used, `streamtap proxy` died at start with
    the exporter's traceback. The exporter now gets 10 s and never reads the value."""
    caplog.set_level("WARNING", "streamtap")
    name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT"
    monkeypatch.setenv(name, value)  # where the SDK reads it
    built: list[Any] = []

    def grpc_exporter(*args: Any) -> Any:
        built.append(real(*args))
        return built[-1]

    real = _telemetry.grpc_exporter
    monkeypatch.setattr(_telemetry, "grpc_exporter", grpc_exporter)
    environ = {**os.environ, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    build = {"traces": build_tracer_provider, "metrics": build_meter_provider, "logs": build_logger_provider}
    build[signal]("svc", environ).shutdown()
    assert [exporter._timeout for exporter in built] == [10.0]
    module = sys.modules[next(k for k in type(built[0]).__mro__ if "proto.grpc" in k.__module__).__module__]
    assert module.environ is os.environ  # as it was
    warned = [f"streamtap: {name}={value} is not a number of seconds >= 0; using 10.0"] if value else []
    assert caplog.messages == warned


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_endpoint_without_a_scheme_is_warned_of_over_http_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    """Over gRPC, localhost:4317 is a gRPC target, which the specification allows."""
    monkeypatch.setattr(_otel_env, "_told", set())
    caplog.set_level("WARNING", "streamtap")
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}
    build_tracer_provider("svc", environ).shutdown()
    build_meter_provider("svc", environ).shutdown()
    warned = [m for m in caplog.messages if "OTEL_EXPORTER_OTLP_ENDPOINT" in m]
    assert len(warned) == (1 if protocol == "http/protobuf" else 0), warned


def test_a_setting_is_warned_of_once_whatever_the_exporters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", "streamtap")
    environ = {"OTEL_TRACES_EXPORTER": "console,console", "OTEL_BSP_SCHEDULE_DELAY": "-1"}
    build_tracer_provider("svc", environ).shutdown()
    assert caplog.messages == ["streamtap: OTEL_BSP_SCHEDULE_DELAY=-1 is not an integer >= 1; using 5000"]


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
    monkeypatch.delenv(EMIT_EVENT_ENV, raising=False)
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    assert [type(r) for r in default_recorders()] == [
        OtelTraceRecorder,
        PrometheusRecorder,
        OtelMetricsRecorder,
    ]


def test_default_recorders_emit_events_when_the_variables_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_telemetry, "_defaults", None)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv(CAPTURE_ENV, "span_and_event")
    traces, _, _, events = default_recorders()
    assert isinstance(events, OtelEventRecorder)
    assert events.spans is traces


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"OTEL_SERVICE_NAME": "billing"}, "billing"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, service.name=billing"}, "billing"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name="}, "checkout"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"}, "checkout"),
    ],
)
def test_the_environments_service_name_wins_over_the_default(
    globals_: dict[str, Any],
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    expected: str,
) -> None:
    """`service_name` is streamtap's default (the proxy's "streamtap-proxy"): an operator names the
    service with either variable, as for any SDK-configured process."""
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    setup_telemetry(service_name="checkout", prometheus_registry=registry)
    tracer_provider, meter_provider = globals_["set_tracer"], globals_["set_meter"]
    assert resource_of(tracer_provider).attributes["service.name"] == expected
    assert resource_of(meter_provider).attributes["service.name"] == expected
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_an_exit_flush_waits_at_most_the_otlp_timeout_read_once(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    flushed_at_exit: list[tuple[object, float]],
) -> None:
    """Each provider streamtap builds is flushed at exit for as long as its exporters' OTLP
    timeout, read (and warned of) once, when they are built."""
    caplog.set_level("WARNING", "streamtap")
    environ = {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "3"}
    tracer_provider = build_tracer_provider("svc", environ)
    meter_provider = build_meter_provider("svc", environ)
    console = build_tracer_provider("svc", {"OTEL_TRACES_EXPORTER": "console"})
    for provider in (tracer_provider, meter_provider, console):
        provider.shutdown()
    assert flushed_at_exit == [(tracer_provider, 10.0), (meter_provider, 3.0), (console, 10.0)]
    assert caplog.messages == [
        "streamtap: OTEL_EXPORTER_OTLP_TIMEOUT=soon is not a number of seconds >= 0; using 10.0"
    ]


def test_no_op_providers_the_app_set_are_kept(globals_: dict[str, Any]) -> None:
    """Set on purpose (telemetry off): nothing is built, set or exported beside them."""
    globals_.update(
        tracer=trace.NoOpTracerProvider(),
        meter=metrics.NoOpMeterProvider(),
        logger=_logs.NoOpLoggerProvider(),
    )
    setup_telemetry(prometheus_registry=CollectorRegistry(), events=True)
    assert not {"set_tracer", "set_meter", "set_logger"} & set(globals_)


def test_otel_values_the_sdk_raises_on_start_nothing_but_a_warning() -> None:
    """Empty (a Helm chart's unset) or invalid: the SDK raised, at its import for one of them,
    and the app or the proxy stopped at start."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(streamtap.__file__).resolve().parents[1]),  # the streamtap under test
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "",
        "OTEL_SPAN_LINK_COUNT_LIMIT": "abc",
        "OTEL_METRICS_EXEMPLAR_FILTER": "",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://[bad",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_SDK_DISABLED": "false",
    }
    script = "import streamtap; print(len(streamtap.setup_telemetry()))"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr
    assert "OTEL_SPAN_LINK_COUNT_LIMIT=abc is not an integer >= 0 or unset; using 128" in done.stderr
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://[bad is not a URL; using http://localhost:4317" in done.stderr

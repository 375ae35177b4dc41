"""setup_telemetry() and default_recorders(): the recorder lists the engine feeds.

setup_telemetry configures OpenTelemetry SDK providers with OTLP exporters only when the
application has not configured its own (the global providers are still the API's proxies);
what it builds is driven by the standard OTEL_* variables, as the SDK's own autoconfiguration
is. A logger provider is built (and the event recorder added) only when the GenAI variables ask
for inference events. default_recorders() is the process-wide list streamtap uses when given
none.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import _logs, metrics, trace
from opentelemetry._logs import LoggerProvider
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import ProxyTracerProvider, TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from ._events import Recorder
from ._otel_attrs import check_provider
from ._otel_content import emits_events
from ._otel_env import (
    check_http_endpoint,
    exemplar_filter,
    exporter_names,
    limit_value,
    log_batches,
    metric_reading,
    otlp_timeout,
    protocol,
    sdk_disabled,
    span_batches,
    span_limits,
)
from ._otel_events import OtelEventRecorder
from ._otel_exit import flush_at_exit
from ._otel_grpc import grpc_exporter
from ._otel_metrics import OtelMetricsRecorder
from ._otel_traces import OtelTraceRecorder
from ._prom_metrics import check_registry
from ._prometheus import PrometheusRecorder

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

log = logging.getLogger("streamtap")
_lock = threading.Lock()
_defaults: list[Recorder] | None = None


_SDK_TRACE_READS = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"  # at import, raising on a value it refuses


def _import_sdk_trace() -> None:
    """Import the SDK's trace module, which reads OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT as it loads and
    raises on a value that is neither an integer >= 0 nor `unset`, an empty one too (a Helm
    chart's unset): it is hidden while the module loads, and then read as `span_limits` says."""
    import sys

    raw = os.environ.get(_SDK_TRACE_READS)
    if "opentelemetry.sdk.trace" in sys.modules or raw is None or limit_value(raw) is not None:
        import opentelemetry.sdk.trace

        return
    del os.environ[_SDK_TRACE_READS]
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    finally:
        os.environ[_SDK_TRACE_READS] = raw


def _is_unconfigured(provider: object) -> bool:
    # The API hands out proxies until an application sets a provider; a no-op one is set on
    # purpose (telemetry off), and kept.
    return isinstance(provider, ProxyTracerProvider) or type(provider).__name__ in (
        "_ProxyMeterProvider",
        "ProxyLoggerProvider",
    )


def _resource(service_name: str, environ: Mapping[str, str]) -> Resource:
    from opentelemetry.sdk.resources import Resource

    # Resource.create lets passed attributes beat the environment's; `service_name` is a default,
    # so OTEL_SERVICE_NAME, and a service.name in OTEL_RESOURCE_ATTRIBUTES, must win.
    named = environ.get("OTEL_SERVICE_NAME", "").strip() or _names_service(
        environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    )
    return Resource.create({} if named else {"service.name": service_name})


def _names_service(attributes: str) -> bool:
    """Whether OTEL_RESOURCE_ATTRIBUTES (`key=value` pairs, comma-separated) names the service."""
    pairs = (item.partition("=") for item in attributes.split(","))
    return any(key.strip() == "service.name" and value.strip() for key, _, value in pairs)


def resource_of(provider: object) -> Resource | None:
    """The resource of an SDK provider (tracer, meter or logger), None for any other provider.

    A provider built here for the signal an application left unconfigured takes the resource of
    the one it did configure, so its traces, metrics and events name the same service.
    """
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    resource: object = None
    if isinstance(provider, SdkTracerProvider | SdkLoggerProvider):
        resource = provider.resource
    elif isinstance(provider, SdkMeterProvider):
        # The SDK keeps it in its private config and has no getter: read it defensively.
        resource = getattr(getattr(provider, "_sdk_config", None), "resource", None)
    return resource if isinstance(resource, Resource) else None


def _timeout(environ: Mapping[str, str], signal: str, kinds: list[str]) -> float:
    """The OTLP timeout of `signal`'s exporters (read, and warned of, once), and so the longest
    its provider's exit flush waits (the SDK's 10 s without an OTLP exporter)."""
    return otlp_timeout(environ, signal) if {"http", "grpc"} & set(kinds) else 10.0


def _exporter_kinds(environ: Mapping[str, str], signal: str) -> list[str]:
    """The exporters OTEL_{SIGNAL}_EXPORTER asks for: "console", or OTLP as "http" or "grpc" by
    its protocol. `none` adds none; any other name is warned of and left out."""
    kinds: list[str] = []
    for name in exporter_names(environ, signal):
        if name == "console":
            kinds.append("console")
        elif name == "otlp":
            kinds.append("grpc" if protocol(environ, signal) == "grpc" else "http")
            if kinds[-1] == "http":
                check_http_endpoint(environ, signal)
        elif name != "none":
            log.warning(
                "streamtap: OTEL_%s_EXPORTER=%s is not supported (otlp, console, none)", signal.upper(), name
            )
    return kinds


def build_tracer_provider(
    service_name: str, environ: Mapping[str, str] = os.environ, resource: Resource | None = None
) -> SdkTracerProvider:
    """An SDK tracer provider with the exporters OTEL_TRACES_EXPORTER names (default otlp).

    Its resource is `resource` when given, else one named `service_name` (OTEL_SERVICE_NAME
    wins over it, and OTEL_RESOURCE_ATTRIBUTES adds its attributes, as in the SDK).
    """
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = SdkTracerProvider(
        resource=_resource(service_name, environ) if resource is None else resource,
        shutdown_on_exit=False,
        span_limits=SpanLimits(**span_limits(environ)),
    )
    batches = vars(span_batches(environ))  # read (and warned of) once, whatever the exporters
    kinds = _exporter_kinds(environ, "traces")
    timeout = _timeout(environ, "traces", kinds)
    for kind in kinds:
        exporter: SpanExporter
        if kind == "console":
            exporter = ConsoleSpanExporter()
        else:
            from ._otlp_spans import with_this_encoding

            if kind == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

                exporter = grpc_exporter(with_this_encoding(Grpc), environ, "traces", timeout)
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

                exporter = with_this_encoding(Http)(timeout=timeout)
        provider.add_span_processor(BatchSpanProcessor(exporter, **batches))
    flush_at_exit(provider, timeout)
    return provider


def build_meter_provider(
    service_name: str, environ: Mapping[str, str] = os.environ, resource: Resource | None = None
) -> SdkMeterProvider:
    """An SDK meter provider with the exporters OTEL_METRICS_EXPORTER names (default otlp).

    Its resource is `resource` when given, else `service_name`'s, as for the tracer provider.
    """
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        MetricReader,
        PeriodicExportingMetricReader,
    )

    readers: list[MetricReader] = []
    reading = vars(metric_reading(environ))
    kinds = _exporter_kinds(environ, "metrics")
    timeout = _timeout(environ, "metrics", kinds)
    for kind in kinds:
        exporter: MetricExporter
        if kind == "console":
            exporter = ConsoleMetricExporter()
        elif kind == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetrics,
            )

            exporter = grpc_exporter(GrpcMetrics, environ, "metrics", timeout)
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetrics,
            )

            exporter = HttpMetrics(timeout=timeout)
        readers.append(PeriodicExportingMetricReader(exporter, **reading))
    from opentelemetry.sdk.metrics import (
        AlwaysOffExemplarFilter,
        AlwaysOnExemplarFilter,
        TraceBasedExemplarFilter,
    )

    filters = {"always_on": AlwaysOnExemplarFilter, "always_off": AlwaysOffExemplarFilter}
    provider = SdkMeterProvider(
        metric_readers=readers,
        resource=_resource(service_name, environ) if resource is None else resource,
        shutdown_on_exit=False,
        exemplar_filter=filters.get(exemplar_filter(environ), TraceBasedExemplarFilter)(),
    )
    flush_at_exit(provider, timeout)
    return provider


def build_logger_provider(
    service_name: str, environ: Mapping[str, str] = os.environ, resource: Resource | None = None
) -> SdkLoggerProvider:
    """An SDK logger provider with the exporters OTEL_LOGS_EXPORTER names (default otlp).

    Its resource is `resource` when given, else `service_name`'s, as for the tracer provider.
    """
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        ConsoleLogRecordExporter,
        LogRecordExporter,
    )

    provider = SdkLoggerProvider(
        resource=_resource(service_name, environ) if resource is None else resource, shutdown_on_exit=False
    )
    batches = vars(log_batches(environ))
    kinds = _exporter_kinds(environ, "logs")
    timeout = _timeout(environ, "logs", kinds)
    for kind in kinds:
        exporter: LogRecordExporter
        if kind == "console":
            exporter = ConsoleLogRecordExporter()
        elif kind == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

            exporter = grpc_exporter(GrpcLogs, environ, "logs", timeout)
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

            exporter = HttpLogs(timeout=timeout)
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter, **batches))
    flush_at_exit(provider, timeout)
    return provider


def setup_telemetry(
    *,
    service_name: str = "streamtap",
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    prometheus_registry: CollectorRegistry | None = None,
    logger_provider: LoggerProvider | None = None,
    events: bool | None = None,
) -> list[Recorder]:
    """Configure OpenTelemetry if the application has not, and return the recorders.

    Injected providers win; otherwise the global ones are used, and when those are still the
    API's proxies an SDK provider with OTLP exporters (per OTEL_* variables, e.g.
    OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER=none) is built and set as global. A
    provider built for one signal while the application's own SDK provider serves the other
    takes that provider's resource, so both name the application's service. Its spans are
    exported 64 at a time, not the SDK's 512, unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says: a
    batch is encoded in the exporter's thread, holding the GIL against the application's.
    Over OTLP/HTTP and OTLP/gRPC alike the SDK's exporter sends them encoded by streamtap: the
    same bytes for under a third of the SDK's CPU.
    Each call's `gen_ai.client.inference.operation.details` event is emitted when `events` is
    True or, left None, when the GenAI variables ask for it
    (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=EVENT_ONLY or SPAN_AND_EVENT, or
    OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT=true); the global logger provider is then built like
    the others (OTEL_LOGS_EXPORTER) while it is the API's proxy.
    OTEL_SDK_DISABLED=true leaves the globals alone and, unless a provider is injected,
    returns the Prometheus recorder alone.

    Args:
        service_name: `service.name` of the providers built here (OTEL_SERVICE_NAME wins).
        tracer_provider: use this tracer provider, do not touch the global one.
        meter_provider: use this meter provider, do not touch the global one.
        prometheus_registry: the Prometheus registry (default: the global REGISTRY).
        logger_provider: where inference events go, when they are emitted; do not touch the
            global one.
        events: emit each call's inference event (True, False, or None: as the GenAI variables
            say).

    Returns:
        [OtelTraceRecorder, PrometheusRecorder, OtelMetricsRecorder], in Fanout order (the
        trace recorder first, so Prometheus exemplars carry its trace ids), then
        OtelEventRecorder when events are emitted; [PrometheusRecorder] under
        OTEL_SDK_DISABLED=true with no provider injected.
    """
    # Checked before anything is built or set as global.
    if not isinstance(service_name, str) or not service_name.strip():
        raise ValueError(f"setup_telemetry service_name must be a non-empty string, got {service_name!r}")
    check_provider("setup_telemetry tracer_provider", tracer_provider, "get_tracer")
    check_provider("setup_telemetry meter_provider", meter_provider, "get_meter")
    check_provider("setup_telemetry logger_provider", logger_provider, "get_logger")
    check_registry("setup_telemetry prometheus_registry", prometheus_registry)
    disabled = _sdk_disabled()
    if events is not None and not isinstance(events, bool):  # a string such as "false" would be true
        raise TypeError(f"setup_telemetry events must be True, False or None, got {events!r}")
    injected = tracer_provider is not None or meter_provider is not None or logger_provider is not None
    events = emits_events() if events is None else events
    with _lock:
        # Only the global providers are ever replaced, and only while they are the API's proxies.
        build_tracer = build_meter = False
        if tracer_provider is None:
            tracer_provider = trace.get_tracer_provider()
            build_tracer = _is_unconfigured(tracer_provider) and not disabled
        if meter_provider is None:
            meter_provider = metrics.get_meter_provider()
            build_meter = _is_unconfigured(meter_provider) and not disabled
        if build_tracer or build_meter:
            _import_sdk_trace()
        if build_tracer:
            tracer_provider = build_tracer_provider(service_name, resource=resource_of(meter_provider))
            trace.set_tracer_provider(tracer_provider)
        if build_meter:
            meter_provider = build_meter_provider(service_name, resource=resource_of(tracer_provider))
            metrics.set_meter_provider(meter_provider)
        if events and logger_provider is None and not disabled:
            logger_provider = _logs.get_logger_provider()
            if _is_unconfigured(logger_provider):
                resource = resource_of(tracer_provider) or resource_of(meter_provider)
                logger_provider = build_logger_provider(service_name, resource=resource)
                _logs.set_logger_provider(logger_provider)
    registry = REGISTRY if prometheus_registry is None else prometheus_registry
    if disabled and not injected:
        # Every provider hands out no-op tracers and meters under OTEL_SDK_DISABLED (the SDK's
        # own providers too), so the OTel recorders could record nothing: only their per-call
        # work would remain (benchmarks/proxy_path.py, contender `otel-noop`).
        return [PrometheusRecorder(registry)]
    return _recorders(registry, tracer_provider, meter_provider, logger_provider, events=events)


def _recorders(
    registry: CollectorRegistry,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    logger_provider: LoggerProvider | None,
    *,
    events: bool,
) -> list[Recorder]:
    """The OTel and Prometheus recorders in Fanout order, and the event recorder when `events`
    (None providers: the global ones, resolved lazily)."""
    traces = OtelTraceRecorder(tracer_provider)
    recorders: list[Recorder] = [
        traces,
        PrometheusRecorder(registry, trace_ids=traces),
        OtelMetricsRecorder(meter_provider),
    ]
    if events:
        recorders.append(OtelEventRecorder(logger_provider, spans=traces))
    return recorders


def default_recorders() -> list[Recorder]:
    """The process-wide default recorders, built once (thread-safe) on the global providers.

    They resolve the global OpenTelemetry providers lazily, so an application that configures
    OpenTelemetry after importing streamtap is still honoured; Prometheus uses REGISTRY. The
    event recorder joins them when the GenAI variables ask for inference events. Under
    OTEL_SDK_DISABLED=true, Prometheus alone, as from `setup_telemetry`.
    """
    global _defaults
    with _lock:
        if _defaults is None:
            if _sdk_disabled():
                _defaults = [PrometheusRecorder(REGISTRY)]
            else:
                _defaults = _recorders(REGISTRY, None, None, None, events=emits_events())
        return list(_defaults)


def _sdk_disabled() -> bool:
    return sdk_disabled(os.environ)

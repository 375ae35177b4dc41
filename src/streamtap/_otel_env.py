"""The OTEL_* variables that shape the providers setup_telemetry builds, read as OpenTelemetry's
common configuration specification says.

An empty variable is an unset one. A value that does not parse, is out of range or names
nothing known is logged as a warning and treated as unset. Left to the SDK, several such values
raise instead (OTEL_BSP_MAX_QUEUE_SIZE=0, say, or gRPC with the specification's own
OTEL_EXPORTER_OTLP_COMPRESSION=none), and a typo would stop the application, or `streamtap
proxy`, at start. The builders in _telemetry.py hand what these pure functions return to the
SDK's classes explicitly. The OTLP/HTTP exporters read their compression themselves, as the
specification says; the gRPC ones are given theirs (_otel_grpc.py). Every OTLP exporter is given
its timeout, in seconds, as the Python SDK reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

log = logging.getLogger("streamtap")
T = TypeVar("T")

# Spans per OTLP export when OTEL_BSP_MAX_EXPORT_BATCH_SIZE does not say (the SDK's is 512). A
# batch is encoded in the exporter's thread, which shares the GIL with the one serving calls:
# with the SDK's encoder its 512 took ~28 ms, and the proxy's added TTFT at p99 was +18.8 to
# +20.3 ms with them, +6.2 to +6.4 with 64, +2.5 exporting nothing. OTLP spans are now encoded by
# _otlp_spans in 3.2-3.7x less CPU (docs/benchmarks.md, "Spans encoded by streamtap").
EXPORT_BATCH: Final = 64
_OTLP_TIMEOUT_S: Final = 10.0  # the Python SDK's default, in seconds
_NO_LIMIT_MS: Final = 2**31 - 1  # what a timeout of 0 stands for: the specification's example


@dataclass(frozen=True)
class Batches:
    """A batch processor's settings (BatchSpanProcessor's, BatchLogRecordProcessor's)."""

    max_queue_size: int
    schedule_delay_millis: int
    max_export_batch_size: int
    export_timeout_millis: int


# The specification's defaults, but the spans' batch size.
SPAN_BATCHES: Final = Batches(2048, 5000, EXPORT_BATCH, 30000)
LOG_BATCHES: Final = Batches(2048, 1000, 512, 30000)


@dataclass(frozen=True)
class MetricReading:
    """PeriodicExportingMetricReader's settings (the specification's defaults)."""

    export_interval_millis: int = 60000
    export_timeout_millis: int = 30000


def _ignored(name: str, raw: str, accepted: str, using: object) -> None:
    log.warning("streamtap: %s=%s is not %s; using %s", name, raw, accepted, using)


_told: set[str] = set()  # the warnings given once per process


def _once(message: str) -> None:
    if message not in _told:
        _told.add(message)
        log.warning(message)


def sdk_disabled(environ: Mapping[str, str]) -> bool:
    """OTEL_SDK_DISABLED, a boolean: only `true` (any case) is true. Any other value but empty
    and `false` is warned of (once), as the specification asks, and taken for false."""
    raw = environ.get("OTEL_SDK_DISABLED", "").strip()
    if raw.lower() == "true":
        return True
    if raw and raw.lower() != "false":
        _once(
            f"streamtap: OTEL_SDK_DISABLED={raw} is not true or false; using false (the SDK is not disabled)"
        )
    return False


def check_http_endpoint(environ: Mapping[str, str], signal: str) -> None:
    """Warn (once) when the endpoint an OTLP/HTTP exporter of `signal` will read is no http:// or
    https:// URL, as the specification requires over HTTP: the exporter takes `localhost:4318`
    and every export fails in requests ("No connection adapters were found"), naming nothing.
    Over gRPC such an endpoint is a gRPC target, and valid."""
    from ._fallback import shown_url

    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        raw = environ.get(name, "")
        if not raw:  # the exporter reads the next one, as unset
            continue
        if not raw.strip().lower().startswith(("http://", "https://")):
            shown = shown_url(raw.strip())
            _once(
                f"streamtap: {name}={shown} is not an http:// or https:// URL, as OTLP over http/protobuf "
                f"needs (e.g. http://{shown}): every export to it will fail"
            )
        return


def _integer(environ: Mapping[str, str], name: str, default: int, least: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = least - 1
    if value < least:
        _ignored(name, raw, f"an integer >= {least}", default)
        return default
    return value


def _timeout_millis(environ: Mapping[str, str], name: str, default: int) -> int:
    # The specification: a timeout of 0 means no limit, which may be a very long time.
    return _integer(environ, name, default, 0) or _NO_LIMIT_MS


def _per_signal(
    environ: Mapping[str, str],
    setting: str,
    signal: str,
    parse: Callable[[str], T | None],
    accepted: str,
    default: T,
) -> T:
    """OTEL_EXPORTER_OTLP_{SIGNAL}_{SETTING}, else OTEL_EXPORTER_OTLP_{SETTING}, else `default`:
    the first that is set and valid (`parse` gives None for an invalid value). One that is not
    valid is treated as unset, as the specification says, and warned of, naming what is used."""
    names = (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{setting}", f"OTEL_EXPORTER_OTLP_{setting}")
    tried = [(name, raw, parse(raw)) for name in names if (raw := environ.get(name, "").strip())]
    use = next((value for _, _, value in tried if value is not None), default)
    for name, raw, value in tried:
        if value is not None:
            break
        _ignored(name, raw, accepted, use)
    return use


def exporter_names(environ: Mapping[str, str], signal: str) -> list[str]:
    """OTEL_{SIGNAL}_EXPORTER as a list of lower-case names (default ["otlp"])."""
    raw = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip() or "otlp"
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


def _choice(environ: Mapping[str, str], setting: str, signal: str, accepted: tuple[str, ...]) -> str:
    """One of `accepted`, case-insensitive; the first is the default."""

    def parse(raw: str) -> str | None:
        return raw.lower() if raw.lower() in accepted else None

    return _per_signal(environ, setting, signal, parse, f"one of {', '.join(accepted)}", accepted[0])


def protocol(environ: Mapping[str, str], signal: str) -> str:
    """The OTLP protocol of `signal`: "http/protobuf" (the default) or "grpc"."""
    return _choice(environ, "PROTOCOL", signal, ("http/protobuf", "grpc"))


def compression(environ: Mapping[str, str], signal: str) -> str:
    """The OTLP compression of `signal`: "none" (the default) or "gzip"."""
    return _choice(environ, "COMPRESSION", signal, ("none", "gzip"))


def otlp_timeout(environ: Mapping[str, str], signal: str) -> float:
    """The OTLP export timeout of `signal` in seconds (default 10; 0: no limit)."""

    def parse(raw: str) -> float | None:
        try:
            value = float(raw)
        except ValueError:
            return None
        return (value or _NO_LIMIT_MS / 1000) if 0 <= value < float("inf") else None

    return _per_signal(environ, "TIMEOUT", signal, parse, "a number of seconds >= 0", _OTLP_TIMEOUT_S)


def span_batches(environ: Mapping[str, str]) -> Batches:
    """OTEL_BSP_*; the batch size defaults to `EXPORT_BATCH`, within the queue's size."""
    return _batches(environ, "OTEL_BSP", SPAN_BATCHES)


def log_batches(environ: Mapping[str, str]) -> Batches:
    """OTEL_BLRP_*; the batch size defaults to 512, within the queue's size."""
    return _batches(environ, "OTEL_BLRP", LOG_BATCHES)


def _batches(environ: Mapping[str, str], prefix: str, default: Batches) -> Batches:
    queue = _integer(environ, f"{prefix}_MAX_QUEUE_SIZE", default.max_queue_size, 1)
    fitting = min(default.max_export_batch_size, queue)
    batch = _integer(environ, f"{prefix}_MAX_EXPORT_BATCH_SIZE", fitting, 1)
    if batch > queue:  # the SDK refuses a batch larger than its queue
        _ignored(f"{prefix}_MAX_EXPORT_BATCH_SIZE", str(batch), f"at most the queue's {queue}", fitting)
        batch = fitting
    return Batches(
        max_queue_size=queue,
        schedule_delay_millis=_integer(environ, f"{prefix}_SCHEDULE_DELAY", default.schedule_delay_millis, 1),
        max_export_batch_size=batch,
        export_timeout_millis=_timeout_millis(
            environ, f"{prefix}_EXPORT_TIMEOUT", default.export_timeout_millis
        ),
    )


def metric_reading(environ: Mapping[str, str]) -> MetricReading:
    """OTEL_METRIC_EXPORT_INTERVAL and OTEL_METRIC_EXPORT_TIMEOUT, in milliseconds."""
    default = MetricReading()
    return MetricReading(
        export_interval_millis=_integer(
            environ, "OTEL_METRIC_EXPORT_INTERVAL", default.export_interval_millis, 1
        ),
        export_timeout_millis=_timeout_millis(
            environ, "OTEL_METRIC_EXPORT_TIMEOUT", default.export_timeout_millis
        ),
    )


def exemplar_filter(environ: Mapping[str, str]) -> str:
    """OTEL_METRICS_EXEMPLAR_FILTER: trace_based (the default), always_on or always_off. The SDK
    raises on any other value, an empty one too (a Helm chart's or compose file's unset)."""
    accepted = ("trace_based", "always_on", "always_off")
    raw = environ.get("OTEL_METRICS_EXEMPLAR_FILTER", "").strip()
    if raw.lower() in accepted:
        return raw.lower()
    if raw:
        _ignored("OTEL_METRICS_EXEMPLAR_FILTER", raw, f"one of {', '.join(accepted)}", accepted[0])
    return accepted[0]


UNSET_LIMIT: Final = -1  # SpanLimits.UNSET: no limit
# SpanLimits' arguments: the variable each reads, the one it takes when that one is unset (if
# set), and the specification's default.
_SPAN_LIMITS: Final = (
    ("max_attributes", "OTEL_ATTRIBUTE_COUNT_LIMIT", None, 128),
    ("max_span_attributes", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT", 128),
    ("max_event_attributes", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT", 128),
    ("max_link_attributes", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT", 128),
    ("max_events", "OTEL_SPAN_EVENT_COUNT_LIMIT", None, 128),
    ("max_links", "OTEL_SPAN_LINK_COUNT_LIMIT", None, 128),
    ("max_attribute_length", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None, UNSET_LIMIT),
    (
        "max_span_attribute_length",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        UNSET_LIMIT,
    ),
)


def limit_value(raw: str | None) -> int | None:
    """A limit variable's value: an integer >= 0, UNSET_LIMIT for `unset`, None for no valid value."""
    value = (raw or "").strip().lower()
    if value == "unset":
        return UNSET_LIMIT
    return int(value) if value.isascii() and value.isdigit() else None


def span_limits(environ: Mapping[str, str]) -> dict[str, int]:
    """SpanLimits' arguments for the OTEL_*_LIMIT variables the SDK would raise on (empty, or
    neither an integer >= 0 nor `unset`), each treated as unset: the value that stands for it,
    and a warning for any but empty. The SDK reads the others itself."""
    fixed: dict[str, int] = {}
    for argument, name, general, default in _SPAN_LIMITS:
        raw = environ.get(name)
        if raw is None or limit_value(raw) is not None:
            continue
        use = limit_value(environ.get(general)) if general is not None else None
        use = default if use is None else use
        if raw.strip():
            _ignored(name, raw.strip(), "an integer >= 0 or unset", "no limit" if use == UNSET_LIMIT else use)
        fixed[argument] = use
    return fixed


def grpc_endpoint(environ: Mapping[str, str], signal: str) -> str:
    """The endpoint of an OTLP/gRPC exporter of `signal`: OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT,
    else OTEL_EXPORTER_OTLP_ENDPOINT, the first that parses as a URL, else the specification's
    default. The exporter raises on one that does not parse (`http://[bad`)."""
    from urllib.parse import urlsplit

    def parse(raw: str) -> str | None:
        try:
            _ = urlsplit(raw).port
        except ValueError:
            return None
        return raw

    return _per_signal(environ, "ENDPOINT", signal, parse, "a URL", "http://localhost:4317")

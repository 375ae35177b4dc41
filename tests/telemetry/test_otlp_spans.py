"""streamtap's OTLP span encoding writes, byte for byte, what the SDK's encoder serialises.

Every case encodes the same finished spans both ways and compares the bytes: spans recorded
by streamtap's own recorders, and spans that reach every field and every kind of value the
SDK's encoder takes (and the values it logs and drops).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from streamtap import _otlp_spans
from streamtap._events import Fanout
from streamtap._otel_traces import OtelTraceRecorder
from streamtap._otlp_spans import encode_spans, with_this_encoding

from ._builder import Call, two_429s_then_success

REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))
LOCAL = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7, False, TraceFlags(1))
REMOTE_WITH_STATE = SpanContext(
    REMOTE.trace_id, REMOTE.span_id, True, TraceFlags(1), TraceState([("vendor", "x1"), ("other", "y-2")])
)


def sdk_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    return sdk_encode_spans(spans).SerializePartialToString()  # type: ignore[no-any-return]


def assert_same(spans: Sequence[ReadableSpan]) -> bytes:
    ours = encode_spans(spans)
    assert ours == sdk_bytes(spans)
    return ours


def span(
    name: str = "chat gpt-4o",
    *,
    attributes: dict[str, Any] | None = None,
    resource: Resource | None = None,
    scope: InstrumentationScope | None = None,
    **fields: Any,
) -> ReadableSpan:
    """A finished span as the SDK hands it to exporters; its attributes reach the encoder as given."""
    fields.setdefault("context", SpanContext(0x1234, 0x5678, False, TraceFlags(1)))
    fields.setdefault("start_time", 1_700_000_000_000_000_000)
    fields.setdefault("end_time", 1_700_000_001_500_000_000)
    return ReadableSpan(
        name,
        attributes=attributes,
        resource=resource or Resource({"service.name": "svc"}),
        instrumentation_scope=scope,
        **fields,
    )


@pytest.fixture
def recorded() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()
    _otlp_spans._cache.clear()


def provider(exporter: SpanExporter, **settings: Any) -> TracerProvider:
    settings.setdefault("resource", Resource.create({"service.name": "app"}))
    built = TracerProvider(**settings)
    built.add_span_processor(SimpleSpanProcessor(exporter))
    return built


def test_streamtaps_own_spans(recorded: InMemorySpanExporter) -> None:
    """A call's span and its attempts' spans: retry events, error statuses, every GenAI attribute."""
    traces = OtelTraceRecorder(provider(recorded))
    two_429s_then_success([traces])
    Call(Fanout([traces])).start().attempt_fails("server_error", status=503, retry=False).finish("error")
    spans = recorded.get_finished_spans()
    assert len(spans) == 6
    assert any(s.events for s in spans) and any(s.status.status_code is StatusCode.ERROR for s in spans)
    assert_same(spans)
    assert_same(spans)  # again, from the cache of encoded attributes


def test_every_field_of_sdk_spans(recorded: InMemorySpanExporter) -> None:
    """Kinds, parents local and remote, trace state, events, links, statuses, limits' drops."""
    sdk = provider(
        recorded,
        resource=Resource.create(
            {"service.name": "app"}, schema_url="https://opentelemetry.io/schemas/1.30.0"
        ),
        span_limits=SpanLimits(max_span_attributes=3, max_events=2, max_links=1, max_event_attributes=1),
    )
    tracer = sdk.get_tracer("scope-a", "1.2.3", schema_url="https://example.com/s", attributes={"a": 1})
    other = sdk.get_tracer("scope-b")

    for kind in SpanKind:
        with tracer.start_as_current_span(f"kind {kind.name}", kind=kind):
            pass
    remote = set_span_in_context(NonRecordingSpan(REMOTE_WITH_STATE))
    links = [Link(LOCAL, {"l": "v"}), Link(REMOTE)]
    with tracer.start_as_current_span("remote parent", context=remote, links=links) as s:
        s.set_attributes({"x": 1, "y": "two", "z": 3.0, "dropped": True})
        s.add_event("first", {"k": "v", "dropped": 2}, timestamp=1_700_000_000_100_000_000)
        s.add_event("second")
        s.add_event("third, dropped")
        s.set_status(Status(StatusCode.ERROR, "boom: 503"))
        with other.start_as_current_span("local child") as child:
            child.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("error without a description") as s:
        s.set_status(StatusCode.ERROR)
    with tracer.start_as_current_span(""):
        pass
    spans = recorded.get_finished_spans()
    assert {s.dropped_attributes for s in spans} >= {1} and {s.dropped_events for s in spans} >= {1}
    assert {s.dropped_links for s in spans} >= {1}
    assert_same(spans)


VALUES: dict[str, Any] = {
    "empty": "",
    "text": "gpt-4o",
    "unicode": "ünïcødé € 😀",
    "long": "x" * 200,  # a two-byte length
    "longer": "y" * 20_000,  # a three-byte length
    "true": True,
    "false": False,
    "zero": 0,
    "one": 1,
    "minus one": -1,
    "127": 127,
    "128": 128,
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "float": 1.5,
    "float zero": 0.0,
    "minus zero": -0.0,
    "nan": math.nan,
    "inf": math.inf,
    "minus inf": -math.inf,
    "strings": ("stop", "length"),
    "bools": (True, False),
    "ints": (1, -2, 3),
    "floats": (0.5, -1.25),
    "empty tuple": (),
    "list": ["a", None, "b"],
    "bytes": b"\x00\xff",
    "mapping": {"a": 1, "b": {"c": [1, "d"]}},
    "none": None,
}


def test_every_kind_of_attribute_value() -> None:
    spans = [span(attributes=VALUES)]
    spans.append(span("event", events=[Event("e", VALUES, timestamp=5)], attributes={"one": 1}))
    spans.append(span("link", links=[Link(REMOTE, VALUES)]))
    assert_same(spans)


def test_values_the_sdk_cannot_encode_are_logged_and_left_out(caplog: pytest.LogCaptureFixture) -> None:
    attributes = {
        "before": "kept",
        "too big": 2**64,
        "too small": -(2**63) - 1,
        "object": object(),
        "after": 1,
    }
    with caplog.at_level(logging.ERROR, logger="streamtap"):
        encoded = assert_same([span(attributes=attributes)])
    kept = ExportTraceServiceRequest.FromString(encoded).resource_spans[0].scope_spans[0].spans[0].attributes
    assert [kv.key for kv in kept] == ["before", "after"]
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "streamtap"] == [
        "Failed to encode key too big",
        "Failed to encode key too small",
        "Failed to encode key object",
    ]


def test_a_lone_surrogate_is_written_as_the_replacement_character_where_the_sdk_fails() -> None:
    odd = span(
        "chat m\ud800",
        attributes={"gen_ai.response.id": "x\udc00", "k\ud83d": ["a", "b\ud800"]},
        events=[Event("streamtap.\ud800", {"v": "\udfff"}, timestamp=1_700_000_000_500_000_000)],
        status=Status(StatusCode.ERROR, "cut \ud83d"),
    )
    with pytest.raises(UnicodeEncodeError):
        sdk_bytes([odd])  # the whole batch lost over one span's name
    (written,) = (
        ExportTraceServiceRequest.FromString(encode_spans([odd])).resource_spans[0].scope_spans[0].spans
    )
    assert written.name == "chat m\ufffd"
    assert {kv.key: kv.value for kv in written.attributes}["gen_ai.response.id"].string_value == "x\ufffd"
    assert [v.string_value for v in written.attributes[1].value.array_value.values] == ["a", "b\ufffd"]
    assert written.attributes[1].key == "k\ufffd"
    assert (written.events[0].name, written.events[0].attributes[0].value.string_value) == (
        "streamtap.\ufffd",
        "\ufffd",
    )
    assert written.status.message == "cut \ufffd"


def test_equal_values_of_other_types_are_not_confused_by_the_cache() -> None:
    """1, 1.0 and True are equal in Python, and 0.0 and -0.0: their encodings are not."""
    for value in (True, 1, 1.0, 1, True, 0.0, -0.0, 0, False):
        assert_same([span(attributes={"k": value})])


def test_the_cache_stays_bounded() -> None:
    """In entries, and in size: long texts such as captured message content are not kept."""
    _otlp_spans._cache.clear()
    assert_same([span(attributes={f"k{n}": f"value {n}" for n in range(3 * _otlp_spans._CACHE_SIZE)})])
    assert len(_otlp_spans._cache[b"\x4a"]) == _otlp_spans._CACHE_SIZE  # a span's attributes
    _otlp_spans._cache.clear()
    long = "x" * (_otlp_spans._CACHED_TEXT + 1)
    assert_same([span(attributes={"short": "x", "long": long}), span(attributes={"long": long})])
    assert [key for key, _, _ in _otlp_spans._cache[b"\x4a"]] == ["short"]


def test_resources_and_scopes_are_grouped_as_the_sdk_groups_them() -> None:
    """In order of first appearance; equal resources (or scopes) are one group even when they
    are distinct objects, and spans keep their order within a group."""
    first, first_again = Resource({"service.name": "a"}), Resource({"service.name": "a"})
    second = Resource({"service.name": "b"}, schema_url="https://opentelemetry.io/schemas/1.30.0")
    scope = InstrumentationScope("s", "1", "https://example.com/s", {"k": "v"})
    scope_again = InstrumentationScope("s", "1", "https://example.com/s", {"k": "v"})
    spans = [
        span("1", resource=first, scope=scope),
        span("2", resource=second),
        span("3", resource=first_again, scope=scope_again),
        span("4", resource=first, scope=InstrumentationScope("t")),
        span("5", resource=first, scope=scope),
        span("6", resource=Resource({})),
    ]
    encoded = assert_same(spans)
    request = ExportTraceServiceRequest.FromString(encoded)
    assert [[[s.name for s in ss.spans] for ss in rs.scope_spans] for rs in request.resource_spans] == [
        [["1", "3", "5"], ["4"]],
        [["2"]],
        [["6"]],
    ]


def test_no_spans_no_bytes() -> None:
    assert encode_spans([]) == sdk_bytes([]) == b""


class _EncodesItsOwnWay(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def test_the_sdks_http_exporter_is_subclassed_with_its_own_export_code() -> None:
    ours = with_this_encoding(OTLPSpanExporter)
    assert issubclass(ours, OTLPSpanExporter) and ours is not OTLPSpanExporter
    assert ours.export.__code__ is OTLPSpanExporter.export.__code__
    assert with_this_encoding(OTLPSpanExporter) is ours


def test_an_exporter_that_does_not_encode_through_encode_spans_is_kept_as_it_is() -> None:
    assert with_this_encoding(_EncodesItsOwnWay) is _EncodesItsOwnWay


class _MakesItsStubElsewhere(GrpcSpanExporter):
    """An SDK release that no longer makes its stub in `_initialize_channel_and_stub`."""

    def __init__(self) -> None:
        super().__init__(endpoint="127.0.0.1:4317", insecure=True)
        self._client = TraceServiceStub(self._channel)


def _calls_spans(recorded: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    two_429s_then_success([OtelTraceRecorder(provider(recorded))])
    return recorded.get_finished_spans()


def test_the_sdks_grpc_exporter_is_subclassed_to_send_this_encoding(recorded: InMemorySpanExporter) -> None:
    ours = with_this_encoding(GrpcSpanExporter)
    assert issubclass(ours, GrpcSpanExporter) and ours is not GrpcSpanExporter
    assert with_this_encoding(GrpcSpanExporter) is ours
    exporter = ours(endpoint="127.0.0.1:4317", insecure=True)  # gRPC connects at the first export
    try:
        spans = _calls_spans(recorded)
        assert exporter._translate_data(spans) == encode_spans(spans) == sdk_bytes(spans)
    finally:
        exporter.shutdown()


def test_a_grpc_exporter_whose_stub_is_not_ours_is_given_the_sdks_message(
    recorded: InMemorySpanExporter,
) -> None:
    exporter = with_this_encoding(_MakesItsStubElsewhere)()
    try:
        spans = _calls_spans(recorded)
        message = exporter._translate_data(spans)
        assert isinstance(message, ExportTraceServiceRequest)
        assert message.SerializePartialToString() == sdk_bytes(spans)
    finally:
        exporter.shutdown()

"""OtelEventRecorder: one gen_ai.client.inference.operation.details event per call, and the
GenAI variables that decide whether it is emitted and whether it carries content."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from streamtap import _otel_content
from streamtap._events import Fanout
from streamtap._otel_content import CAPTURE_ENV, EMIT_EVENT_ENV, emits_events
from streamtap._otel_events import EVENT_NAME, OtelEventRecorder
from streamtap._otel_traces import OtelTraceRecorder

from ._builder import Call, two_429s_then_success

SAID = [{"role": "assistant", "parts": [{"type": "text", "content": "hi there"}], "finish_reason": "stop"}]
REQUEST = {
    "model": "gpt-4o-mini",
    "stream": True,
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
}
INPUT = [
    {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
    {"role": "user", "parts": [{"type": "text", "content": "hello"}]},
]
TOOLS = [{"type": "function", "name": "weather", "description": None, "parameters": {"type": "object"}}]


@pytest.fixture
def logs() -> InMemoryLogRecordExporter:
    return InMemoryLogRecordExporter()


@pytest.fixture
def logger_provider(logs: InMemoryLogRecordExporter) -> Iterator[LoggerProvider]:
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    yield provider
    provider.shutdown()


@pytest.fixture(autouse=True)
def _no_genai_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    monkeypatch.delenv(EMIT_EVENT_ENV, raising=False)


def only_event(logs: InMemoryLogRecordExporter) -> ReadableLogRecord:
    (record,) = logs.get_finished_logs()
    assert record.log_record.event_name == EVENT_NAME
    return record


def attributes(record: ReadableLogRecord) -> dict[str, Any]:
    return dict(record.log_record.attributes or {})


def test_the_event_holds_what_the_call_span_holds_in_its_context(
    tracer_provider: TracerProvider,
    spans: InMemorySpanExporter,
    logger_provider: LoggerProvider,
    logs: InMemoryLogRecordExporter,
) -> None:
    traces = OtelTraceRecorder(tracer_provider)
    two_429s_then_success([traces, OtelEventRecorder(logger_provider, spans=traces)])
    (span,) = [s for s in spans.get_finished_spans() if s.parent is None]
    record = only_event(logs)
    assert attributes(record) == dict(span.attributes or {})
    assert attributes(record)["gen_ai.usage.output_tokens"] == 30
    assert attributes(record)["streamtap.attempts"] == 3
    assert record.log_record.trace_id == span.context.trace_id
    assert record.log_record.span_id == span.context.span_id
    assert record.log_record.trace_flags == span.context.trace_flags
    assert "hello" not in json.dumps(attributes(record), default=str)  # no content unless asked


def test_without_a_trace_recorder_the_event_takes_the_context_current_when_the_call_ends(
    tracer_provider: TracerProvider, logger_provider: LoggerProvider, logs: InMemoryLogRecordExporter
) -> None:
    c = Call(Fanout([OtelEventRecorder(logger_provider)])).start()
    with tracer_provider.get_tracer("app").start_as_current_span("request") as app_span:
        c.attempt_ok().finish("ok")
    assert only_event(logs).log_record.span_id == app_span.get_span_context().span_id


def test_the_event_of_an_unsampled_call_keeps_its_trace_id_unsampled(
    logger_provider: LoggerProvider, logs: InMemoryLogRecordExporter
) -> None:
    """Under a parent-based sampler and an unsampled request, nothing is exported as a span, yet
    a log pipeline can still group the call's event with the request's other records."""
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    traces = OtelTraceRecorder(provider)
    with provider.get_tracer("app").start_as_current_span("request") as app_span:
        c = Call(Fanout([traces, OtelEventRecorder(logger_provider, spans=traces)])).start()
    assert traces.span_context(c.call_id) is not None
    assert traces.trace_id(c.call_id) is None  # no exemplar may point at a trace never exported
    c.attempt_ok().finish("ok")  # the request's context has ended: the call's own is used
    record = only_event(logs).log_record
    assert record.trace_id == app_span.get_span_context().trace_id != 0
    assert record.span_id not in (0, app_span.get_span_context().span_id)
    assert not record.trace_flags.sampled


def test_an_error_is_named_on_the_event(
    logger_provider: LoggerProvider, logs: InMemoryLogRecordExporter
) -> None:
    c = Call(Fanout([OtelEventRecorder(logger_provider)])).start()
    c.attempt_fails("server_error", status=503, retry=False).finish("error", error_type="server_error")
    attrs = attributes(only_event(logs))
    assert attrs["error.type"] == "server_error"
    assert attrs["streamtap.outcome"] == "error"


@pytest.mark.parametrize("mode", ["EVENT_ONLY", "span_and_event"])
def test_content_goes_to_the_event_as_structures_when_the_variable_sends_it_there(
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    tracer_provider: TracerProvider,
    spans: InMemorySpanExporter,
    logger_provider: LoggerProvider,
    logs: InMemoryLogRecordExporter,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, mode)
    traces = OtelTraceRecorder(tracer_provider)
    fanout = Fanout([traces, OtelEventRecorder(logger_provider, spans=traces)])
    Call(fanout, request=REQUEST).start().attempt_ok().finish("ok", output_messages=SAID)
    attrs = attributes(only_event(logs))
    assert json.loads(json.dumps(attrs["gen_ai.input.messages"])) == INPUT
    assert json.loads(json.dumps(attrs["gen_ai.output.messages"])) == SAID
    assert json.loads(json.dumps(attrs["gen_ai.tool.definitions"])) == TOOLS
    (span,) = [s for s in spans.get_finished_spans() if s.parent is None]
    span_attrs = dict(span.attributes or {})
    if mode == "EVENT_ONLY":
        assert "gen_ai.input.messages" not in span_attrs
        assert "gen_ai.output.messages" not in span_attrs
    else:
        assert json.loads(str(span_attrs["gen_ai.input.messages"])) == INPUT


@pytest.mark.parametrize(("mode", "captured"), [("", False), ("true", False), ("SPAN_ONLY", False)])
def test_no_content_on_the_event_unless_the_variable_sends_it_there(
    mode: str,
    captured: bool,
    monkeypatch: pytest.MonkeyPatch,
    logger_provider: LoggerProvider,
    logs: InMemoryLogRecordExporter,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, mode)
    recorder = OtelEventRecorder(logger_provider)
    Call(Fanout([recorder]), request=REQUEST, capture_content=True).start().finish("ok", output_messages=SAID)
    assert ("gen_ai.input.messages" in attributes(only_event(logs))) is captured


def test_the_code_can_turn_content_off_for_a_client(
    monkeypatch: pytest.MonkeyPatch, logger_provider: LoggerProvider, logs: InMemoryLogRecordExporter
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "EVENT_ONLY")
    recorder = OtelEventRecorder(logger_provider)
    Call(Fanout([recorder]), request=REQUEST, capture_content=False).start().finish(
        "ok", output_messages=SAID
    )
    assert "gen_ai.input.messages" not in attributes(only_event(logs))


def test_the_recorders_own_setting_wins(
    logger_provider: LoggerProvider, logs: InMemoryLogRecordExporter
) -> None:
    recorder = OtelEventRecorder(logger_provider, capture_content=True)
    Call(Fanout([recorder]), request=REQUEST, capture_content=False).start().finish(
        "ok", output_messages=SAID
    )
    assert json.loads(json.dumps(attributes(only_event(logs))["gen_ai.input.messages"])) == INPUT


def test_an_event_with_a_lone_surrogate_still_encodes_as_otlp(
    logger_provider: LoggerProvider, logs: InMemoryLogRecordExporter
) -> None:
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "half an emoji \ud83d"}]}
    recorder = OtelEventRecorder(logger_provider, capture_content=True)
    said = [{"role": "assistant", "parts": [{"type": "text", "content": "\udc00"}], "finish_reason": "stop"}]
    Call(Fanout([recorder]), request=request).start().finish("ok", output_messages=said)
    record = only_event(logs)
    attrs = attributes(record)
    assert attrs["gen_ai.input.messages"][0]["parts"][0]["content"] == "half an emoji \ufffd"
    assert attrs["gen_ai.output.messages"][0]["parts"][0]["content"] == "\ufffd"
    assert encode_logs([record]).SerializeToString()


def test_an_integer_past_int64_in_content_keeps_its_digits_and_every_message(
    logger_provider: LoggerProvider, logs: InMemoryLogRecordExporter, caplog: pytest.LogCaptureFixture
) -> None:
    # A JSON schema bound such as uint64's largest: OTLP's integers are int64, and the SDK's
    # encoder logs and drops an attribute holding a larger one, with every message in it.
    schema = {"type": "integer", "maximum": 2**64 - 1, "minimum": -(2**63)}
    request = {**REQUEST, "tools": [{"type": "function", "function": {"name": "pick", "parameters": schema}}]}
    recorder = OtelEventRecorder(logger_provider, capture_content=True)
    Call(Fanout([recorder]), request=request).start().finish("ok", output_messages=SAID)
    record = only_event(logs)
    (tool,) = attributes(record)["gen_ai.tool.definitions"]
    assert tool["parameters"] == {"type": "integer", "maximum": str(2**64 - 1), "minimum": -(2**63)}
    encoded = encode_logs([record])
    keys = [
        kv.key for rl in encoded.resource_logs for sl in rl.scope_logs for kv in sl.log_records[0].attributes
    ]
    assert "gen_ai.tool.definitions" in keys
    assert "gen_ai.input.messages" in keys
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_one_event_per_call_whatever_follows(
    logger_provider: LoggerProvider, logs: InMemoryLogRecordExporter
) -> None:
    c = Call(Fanout([OtelEventRecorder(logger_provider)])).start().attempt_ok()
    c.finish("ok").finish("error", error_type="timeout")
    assert len(logs.get_finished_logs()) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"logger_provider": "otlp"},
            r"OtelEventRecorder logger_provider must be an OpenTelemetry LoggerProvider",
        ),
        ({"spans": object()}, r"OtelEventRecorder spans must be an OtelTraceRecorder"),
        ({"capture_content": "yes"}, r"OtelEventRecorder capture_content must be True, False or None"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        OtelEventRecorder(**kwargs)


@pytest.mark.parametrize(
    ("environ", "emitted"),
    [
        ({}, False),
        ({CAPTURE_ENV: "true"}, False),
        ({CAPTURE_ENV: "SPAN_ONLY"}, False),
        ({CAPTURE_ENV: "EVENT_ONLY"}, True),
        ({CAPTURE_ENV: "span_and_event"}, True),
        ({EMIT_EVENT_ENV: "TRUE"}, True),
        ({EMIT_EVENT_ENV: "false", CAPTURE_ENV: "EVENT_ONLY"}, False),
        ({EMIT_EVENT_ENV: " true ", CAPTURE_ENV: "no_content"}, True),
    ],
)
def test_whether_events_are_emitted(
    environ: dict[str, str], emitted: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", "streamtap")
    assert emits_events(environ) is emitted
    assert caplog.messages == []


def test_an_emit_event_value_that_is_no_boolean_is_warned_of(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_otel_content, "_warned", set())
    caplog.set_level("WARNING", "streamtap")
    assert emits_events({EMIT_EVENT_ENV: "yes", CAPTURE_ENV: "EVENT_ONLY"}) is True
    assert caplog.messages == [
        f"streamtap: {EMIT_EVENT_ENV}=yes is not true or false; deciding by {CAPTURE_ENV}"
    ]

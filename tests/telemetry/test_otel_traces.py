"""OtelTraceRecorder: spans, children, events, status and traceparent injection."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamtap import _otel_content
from streamtap._events import Fanout
from streamtap._otel_content import CAPTURE_ENV, ContentMode, capture_from_env, content_mode
from streamtap._otel_traces import OtelTraceRecorder

from ._builder import Call, two_429s_then_success


def by_name(spans: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    finished = list(spans.get_finished_spans())
    calls = [s for s in finished if s.name.startswith("chat")]
    assert len(calls) == 1
    attempts = sorted((s for s in finished if s.name == "POST"), key=lambda s: s.start_time or 0)
    return calls[0], attempts


def test_two_429s_then_success(tracer_provider: TracerProvider, spans: InMemorySpanExporter) -> None:
    call = two_429s_then_success([OtelTraceRecorder(tracer_provider)])
    span, attempts = by_name(spans)

    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.OK
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "openai.api.type": "chat_completions",
        "gen_ai.request.stream": True,
        "server.address": "api.openai.com",
        "server.port": 443,
        "streamtap.attempts": 3,
        "streamtap.outcome": "ok",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-123",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.response.time_to_first_chunk": 1.6,
        "streamtap.max_chunk_gap": 0.2,
        "streamtap.chunks": 11,
    }
    assert [e.name for e in span.events] == ["streamtap.retry", "streamtap.retry"]
    assert dict(span.events[0].attributes or {}) == {
        "streamtap.retry.reason": "rate_limited",
        "streamtap.retry.delay": 0.5,
        "streamtap.retry.attempt": 0,
    }

    assert len(attempts) == 3
    for n, attempt in enumerate(attempts):
        assert attempt.parent is not None
        assert attempt.parent.span_id == span.context.span_id
        assert attempt.kind is SpanKind.CLIENT
        attrs = dict(attempt.attributes or {})
        assert attrs["http.request.method"] == "POST"
        assert attrs["url.full"] == "https://api.openai.com/v1/chat/completions"
        assert attrs["server.address"] == "api.openai.com"
        assert attrs["server.port"] == 443
        assert attrs.get("http.request.resend_count") == (n if n > 0 else None)
        # each attempt's own context went to the upstream as W3C traceparent
        assert call.carriers[n] == {
            "traceparent": f"00-{span.context.trace_id:032x}-{attempt.context.span_id:016x}"
            f"-{attempt.context.trace_flags:02x}"
        }
        assert attempt.context.trace_flags.sampled
    assert [dict(a.attributes or {})["http.response.status_code"] for a in attempts] == [429, 429, 200]
    assert [dict(a.attributes or {}).get("error.type") for a in attempts] == [
        "rate_limited",
        "rate_limited",
        None,
    ]
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]


def test_call_span_is_a_child_of_the_callers_span(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    recorder = OtelTraceRecorder(tracer_provider)
    with tracer_provider.get_tracer("app").start_as_current_span("handler") as handler:
        c = Call(Fanout([recorder])).start()
    c.attempt_ok().finish("ok")
    span, _ = by_name(spans)
    assert span.parent is not None
    assert span.parent.span_id == handler.get_span_context().span_id
    assert span.context.trace_id == handler.get_span_context().trace_id


def test_no_traceparent_when_injection_is_off(tracer_provider: TracerProvider) -> None:
    call = two_429s_then_success([OtelTraceRecorder(tracer_provider, inject_traceparent=False)])
    assert call.carriers == [{}, {}, {}]


@pytest.mark.parametrize("outcome", ["cancelled", "abandoned"])
def test_cancelled_and_abandoned_end_every_span(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter, outcome: str
) -> None:
    c = Call(Fanout([OtelTraceRecorder(tracer_provider)])).start().attempt_open()
    c.first_token(0.5)
    c.finish(outcome, ttft=0.5, chunks=3)  # type: ignore[arg-type]
    c.finish(outcome)  # type: ignore[arg-type]  # a duplicate finish ends nothing twice
    span, attempts = by_name(spans)
    assert len(spans.get_finished_spans()) == 2
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {})["streamtap.outcome"] == outcome
    assert "error.type" not in dict(span.attributes or {})
    assert len(attempts) == 1
    assert dict(attempts[0].attributes or {})["streamtap.outcome"] == outcome
    # The answer's headers were received before the call was left: the HTTP conventions want
    # the status code whenever one was.
    assert dict(attempts[0].attributes or {})["http.response.status_code"] == 200
    assert attempts[0].end_time is not None


def test_error_outcome_sets_error_type_and_status(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    c = Call(Fanout([OtelTraceRecorder(tracer_provider)])).start()
    c.attempt_fails("stream_interrupted", status=200, phase="streaming", retry=False).attempt_open()
    c.finish("error", error_type="stream_interrupted")
    span, attempts = by_name(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "stream_interrupted"
    assert dict(attempts[0].attributes or {})["streamtap.error.phase"] == "streaming"
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.ERROR]
    # Recording Errors: it is NOT RECOMMENDED to duplicate error.type in the status description.
    assert [s.status.description for s in (span, *attempts)] == [None, None, None]


def test_fallback_and_breaker_events(tracer_provider: TracerProvider, spans: InMemorySpanExporter) -> None:
    c = Call(Fanout([OtelTraceRecorder(tracer_provider)])).start()
    c.attempt_fails("server_error", status=500, retry=False)
    c.suppressed("server_error", "breaker").breaker("closed", "open").fallback("model", "gpt-4o", ok=True)
    c.finish("ok", fallback="model")
    span, _ = by_name(spans)
    assert [e.name for e in span.events] == [
        "streamtap.retry_suppressed",
        "streamtap.breaker",
        "streamtap.fallback",
    ]
    assert dict(span.events[1].attributes or {}) == {
        "streamtap.breaker.upstream": "openai",
        "streamtap.breaker.model": "gpt-4o-mini",
        "streamtap.breaker.old": "closed",
        "streamtap.breaker.new": "open",
    }
    assert dict(span.events[2].attributes or {}) == {
        "streamtap.fallback.kind": "model",
        "streamtap.fallback.model": "gpt-4o",
        "streamtap.fallback.ok": True,
    }
    assert dict(span.attributes or {})["streamtap.fallback"] == "model"


def test_unknown_attempts_and_late_events_are_tolerated(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    from streamtap._events import AttemptFinished

    c = Call(Fanout([OtelTraceRecorder(tracer_provider)])).start()
    c.emit(AttemptFinished(c.call_id, 7, 200, None, None, 0.1, None))  # never started
    c.finish("ok")
    c.attempt_ok()  # after the end: ignored, no span leaks
    assert [s.name for s in spans.get_finished_spans()] == ["chat gpt-4o-mini"]


def test_responses_api_span(tracer_provider: TracerProvider, spans: InMemorySpanExporter) -> None:
    request = {"model": "gpt-4.1", "input": "hi", "temperature": 0.2, "max_output_tokens": 50, "seed": 7}
    Call(
        Fanout([OtelTraceRecorder(tracer_provider)]), api="responses", model="gpt-4.1", request=request
    ).start().finish("ok")
    span = spans.get_finished_spans()[0]
    attrs = dict(span.attributes or {})
    assert span.name == "chat gpt-4.1"
    assert attrs["openai.api.type"] == "responses"
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.request.seed"] == 7
    assert "gen_ai.input.messages" not in attrs  # content capture is off by default


@pytest.mark.parametrize(
    ("api", "extra", "expected"),
    [
        ("chat_completions", {"response_format": {"type": "json_object"}}, "json"),
        ("chat_completions", {"response_format": {"type": "json_schema", "json_schema": {}}}, "json"),
        ("chat_completions", {"response_format": {"type": "text"}}, "text"),
        ("responses", {"text": {"format": {"type": "json_schema", "name": "x"}}}, "json"),
        ("responses", {"text": {"format": {"type": "text"}}}, "text"),
        ("chat_completions", {}, None),
        ("responses", {"text": {"verbosity": "low"}}, None),
    ],
    ids=["chat-json-object", "chat-json-schema", "chat-text", "responses-json", "responses-text",
         "chat-no-format", "responses-no-format"],
)  # fmt: skip
def test_output_type_is_the_requested_format(
    api: str,
    extra: dict[str, object],
    expected: str | None,
    tracer_provider: TracerProvider,
    spans: InMemorySpanExporter,
) -> None:
    # GenAI inference span: gen_ai.output.type is conditionally required "when applicable and if
    # the request includes an output format"; json_object and json_schema are both `json`.
    request = {"model": "gpt-4o-mini", "stream": True, **extra}
    Call(Fanout([OtelTraceRecorder(tracer_provider)]), api=api, request=request).start().finish("ok")  # type: ignore[arg-type]
    assert dict(spans.get_finished_spans()[0].attributes or {}).get("gen_ai.output.type") == expected


@pytest.mark.parametrize("conversation", ["conv_123", {"id": "conv_123"}], ids=["id", "object"])
def test_responses_conversation_is_the_conversation_id(
    conversation: object, tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    # gen_ai.conversation.id is conditionally required "when available": the Responses API's
    # `conversation` parameter names the server-side conversation.
    request = {"model": "gpt-4.1", "input": "hi", "conversation": conversation}
    Call(
        Fanout([OtelTraceRecorder(tracer_provider)]), api="responses", model="gpt-4.1", request=request
    ).start().finish("ok")
    assert dict(spans.get_finished_spans()[0].attributes or {})["gen_ai.conversation.id"] == "conv_123"


SAID = [{"role": "assistant", "parts": [{"type": "text", "content": "hi there"}], "finish_reason": "stop"}]
CHAT_REQUEST = {
    "model": "gpt-4o-mini",
    "stream": True,
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
}


def test_content_capture_is_off_by_default(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    c = Call(Fanout([OtelTraceRecorder(tracer_provider)]), request=CHAT_REQUEST).start()
    c.finish("ok", output_messages=SAID, finish_reasons=["stop"])
    attrs = dict(spans.get_finished_spans()[0].attributes or {})
    assert "gen_ai.input.messages" not in attrs
    assert "gen_ai.output.messages" not in attrs
    assert "hello" not in json.dumps(attrs, default=str)


def test_content_capture_on_by_env(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    c = Call(Fanout([OtelTraceRecorder(tracer_provider)]), request=CHAT_REQUEST).start()
    c.finish("ok", output_messages=SAID, finish_reasons=["stop"])
    attrs = dict(spans.get_finished_spans()[0].attributes or {})
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hello"}]},
    ]
    assert json.loads(str(attrs["gen_ai.output.messages"])) == SAID


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("", ContentMode()),
        ("true", ContentMode(on=True)),
        (" Yes ", ContentMode(on=True)),
        ("SPAN_ONLY", ContentMode(on=True)),
        ("span_and_event", ContentMode(on=True, events=True)),
        ("EVENT_ONLY", ContentMode(on=True, spans=False, events=True)),
        ("NO_CONTENT", ContentMode()),
        ("false", ContentMode()),
    ],
)
def test_capture_env_takes_the_genai_content_modes(
    value: str, mode: ContentMode, caplog: pytest.LogCaptureFixture
) -> None:
    # The official GenAI instrumentations read the same variable as a content capturing mode
    # (NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT): one setting must mean the same to both.
    caplog.set_level("WARNING", "streamtap")
    assert content_mode({CAPTURE_ENV: value}) == mode
    assert capture_from_env({CAPTURE_ENV: value}) is mode.on
    assert caplog.messages == []


def test_an_unknown_capture_mode_is_warned_of_once_and_captures_nothing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_otel_content, "_warned", set())
    caplog.set_level("WARNING", "streamtap")
    assert content_mode({CAPTURE_ENV: "EVENTS"}) == ContentMode()
    assert capture_from_env({CAPTURE_ENV: "EVENTS"}) is False  # the engine, a recorder: no new word
    assert caplog.messages == [
        f"streamtap: {CAPTURE_ENV}=EVENTS is not one of true, false, NO_CONTENT, SPAN_ONLY, EVENT_ONLY "
        "or SPAN_AND_EVENT; content is not captured"
    ]


def test_event_only_keeps_content_off_spans_whatever_the_engine_says(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "EVENT_ONLY")
    c = Call(Fanout([OtelTraceRecorder(tracer_provider)]), request=CHAT_REQUEST, capture_content=True).start()
    c.finish("ok", output_messages=SAID, finish_reasons=["stop"])
    attrs = dict(spans.get_finished_spans()[0].attributes or {})
    assert "hello" not in json.dumps(attrs, default=str)
    assert "hi there" not in json.dumps(attrs, default=str)


def test_tool_calls_and_results_follow_the_message_schema(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    # gen-ai-input-messages.json: a ToolCallRequestPart's `arguments` is the object (not the JSON
    # string the API carries), a ToolCallResponsePart carries its value as `response`.
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
    }
    request = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rainy"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "9:00"}]},
        ],
    }
    Call(Fanout([OtelTraceRecorder(tracer_provider, capture_content=True)]), request=request).start().finish(
        "ok"
    )
    attrs = dict(spans.get_finished_spans()[0].attributes or {})
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "weather?"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy"}]},
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "call_2",
                    "response": [{"type": "text", "content": "9:00"}],
                }
            ],
        },
    ]


def test_responses_function_call_items_are_the_assistants_tool_calls(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    request = {
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "not json"},
            {"type": "function_call_output", "call_id": "call_1", "output": "rainy"},
        ],
    }
    Call(
        Fanout([OtelTraceRecorder(tracer_provider, capture_content=True)]), api="responses", request=request
    ).start().finish("ok")
    attrs = dict(spans.get_finished_spans()[0].attributes or {})
    assert json.loads(str(attrs["gen_ai.input.messages"]))[1:] == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_1", "name": "weather", "arguments": "not json"}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy"}]},
    ]


def test_an_agent_loops_replayed_output_is_the_assistants(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    """A Responses agent sends back the model's last output (reasoning, parallel tool calls) with
    the tools' results: the assistant's turn, one for both calls; screenshots by type alone."""
    screenshot = {"type": "computer_screenshot", "image_url": "data:image/png;base64," + "A" * 1000}
    request = {
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": "weather and time?"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Two tools."}]},
            {"type": "reasoning", "id": "rs_2", "summary": []},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "custom_tool_call", "call_id": "call_2", "name": "clock", "input": "CET"},
            {"type": "function_call_output", "call_id": "call_1", "output": "rainy"},
            {
                "type": "custom_tool_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "9:00"}],
            },
            {"type": "computer_call", "call_id": "call_3", "action": {"type": "screenshot"}},
            {"type": "computer_call_output", "call_id": "call_3", "output": screenshot},
        ],
    }
    Call(
        Fanout([OtelTraceRecorder(tracer_provider, capture_content=True)]), api="responses", request=request
    ).start().finish("ok")
    attrs = dict(spans.get_finished_spans()[0].attributes or {})
    assert json.loads(str(attrs["gen_ai.input.messages"]))[1:] == [
        {"role": "assistant", "parts": [{"type": "reasoning", "content": "Two tools."}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}},
                {"type": "tool_call", "id": "call_2", "name": "clock", "arguments": "CET"},
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy"}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_2",
                                    "response": [{"type": "text", "content": "9:00"}]}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_3", "name": "computer",
                                         "arguments": {"type": "screenshot"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_3",
                                    "response": {"type": "computer_screenshot"}}]},
    ]  # fmt: skip
    assert "AAAA" not in str(attrs["gen_ai.input.messages"])


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_the_tools_offered_are_captured(
    api: str, tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    weather = {"name": "weather", "description": "Weather now", "parameters": {"type": "object"}}
    function = (
        {"type": "function", "function": weather}
        if api == "chat_completions"
        else {"type": "function", **weather}
    )
    request = {"model": "gpt-4.1", "input": "hi", "tools": [function, {"type": "web_search"}]}
    for capture in (True, False):
        Call(
            Fanout([OtelTraceRecorder(tracer_provider, capture_content=capture)]), api=api, request=request
        ).start().finish("ok")
    captured, uncaptured = (dict(s.attributes or {}) for s in spans.get_finished_spans())
    assert json.loads(str(captured["gen_ai.tool.definitions"])) == [
        {
            "type": "function",
            "name": "weather",
            "description": "Weather now",
            "parameters": {"type": "object"},
        },
        {"type": "web_search", "name": "web_search"},
    ]
    assert "gen_ai.tool.definitions" not in uncaptured


def test_constructor_flag_beats_env(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    Call(
        Fanout([OtelTraceRecorder(tracer_provider, capture_content=False)]), request=CHAT_REQUEST
    ).start().finish("ok", output_messages=SAID)
    assert "gen_ai.input.messages" not in dict(spans.get_finished_spans()[0].attributes or {})


def test_responses_instructions_are_captured_separately(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    request = {
        "model": "gpt-4.1",
        "instructions": "talk like a pirate",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "ahoy"}, {"type": "input_image"}]},
        ],
    }
    Call(
        Fanout([OtelTraceRecorder(tracer_provider, capture_content=True)]), api="responses", request=request
    ).start().finish("ok")
    attrs = dict(spans.get_finished_spans()[0].attributes or {})
    assert json.loads(str(attrs["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "talk like a pirate"}
    ]
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "ahoy"}, {"type": "input_image"}]}
    ]


def test_no_key_or_query_string_reaches_any_span(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    url = "https://user:sk-secret@example.openai.azure.com:8443/openai/deployments/x/chat?api-key=sk-secret#f"
    c = Call(Fanout([OtelTraceRecorder(tracer_provider, capture_content=True)]), request=CHAT_REQUEST).start()
    c.attempt_fails("auth", status=401, retry=False, url=url)
    c.breaker("closed", "open", upstream="https://example.openai.azure.com?api-key=sk-secret")
    c.finish("error", error_type="auth")
    dumped = json.dumps(
        [
            [dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events]]
            for s in spans.get_finished_spans()
        ],
        default=str,
    )
    assert "sk-secret" not in dumped
    attempt = next(s for s in spans.get_finished_spans() if s.name == "POST")
    assert dict(attempt.attributes or {})["url.full"] == (
        "https://example.openai.azure.com:8443/openai/deployments/x/chat"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"tracer_provider": "global"},
            r"tracer_provider must be an OpenTelemetry TracerProvider or None .*got 'global'",
            id="provider",
        ),
        pytest.param(
            {"inject_traceparent": "false"},
            r"inject_traceparent must be True or False, got 'false'",
            id="inject",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    """Before: an AttributeError ('str' object has no attribute 'get_tracer'), and a string
    inject_traceparent was taken as true, "false" included."""
    with pytest.raises(TypeError, match=f"^OtelTraceRecorder {message}"):
        OtelTraceRecorder(**kwargs)  # type: ignore[arg-type]

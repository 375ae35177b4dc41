"""What content capture records of the answer, end to end: `gen_ai.output.messages` is what the
caller was given, whatever the answer held, whoever served it and however the call ended.

Answers the fake upstream does not give (tool calls, a refusal, reasoning) come from a loopback
server replaying them as OpenAI streams them; the real SDK reads them through either door.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

import streamtap
from streamtap._chat import CHAT
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap._responses import RESPONSES
from streamtap.fake import FakeUpstream

from . import loopback
from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES
from .telemetry_support import Telemetry, stream

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    return b"data: " + json.dumps({**chunk, "choices": [choice]}).encode() + b"\n\n"


def _call(index: int, args: str, id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id is not None:
        call.update(id=id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


# n=2: the first choice says a little and calls two tools, arguments in pieces; the second refuses.
CHAT_STREAM = b"".join(
    [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"role": "assistant", "content": None}, index=1),
        _chunk({"content": "Checking both."}),
        _chunk({"refusal": "No."}, index=1),
        _chunk(_call(0, '{"city"', "call_a", "weather")),
        _chunk(_call(0, ': "Paris"}')),
        _chunk(_call(1, '{"tz": "CET"}', "call_b", "time")),
        _chunk({}, "stop", index=1),
        _chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]
)


def _event(kind: str, sequence: int, **fields: Any) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": sequence, **fields})
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _responses_stream() -> bytes:
    base = {"id": "resp_1", "object": "response", "created_at": 0, "model": "gpt-4o", "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": []}  # fmt: skip
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Plan."}]}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Looking it up.", "annotations": []}]}  # fmt: skip
    call = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "weather",
            "arguments": '{"city": "Paris"}', "status": "completed"}  # fmt: skip
    done = {**base, "status": "completed", "output": [reasoning, message, call],
            "usage": {"input_tokens": 5, "output_tokens": 9, "total_tokens": 14}}  # fmt: skip
    return b"".join(
        [
            _event("response.created", 0, response={**base, "status": "in_progress", "output": []}),
            _event("response.output_item.added", 1, output_index=0, item={**reasoning, "summary": []}),
            _event("response.output_item.done", 2, output_index=0, item=reasoning),
            _event("response.output_item.added", 3, output_index=1, item={**message, "content": []}),
            _event(
                "response.output_text.delta",
                4,
                output_index=1,
                content_index=0,
                item_id="msg_1",
                delta="Looking it up.",
                logprobs=[],
            ),
            _event("response.output_item.done", 5, output_index=1, item=message),
            _event("response.output_item.added", 6, output_index=2, item={**call, "arguments": ""}),
            _event(
                "response.function_call_arguments.delta",
                7,
                output_index=2,
                item_id="fc_1",
                delta='{"city": "Paris"}',
            ),
            _event("response.output_item.done", 8, output_index=2, item=call),
            _event("response.completed", 9, response=done),
        ]
    )


STREAMS = {"chat": CHAT_STREAM, "responses": _responses_stream()}
# The parts of each message the answers above hold.
PARTS = {
    "chat": [["text", "tool_call", "tool_call"], ["text"]],
    "responses": [["reasoning", "text", "tool_call"]],  # a response is one generation: one message
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    class Replay(loopback.Handler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            body = STREAMS["responses" if self.path.endswith("/responses") else "chat"]
            assert request["stream"] is True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with loopback.serve(Replay) as url:
        yield f"{url}/v1"


def _capturing(telemetry: Telemetry, base_url: str, cls: Any = openai.OpenAI, **kwargs: Any) -> Any:
    """A client of `cls` instrumented with capture on, recording into `telemetry`."""
    kwargs.setdefault("policy", TEST_POLICY)
    client = cls(api_key="sk-test-e2e", base_url=base_url)
    return streamtap.instrument(client, recorders=telemetry.recorders, capture_content=True, **kwargs)


def _said(telemetry: Telemetry) -> Any:
    attrs = dict(telemetry.call_span().attributes or {})
    return json.loads(str(attrs["gen_ai.output.messages"]))


def _assembled(api: str, received: list[Any]) -> list[dict[str, Any]]:
    """The answer the caller's SDK put together from what it received, as output messages."""
    if api == "chat":
        state = ChatCompletionStreamState()
        for chunk in received:
            state.handle_chunk(chunk)
        return CHAT.answer_messages(state.get_final_completion().model_dump(mode="json"), "error")
    assert received[-1].type == "response.completed"
    return RESPONSES.answer_messages(received[-1].response.model_dump(mode="json"), "error")


def _check(telemetry: Telemetry, api: str, received: list[Any]) -> None:
    said = _said(telemetry)
    assert said == _assembled(api, received)
    assert [[part["type"] for part in message["parts"]] for message in said] == PARTS[api]


async def _read_async(client: openai.AsyncOpenAI, api: str) -> list[Any]:
    async with client:
        if api == "chat":
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=CHAT_MESSAGES, stream=True, n=2
            )
        else:
            stream = await client.responses.create(model="gpt-4o", input="weather?", stream=True)
        return [item async for item in stream]


def _read_sync(client: openai.OpenAI, api: str) -> list[Any]:
    with client:
        if api == "chat":
            return list(
                client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True, n=2)
            )
        return list(client.responses.create(model="gpt-4o", input="weather?", stream=True))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_every_choice_and_tool_call_is_captured(upstream: str, api: str, mode: str) -> None:
    telemetry = Telemetry()
    if mode == "sync":
        received = _read_sync(_capturing(telemetry, upstream), api)
    else:
        received = anyio.run(_read_async, _capturing(telemetry, upstream, openai.AsyncOpenAI), api)
    telemetry.shutdown()
    _check(telemetry, api, received)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_proxy_captures_them_too(upstream: str, api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    telemetry = Telemetry()
    config = ProxyConfig(upstream=upstream, listen="127.0.0.1:0", policy=TEST_POLICY)
    with ProxyServer(config, recorders=telemetry.recorders) as proxy:
        received = _read_sync(openai.OpenAI(api_key="sk-test", base_url=proxy.base_url), api)
    telemetry.shutdown()
    _check(telemetry, api, received)


def _text(received: list[str], finish: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "".join(received)}],
            "finish_reason": finish,
        }
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_fallbacks_answer_is_captured(fake: FakeUpstream, mode: str) -> None:
    fake.clear()
    fake.enqueue(*["status=503"] * TEST_POLICY.max_attempts, "")
    telemetry = Telemetry()
    cls = openai.AsyncOpenAI if mode == "async" else openai.OpenAI
    client = _capturing(telemetry, fake.base_url, cls, fallbacks=[streamtap.Fallback.model("gpt-4o-mini")])
    received, error = stream(client, "chat", mode)
    telemetry.shutdown()
    assert error is None
    assert "".join(received) == fake.expected_text(model="gpt-4o-mini", messages=CHAT_MESSAGES)
    assert _said(telemetry) == _text(received, "stop")


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_what_a_broken_stream_delivered_is_captured_as_an_error(fake: FakeUpstream, api: str) -> None:
    fake.clear()
    fake.enqueue("drop_after=3")
    telemetry = Telemetry()
    client = _capturing(telemetry, fake.base_url, policy=streamtap.Policy(max_attempts=1))
    received, error = stream(client, api, "sync")
    telemetry.shutdown()
    assert isinstance(error, streamtap.StreamInterrupted)
    assert len(received) == 3
    assert _said(telemetry) == _text(received, "error")


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "whole"])
def test_a_cached_answer_is_captured(fake: FakeUpstream, streamed: bool) -> None:
    """The cache serves the second call (the upstream down); capture records what it served."""
    fake.clear()
    telemetry = Telemetry()
    client = _capturing(telemetry, fake.base_url, fallbacks=[streamtap.Fallback.cached()])
    with client:
        first, error = stream(client, "chat", "sync")
        assert error is None
        fake.enqueue(*["status=503"] * TEST_POLICY.max_attempts)
        if streamed:
            second, error = stream(client, "chat", "sync")
            assert (error, "".join(second)) == (None, "".join(first))
        else:
            answer = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
            assert answer.choices[0].message.content == "".join(first)
    telemetry.shutdown()
    calls = [s for s in telemetry.finished_spans() if s.name == "chat gpt-4o"]
    assert [dict(s.attributes or {}).get("streamtap.fallback") for s in calls] == [None, "cache"]
    assert json.loads(str(dict(calls[1].attributes or {})["gen_ai.output.messages"])) == _text(first, "stop")


def test_a_stream_left_early_is_captured_as_far_as_it_was_read(fake: FakeUpstream) -> None:
    fake.clear()
    telemetry = Telemetry()
    client = _capturing(telemetry, fake.base_url)
    received: list[str] = []
    with client:
        stream_ = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
        for chunk in stream_:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                if len(received) == 2:
                    break
        stream_.close()
    telemetry.shutdown()
    assert telemetry.value("streamtap_requests_total", outcome="cancelled") == 1
    (said,) = _said(telemetry)
    assert said["finish_reason"] == "cancelled"
    # What was read, and perhaps what had already arrived with it in the same network read.
    assert said["parts"][0]["content"].startswith("".join(received))

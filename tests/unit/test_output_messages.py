"""The answer as the GenAI output messages (content capture): chat choices and Responses items,
whole JSON answers and streams, finished and cut short."""

from __future__ import annotations

import json
import random
from typing import Any

from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import Response

from streamtap._chat import CHAT
from streamtap._otel_content import input_messages, system_instructions, tool_definitions
from streamtap._output_messages import chat_messages, chat_stream_choices, responses_messages
from streamtap._responses import RESPONSES


def chat_chunk(*choices: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"logprobs": None, "finish_reason": None, **c} for c in choices],
    }


def frames(payloads: list[dict[str, Any]], *, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    return body + (b"data: [DONE]\n\n" if done else b"")


def tool_delta(
    index: int, *, id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id is not None:
        call.update(id=id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


# Two choices (n=2) interleaved: the first says a little, then calls two tools at once, their
# arguments split across chunks; the second refuses.
CHAT_STREAM = [
    chat_chunk({"index": 0, "delta": {"role": "assistant", "content": ""}}),
    chat_chunk({"index": 1, "delta": {"role": "assistant", "content": None}}),
    chat_chunk({"index": 0, "delta": {"content": "Checking "}}),
    chat_chunk({"index": 1, "delta": {"refusal": "I can't "}}),
    chat_chunk({"index": 0, "delta": {"content": "both."}}),
    chat_chunk({"index": 0, "delta": tool_delta(0, id="call_a", name="weather", args='{"city"')}),
    chat_chunk({"index": 1, "delta": {"refusal": "help with that."}}),
    chat_chunk({"index": 0, "delta": tool_delta(0, args=': "Paris"}')}),
    chat_chunk({"index": 0, "delta": tool_delta(1, id="call_b", name="time", args='{"tz": ')}),
    chat_chunk({"index": 0, "delta": tool_delta(1, args='"CET"}')}),
    chat_chunk({"index": 1, "delta": {}, "finish_reason": "stop"}),
    chat_chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
]

CHAT_SAID = [
    {
        "role": "assistant",
        "parts": [
            {"type": "text", "content": "Checking both."},
            {"type": "tool_call", "id": "call_a", "name": "weather", "arguments": {"city": "Paris"}},
            {"type": "tool_call", "id": "call_b", "name": "time", "arguments": {"tz": "CET"}},
        ],
        "finish_reason": "tool_call",
    },
    {
        "role": "assistant",
        "parts": [{"type": "text", "content": "I can't help with that."}],
        "finish_reason": "stop",
    },
]


def test_a_chat_stream_gives_every_choice_with_its_tool_calls_whole() -> None:
    assert CHAT.output_messages(frames(CHAT_STREAM), "error") == CHAT_SAID


def test_a_chat_stream_adds_up_as_the_sdk_adds_it_up() -> None:
    """The fold of the deltas is the completion the openai SDK's own stream helper builds."""
    state = ChatCompletionStreamState()
    for payload in CHAT_STREAM:
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    completion = state.get_final_completion().model_dump(mode="json")
    assert chat_messages(completion["choices"], "error") == CHAT_SAID
    folded = chat_stream_choices(c for p in CHAT_STREAM for c in p["choices"])
    assert chat_messages(folded, "error") == CHAT_SAID


def test_a_whole_chat_answer_gives_the_same_messages() -> None:
    body = {
        "choices": [
            {
                "index": 1,
                "message": {"role": "assistant", "content": None, "refusal": "No."},
                "finish_reason": "stop",
            },
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
            },
        ]
    }
    assert CHAT.answer_messages(body, "error") == [
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {}}],
         "finish_reason": "tool_call"},
        {"role": "assistant", "parts": [{"type": "text", "content": "No."}], "finish_reason": "stop"},
    ]  # fmt: skip


def test_chat_arguments_that_are_not_json_stay_as_sent_and_legacy_function_calls_count() -> None:
    stream = [
        chat_chunk(
            {"index": 0, "delta": {"role": "assistant", "function_call": {"name": "f", "arguments": "not"}}}
        ),
        chat_chunk({"index": 0, "delta": {"function_call": {"arguments": " json"}}}),
        chat_chunk({"index": 0, "delta": {}, "finish_reason": "function_call"}),
    ]
    assert CHAT.output_messages(frames(stream), "error") == [
        {"role": "assistant", "parts": [{"type": "tool_call", "id": None, "name": "f", "arguments": "not json"}],
         "finish_reason": "tool_call"},
    ]  # fmt: skip


def test_a_chat_stream_cut_short_gives_what_came_with_the_calls_outcome() -> None:
    cut = frames(CHAT_STREAM[:8], done=False)
    assert CHAT.output_messages(cut, "cancelled") == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Checking both."},
                {"type": "tool_call", "id": "call_a", "name": "weather", "arguments": {"city": "Paris"}},
            ],
            "finish_reason": "cancelled",
        },
        {"role": "assistant", "parts": [{"type": "text", "content": "I can't help with that."}],
         "finish_reason": "cancelled"},
    ]  # fmt: skip
    half_arguments = frames(CHAT_STREAM[:6], done=False)
    (first, _) = CHAT.output_messages(half_arguments, "error")
    assert first["parts"][-1] == {
        "type": "tool_call",
        "id": "call_a",
        "name": "weather",
        "arguments": '{"city"',
    }


def test_a_chat_reasoning_delta_is_a_reasoning_part() -> None:
    stream = [
        chat_chunk({"index": 0, "delta": {"role": "assistant", "reasoning_content": "Think."}}),
        chat_chunk({"index": 0, "delta": {"content": "Yes."}, "finish_reason": "stop"}),
    ]
    (said,) = CHAT.output_messages(frames(stream), "error")
    assert said["parts"] == [{"type": "reasoning", "content": "Think."}, {"type": "text", "content": "Yes."}]


# -- responses --------------------------------------------------------------------------------

REASONING = {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Plan."}]}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Looking it up.", "annotations": []}],
}
CALL = {
    "id": "fc_1",
    "type": "function_call",
    "call_id": "call_1",
    "name": "weather",
    "arguments": '{"city": "Paris"}',
    "status": "completed",
}
IMAGE = {"id": "ig_1", "type": "image_generation_call", "status": "completed", "result": "aGVsbG8=" * 1000}


def response(*output: dict[str, Any], status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "gpt-4o",
        "status": status,
        "output": list(output),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        **extra,
    }


RESPONSES_SAID = [
    {
        "role": "assistant",
        "parts": [
            {"type": "reasoning", "content": "Plan."},
            {"type": "text", "content": "Looking it up."},
            {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}},
        ],
        "finish_reason": "tool_call",
    },
]


def test_a_response_is_one_message_of_its_items_in_order() -> None:
    # One generation, one message: "one choice cannot be split across multiple messages".
    body = response(REASONING, MESSAGE, CALL)
    Response.model_validate(body)  # the SDK's own shape
    assert RESPONSES.answer_messages(body, "error") == RESPONSES_SAID
    assert [m["finish_reason"] for m in responses_messages(response(REASONING, MESSAGE), "error")] == ["stop"]


def test_a_built_in_tool_is_a_server_tool_call_without_its_image() -> None:
    (said,) = responses_messages(response(IMAGE), "error")
    assert said == {
        "role": "assistant",
        "parts": [
            {"type": "server_tool_call", "id": "ig_1", "name": "image_generation",
             "server_tool_call": {"type": "image_generation"}},
        ],
        "finish_reason": "stop",
    }  # fmt: skip


def test_an_incomplete_response_says_why() -> None:
    cut = {**MESSAGE, "status": "incomplete"}
    body = response(cut, status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    assert [m["finish_reason"] for m in responses_messages(body, "error")] == ["length"]
    body = response(cut, status="incomplete", incomplete_details={"reason": "content_filter"})
    assert [m["finish_reason"] for m in responses_messages(body, "error")] == ["content_filter"]


def event(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def streamed(*, finished: bool) -> bytes:
    """A response streamed as the API streams it; without its end when not `finished`."""
    adding = {**MESSAGE, "status": "in_progress", "content": []}
    calling = {**CALL, "status": "in_progress", "arguments": ""}
    events = [
        event("response.created", response=response(status="in_progress")),
        event("response.output_item.added", output_index=0, item={**REASONING, "summary": []}),
        event("response.reasoning_summary_text.delta", output_index=0, summary_index=0, delta="Plan."),
        event("response.output_item.done", output_index=0, item=REASONING),
        event("response.output_item.added", output_index=1, item=adding),
        event("response.output_text.delta", output_index=1, content_index=0, delta="Looking "),
        event("response.output_text.delta", output_index=1, content_index=0, delta="it up."),
        event("response.output_item.done", output_index=1, item=MESSAGE),
        event("response.output_item.added", output_index=2, item=calling),
        event("response.function_call_arguments.delta", output_index=2, delta='{"city": '),
    ]
    if finished:
        events += [
            event("response.function_call_arguments.delta", output_index=2, delta='"Paris"}'),
            event("response.output_item.done", output_index=2, item=CALL),
            event("response.completed", response=response(REASONING, MESSAGE, CALL)),
        ]
    return b"".join(events)


def test_a_responses_stream_gives_its_terminal_response() -> None:
    assert RESPONSES.output_messages(streamed(finished=True), "error") == RESPONSES_SAID


def test_a_responses_stream_cut_short_gives_its_items_as_far_as_they_came() -> None:
    assert RESPONSES.output_messages(streamed(finished=False), "error") == [
        {"role": "assistant", "parts": [
            {"type": "reasoning", "content": "Plan."},
            {"type": "text", "content": "Looking it up."},
            {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": '{"city": '},
        ], "finish_reason": "error"},
    ]  # fmt: skip


def test_a_message_cut_mid_text_keeps_its_text() -> None:
    cut = event(
        "response.output_item.added", output_index=0, item={**MESSAGE, "status": "in_progress", "content": []}
    )
    cut += event("response.output_text.delta", output_index=0, content_index=0, delta="Look")
    assert RESPONSES.output_messages(cut, "abandoned") == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Look"}], "finish_reason": "abandoned"}
    ]


# -- whatever an upstream sends ---------------------------------------------------------------

ODD = [None, 0, 1, -1, True, "", "x", "tool_calls", [], {}, [1], ["x"], [{}], {"a": 1}, [None], 1.5]
CHAT_KEYS = ["index", "delta", "message", "finish_reason", "content", "refusal", "reasoning_content",
             "tool_calls", "function_call", "function", "name", "arguments", "id"]  # fmt: skip
RESPONSES_KEYS = ["type", "output_index", "item", "delta", "response", "output", "status", "content",
                  "summary", "text", "refusal", "call_id", "arguments", "input", "incomplete_details"]  # fmt: skip
RESPONSES_TYPES = ["response.output_item.added", "response.output_item.done", "response.output_text.delta",
                   "response.refusal.delta", "response.reasoning_summary_text.delta",
                   "response.function_call_arguments.delta", "response.custom_tool_call_input.delta",
                   "response.completed", "response.failed", "message", "reasoning", "function_call",
                   "custom_tool_call", "computer_call", "web_search_call", "output_text", "refusal"]  # fmt: skip


def _odd(rng: random.Random, keys: list[str], types: list[str], depth: int = 0) -> Any:
    """A JSON value made of the keys and type names an answer uses, in shapes it never has."""
    roll = rng.random()
    if depth > 3 or roll < 0.35:
        return rng.choice(ODD + types)
    if roll < 0.55:
        return [_odd(rng, keys, types, depth + 1) for _ in range(rng.randrange(3))]
    value = {key: _odd(rng, keys, types, depth + 1) for key in rng.sample(keys, rng.randrange(1, 5))}
    if types and rng.random() < 0.5:
        value["type"] = rng.choice(types)
    return value


def _well_formed(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        assert message["role"] == "assistant"
        assert isinstance(message["finish_reason"], str)
        assert all(isinstance(part, dict) and isinstance(part["type"], str) for part in message["parts"])
    json.dumps(messages, default=str)


def test_no_stream_or_answer_makes_them_raise() -> None:
    """Content capture runs as the call finishes: an upstream's odd JSON must not fail it."""
    rng = random.Random(20261123)
    for _ in range(3000):
        chat = [_odd(rng, CHAT_KEYS, []) for _ in range(rng.randrange(6))]
        chunks = frames([{"choices": choices} for choices in chat], done=False)
        _well_formed(CHAT.output_messages(chunks, "error"))
        _well_formed(CHAT.answer_messages({"choices": chat}, "error"))
        # What the answer caches keep and a StreamInterrupted carries are read as it finishes too.
        CHAT.cacheable_text(chunks), CHAT.cacheable_answer({"choices": chat}), CHAT.text(chunks)
        events = [_odd(rng, RESPONSES_KEYS, RESPONSES_TYPES) for _ in range(rng.randrange(8))]
        stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        _well_formed(RESPONSES.output_messages(stream, "error"))
        answer = _odd(rng, RESPONSES_KEYS, RESPONSES_TYPES)
        answer = answer if isinstance(answer, dict) else {"output": answer}
        _well_formed(RESPONSES.answer_messages(answer, "error"))
        RESPONSES.cacheable_text(stream), RESPONSES.cacheable_answer(answer), RESPONSES.text(stream)


def test_no_request_makes_the_input_side_raise() -> None:
    """The input messages and tools are read as the call span starts: an odd request must not
    cost the call its span."""
    rng = random.Random(20261124)
    keys = ["messages", "input", "role", "content", "tool_calls", "tool_call_id", "function", "name", "arguments",
            "call_id", "output", "type", "text", "summary", "tools", "parameters", "instructions"]  # fmt: skip
    types = ["function", "function_call", "function_call_output", "computer_call_output", "reasoning",
             "custom_tool_call", "input_text", "input_image", "message", "web_search"]  # fmt: skip
    for _ in range(3000):
        request = {key: _odd(rng, keys, types) for key in ("messages", "input", "tools", "instructions")}
        request = {key: value for key, value in request.items() if rng.random() < 0.6}
        json.dumps(input_messages(request), default=str)
        json.dumps(tool_definitions(request), default=str)
        json.dumps(system_instructions(request), default=str)


def test_a_whole_answer_is_either_refused_or_made_a_stream() -> None:
    """A non-streaming fallback's answer, made a stream for a streaming caller: an answer not in
    the API's shape is refused by `unfinished` (then `bad_response`), never a crash."""
    rng = random.Random(20261125)
    for _ in range(3000):
        for dialect, keys, types in ((CHAT, CHAT_KEYS, []), (RESPONSES, RESPONSES_KEYS, RESPONSES_TYPES)):
            body = _odd(rng, keys, types)
            body = body if isinstance(body, dict) else {"choices": body, "output": body}
            if rng.random() < 0.5:
                body["status"] = rng.choice(["completed", "incomplete", "failed", "queued", 1])
            if dialect.unfinished(body) is None:
                stream = dialect.from_json(body, {})
                assert stream.endswith(b"\n\n")

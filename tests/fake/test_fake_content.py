"""Deterministic content and payload shapes, validated with the SDK's own pydantic types."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from streamtap.fake import expected_text, parse_fault
from streamtap.fake._content import DONE, chat_completion, chat_frames, generate_pieces
from streamtap.fake._errors import status_body, status_headers
from streamtap.fake._responses import ResponseSeed, failed_response, response_frames

MESSAGES = [{"role": "user", "content": "Say something"}]
EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def data_of(frame: bytes) -> Any:
    lines = frame.decode().strip().split("\n")
    return json.loads(lines[-1].removeprefix("data: "))


def test_pieces_are_deterministic_and_sized() -> None:
    pieces = generate_pieces("gpt-4o", MESSAGES, 7)
    assert pieces == generate_pieces("gpt-4o", [{"content": "Say something", "role": "user"}], 7)
    assert len(pieces) == 7
    assert pieces[0][0].isupper()
    assert all(piece.startswith(" ") for piece in pieces[1:])
    assert "".join(pieces) == expected_text("gpt-4o", MESSAGES, 7)
    assert pieces != generate_pieces("gpt-4o-mini", MESSAGES, 7)
    assert pieces != generate_pieces("gpt-4o", [{"role": "user", "content": "other"}], 7)
    assert generate_pieces("gpt-4o", MESSAGES, 0) == []


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage", "usage"])
def test_chat_frames_parse_as_sdk_chunks(include_usage: bool) -> None:
    frames = chat_frames(
        completion_id="chatcmpl-1",
        created=5,
        model="gpt-4o",
        prompt=MESSAGES,
        chunks=4,
        include_usage=include_usage,
    )
    assert [frame.kind for frame in frames] == [
        "pre",
        *["content"] * 4,
        "post",
        *["post"] * include_usage,
        "post",
    ]
    assert frames[-1].data == DONE
    chunks = [ChatCompletionChunk.model_validate(data_of(frame.data)) for frame in frames[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_text(
        "gpt-4o", MESSAGES, 4
    )
    assert chunks[5].choices[0].finish_reason == "stop"
    raw = [data_of(frame.data) for frame in frames[:-1]]
    if include_usage:
        assert all(item["usage"] is None for item in raw[:-1])
        assert raw[-1]["choices"] == []
        assert chunks[-1].usage is not None
        assert (chunks[-1].usage.completion_tokens, chunks[-1].usage.prompt_tokens) == (4, 10)
    else:
        assert all("usage" not in item for item in raw)


def test_chat_completion_parses() -> None:
    completion = ChatCompletion.model_validate(
        chat_completion(completion_id="chatcmpl-1", created=5, model="gpt-4o", prompt=MESSAGES, chunks=3)
    )
    assert completion.choices[0].message.content == expected_text("gpt-4o", MESSAGES, 3)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


SEED = ResponseSeed("resp_1", "msg_1", 5, "gpt-4o", "Hi", 3, background=True)


def test_response_frames_parse_as_sdk_events() -> None:
    frames = response_frames(SEED)
    events = [EVENTS.validate_python(data_of(frame.data)) for frame in frames]
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(11))
    assert [frame.sequence_number for frame in frames] == list(range(11))
    assert [frame.data.split(b"\n")[0] for frame in frames] == [f"event: {e.type}".encode() for e in events]
    completed = events[-1].response
    assert (completed.status, completed.output_text, completed.usage.output_tokens) == (
        "completed",
        expected_text("gpt-4o", "Hi", 3),
        3,
    )
    assert events[0].response.status == "in_progress"


def test_failed_response_parses() -> None:
    failed = Response.model_validate(failed_response(SEED, "server_error", "boom"))
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == ("server_error", "boom")


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (400, "invalid_request_error", "invalid_value"),
        (401, "invalid_request_error", "invalid_api_key"),
        (404, "invalid_request_error", "model_not_found"),
        (429, "requests", "rate_limit_exceeded"),
        (500, "server_error", None),
        (503, "server_error", None),
    ],
)
def test_status_bodies(status: int, type_: str, code: str | None) -> None:
    error = status_body(status)["error"]
    assert (error["type"], error["code"], error["param"]) == (type_, code, None)
    assert error["message"]
    assert status_body(status, "custom")["error"]["code"] == "custom"


def test_status_headers() -> None:
    fault = parse_fault("status=429;retry_after=2;retry_after_ms=1500;retry_after_date=30;should_retry=true")
    assert status_headers(fault, 1_700_000_000.0) == [
        ("retry-after", "2"),
        ("retry-after-ms", "1500"),
        ("retry-after", "Tue, 14 Nov 2023 22:13:50 GMT"),
        ("x-should-retry", "true"),
    ]
    assert status_headers(parse_fault("status=429;retry_after=0.5"), 0.0) == [("retry-after", "0.5")]
    assert status_headers(parse_fault("status=503;should_retry=false"), 0.0) == [("x-should-retry", "false")]

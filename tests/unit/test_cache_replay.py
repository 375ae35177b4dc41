"""What a cached answer replays, through the SDK: only answers its text replays whole are kept.

The fake upstream answers neither `length` nor tool calls, so this upstream is an in-memory
one: it streams a chosen answer, or fails with 503 to send the call to the cache.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

import streamtap

_TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
_TOOL_CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class _Upstream:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.down = False

    def answer(self, request: httpx2.Request) -> httpx2.Response:
        if self.down:
            return httpx2.Response(503, json={"error": {"message": "down", "type": "server_error"}})
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"".join(self.frames)
        )


def _client(upstream: _Upstream) -> Any:
    raw = openai.OpenAI(
        api_key="sk-x",
        base_url="http://upstream.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(upstream.answer)),
        max_retries=0,
    )
    return streamtap.instrument(
        raw, policy=streamtap.Policy(max_attempts=1), fallbacks=[streamtap.Fallback.cached()], recorders=[]
    )


def _read(client: Any, **kwargs: Any) -> list[tuple[str, bool, str | None]]:
    """(content, has tool calls, finish reason) of every chunk."""
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "q"}], stream=True, **kwargs
    )
    with stream:
        return [
            (
                c.choices[0].delta.content or "",
                bool(c.choices[0].delta.tool_calls),
                c.choices[0].finish_reason,
            )
            for c in stream
            if c.choices
        ]


def test_a_stopped_text_answer_is_replayed() -> None:
    upstream = _Upstream()
    upstream.frames = [
        _frame({"role": "assistant", "content": ""}),
        _frame({"content": "all of it"}),
        _frame({}, "stop"),
        b"data: [DONE]\n\n",
    ]
    client = _client(upstream)
    _read(client)
    upstream.down = True
    replay = _read(client)
    assert ("".join(c for c, _, _ in replay), replay[-1][2]) == ("all of it", "stop")


@pytest.mark.parametrize(
    ("frames", "kwargs"),
    [
        pytest.param(
            [
                _frame({"role": "assistant", "content": ""}),
                _frame({"content": "cut sho"}),
                _frame({}, "length"),
            ],
            {"max_tokens": 3},
            id="length",
        ),
        pytest.param(
            [
                _frame({"role": "assistant", "content": ""}),
                _frame({"content": "Let me call f"}),
                _frame({"tool_calls": [_TOOL_CALL]}),
                _frame({}, "tool_calls"),
            ],
            {"tools": _TOOLS},
            id="tool-call",
        ),
    ],
)
def test_an_answer_a_replay_would_change_is_not_replayed(frames: list[bytes], kwargs: dict[str, Any]) -> None:
    """Never a truncated answer replayed as a complete `stop`, nor a tool call that vanished."""
    upstream = _Upstream()
    upstream.frames = [*frames, b"data: [DONE]\n\n"]
    client = _client(upstream)
    first = _read(client, **kwargs)
    assert first[-1][2] in ("length", "tool_calls")
    upstream.down = True
    with pytest.raises(openai.InternalServerError):
        _read(client, **kwargs)

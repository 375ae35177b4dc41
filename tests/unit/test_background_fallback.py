"""A streamed `background=True` response served by the non-streaming fallback, through the SDK.

OpenAI answers a non-streamed background request at once with a queued response and no
output; the fake upstream answers every response finished, so this upstream is an in-memory
one that answers as OpenAI does.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

import streamtap

from .finished import Finished

_ANSWER = "a finished essay"


class _OpenAILike:
    """Streams fail (503); a non-streamed request is answered queued when it asks for
    `background` (or always, with `always_queued`), else finished."""

    def __init__(self, *, always_queued: bool = False) -> None:
        self.always_queued = always_queued
        self.bodies: list[dict[str, Any]] = []

    def answer(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if body.get("stream"):
            return httpx2.Response(503, json={"error": {"message": "overloaded", "type": "server_error"}})
        queued = self.always_queued or bool(body.get("background"))
        output = [] if queued else [_message(_ANSWER)]
        return httpx2.Response(
            200,
            json={
                "id": "resp_1",
                "object": "response",
                "created_at": 1,
                "model": "gpt-4o",
                "status": "queued" if queued else "completed",
                "background": bool(body.get("background")),
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
            },
        )


def _message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _client(upstream: _OpenAILike, finished: Finished) -> Any:
    raw = openai.OpenAI(
        api_key="sk-x",
        base_url="http://upstream.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(upstream.answer)),
    )
    return streamtap.instrument(
        raw,
        policy=streamtap.Policy(max_attempts=1),
        fallbacks=[streamtap.Fallback.non_streaming()],
        recorders=[finished],
    )


def test_the_non_streaming_fallback_asks_for_the_finished_answer() -> None:
    upstream, finished = _OpenAILike(), Finished()
    client = _client(upstream, finished)
    stream = client.responses.create(model="gpt-4o", input="write an essay", stream=True, background=True)
    with stream:
        events = list(stream)
    assert [body.get("background") for body in upstream.bodies] == [True, None]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == _ANSWER
    assert (finished.calls[0].outcome, finished.calls[0].fallback) == ("ok", "non_streaming")


class _Attempts(Finished):
    """Keeps the AttemptFinished of every attempt too."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[streamtap.AttemptFinished] = []

    def on_event(self, event: Any) -> None:
        super().on_event(event)
        if isinstance(event, streamtap.AttemptFinished):
            self.attempts.append(event)


def test_an_unfinished_non_streamed_answer_is_a_bad_response() -> None:
    """Never an empty `response.completed`: the SDK would call it a finished, empty answer. The
    fallback fails, and the caller gets what its own route met."""
    upstream, finished = _OpenAILike(always_queued=True), _Attempts()
    client = _client(upstream, finished)
    with pytest.raises(openai.InternalServerError):
        list(client.responses.create(model="gpt-4o", input="write an essay", stream=True))
    assert finished.attempts[-1].error_type == "bad_response"
    assert (finished.calls[0].outcome, finished.calls[0].error_type) == ("error", "server_error")

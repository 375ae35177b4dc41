"""A whole (non-streamed) answer whose body trickles in is cut at the call's total_timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import openai
import pytest

import streamtap
from streamtap import AttemptFinished

from . import loopback
from .support import CHAT_MESSAGES, Recording

ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi " * 80}, "finish_reason": "stop"}
        ],
    }
).encode()
PIECES = 20
GAP = 0.15  # the whole body takes 3 s; each piece comes well within any read timeout


class Trickle(loopback.Handler):
    """Streamed requests get a 503; others their answer's headers at once, then its body in pieces."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body.get("stream"):
            error = b'{"error":{"message":"overloaded","type":"server_error","code":null,"param":null}}'
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ANSWER)))
        self.end_headers()
        step = len(ANSWER) // PIECES + 1
        try:
            for start in range(0, len(ANSWER), step):
                self.wfile.write(ANSWER[start : start + step])
                self.wfile.flush()
                time.sleep(GAP)
        except OSError:
            pass  # the client left at its deadline


def _client(url: str, recording: Recording, is_async: bool) -> tuple[object, float]:
    total = 0.6
    policy = streamtap.Policy(max_attempts=1, total_timeout=total)
    raw = (openai.AsyncOpenAI if is_async else openai.OpenAI)(
        base_url=url + "/v1", api_key="sk-x", max_retries=0
    )
    kwargs = {"policy": policy, "fallbacks": [streamtap.Fallback.non_streaming()], "recorders": [recording]}
    return streamtap.instrument(raw, **kwargs), total


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "non_streaming-fallback"])
def test_a_trickling_whole_answer_is_cut_at_the_total_timeout(is_async: bool, stream: bool) -> None:
    recording = Recording()
    with loopback.serve(Trickle) as url:
        client, total = _client(url, recording, is_async)

        async def call_async() -> None:
            created = await client.chat.completions.create(  # type: ignore[attr-defined]
                model="gpt-4o", messages=CHAT_MESSAGES, stream=stream
            )
            if stream:
                async for _ in created:
                    pass

        def call() -> None:
            if is_async:
                asyncio.run(call_async())
                return
            created = client.chat.completions.create(  # type: ignore[attr-defined]
                model="gpt-4o", messages=CHAT_MESSAGES, stream=stream
            )
            if stream:
                for _ in created:
                    pass

        started = time.monotonic()
        with pytest.raises(openai.APIError):
            call()
        took = time.monotonic() - started
    # Cut at the deadline (one read's slack), not at the body's end 3 s in.
    assert took < total + 0.5, took
    assert recording.of(AttemptFinished)[-1].error_type == "timeout", recording.attempts()
    # A fallback's failure is its own: the streaming call keeps its own route's 503.
    assert recording.finished.error_type == ("server_error" if stream else "timeout")


class StallsItsJson(loopback.Handler):
    """A stream request answered whole, as JSON, whose body stalls after its headers."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER[:100])
        self.wfile.flush()
        time.sleep(3.0)
        with contextlib.suppress(OSError):
            self.wfile.write(ANSWER[100:])


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_total_timeout_adds_a_bound_and_takes_none_away(is_async: bool) -> None:
    # A stream answered whole keeps its first-token bound on each read of its body with a
    # total_timeout too (its first bytes came in time, the rest stalls).
    policy = streamtap.Policy(max_attempts=1, first_token_timeout=0.5, idle_timeout=0.5, total_timeout=30)
    recording = Recording()
    with loopback.serve(StallsItsJson) as url:
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        client = streamtap.instrument(
            cls(base_url=url + "/v1", api_key="sk-x", max_retries=0), policy=policy, recorders=[recording]
        )

        async def call_async() -> None:
            await client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)  # type: ignore[misc]

        def call() -> None:
            if is_async:
                asyncio.run(call_async())
            else:
                client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)

        started = time.monotonic()
        with pytest.raises(openai.APIError):
            call()
        took = time.monotonic() - started
    assert took < 2.0, took


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_callers_own_timeout_on_a_whole_answers_body_is_the_sdks_timeout_error(is_async: bool) -> None:
    # `except openai.APITimeoutError` catches it, as it catches the plain SDK's for the same body.
    recording = Recording()
    policy = streamtap.Policy(max_attempts=1)
    with loopback.serve(StallsItsJson) as url:
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        raw = cls(base_url=url + "/v1", api_key="sk-x", max_retries=0, timeout=0.5)
        client = streamtap.instrument(raw, policy=policy, recorders=[recording])

        async def call_async() -> None:
            await client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)  # type: ignore[misc]

        def call() -> None:
            if is_async:
                asyncio.run(call_async())
            else:
                client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)

        with pytest.raises(openai.APITimeoutError) as raised:
            call()
    assert isinstance(raised.value, streamtap.StreamTimedOut)
    assert recording.finished.error_type == "timeout"

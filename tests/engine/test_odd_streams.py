"""Streams no server should send, sent anyway: streamtap raises nothing the plain SDK would not.

A loopback upstream answers each request with a stream drawn at random (seeded) from the
events an answer is made of, in shapes the API never has: choices that are not a list, deltas
that are numbers, output items without a type. The real openai SDK reads each one twice, plain
and through `streamtap.instrument` with content capture on. Whatever the plain SDK does,
streamtap may turn into an `openai.APIError` (a `bad_response`, a `StreamInterrupted`); it must
never raise anything else that the plain SDK did not.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import openai
import pytest

import streamtap

from . import loopback

ROUNDS = 200
ODD = [None, 0, 1, True, "", "x", [], {}, [1], {"a": 1}, "stop", "tool_calls", "assistant"]
CHAT_KEYS = ["id", "object", "created", "model", "choices", "index", "delta", "content", "role", "finish_reason",
             "usage", "error", "tool_calls", "function", "arguments", "name", "refusal", "message", "code", "type"]  # fmt: skip
RESPONSES_TYPES = ["response.created", "response.in_progress", "response.output_item.added",
                   "response.output_text.delta", "response.output_item.done", "response.completed",
                   "response.failed", "response.incomplete", "error"]  # fmt: skip
RESPONSES_KEYS = ["type", "response", "output_index", "item", "delta", "status", "output", "usage", "id",
                  "content", "text", "error", "code", "message", "incomplete_details"]  # fmt: skip
CONTENT = {
    "id": "c",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}


def _odd(rng: random.Random, keys: list[str], depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.35:
        return copy.deepcopy(rng.choice(ODD))
    if roll < 0.5:
        return [_odd(rng, keys, depth + 1) for _ in range(rng.randrange(3))]
    return {key: _odd(rng, keys, depth + 1) for key in rng.sample(keys, rng.randrange(1, 5))}


def _chat(rng: random.Random) -> bytes:
    frames = []
    for _ in range(rng.randrange(1, 7)):
        roll = rng.random()
        if roll < 0.2:
            frames.append(b"data: [DONE]\n\n")
        else:
            payload = CONTENT if roll < 0.55 else _odd(rng, CHAT_KEYS)
            frames.append(b"data: " + json.dumps(payload).encode() + b"\n\n")
    return b"".join(frames)


def _responses(rng: random.Random) -> bytes:
    frames = []
    for number in range(rng.randrange(1, 7)):
        payload = _odd(rng, RESPONSES_KEYS)
        payload = payload if isinstance(payload, dict) else {"x": payload}
        payload.update(type=rng.choice(RESPONSES_TYPES), sequence_number=number)
        if rng.random() < 0.5:
            status = rng.choice(["completed", "in_progress", "incomplete"])
            payload["response"] = {"id": "r", "status": status, "output": _odd(rng, RESPONSES_KEYS)}
        frames.append(f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode())
    return b"".join(frames)


class _Body:
    """The stream the upstream sends next."""

    data = b""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    class Replay(loopback.Handler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(_Body.data)))
            self.end_headers()
            self.wfile.write(_Body.data)

    with loopback.serve(Replay) as url:
        yield f"{url}/v1"


def _read(client: openai.OpenAI, api: str) -> BaseException | None:
    try:
        if api == "chat":
            messages = [{"role": "user", "content": "x"}]
            list(client.chat.completions.create(model="m", messages=messages, stream=True))  # type: ignore[arg-type]
        else:
            list(client.responses.create(model="m", input="x", stream=True))
    except Exception as error:
        return error
    return None


def test_streamtap_raises_nothing_the_sdk_would_not(upstream: str) -> None:
    rng = random.Random(20261123)
    plain = openai.OpenAI(api_key="sk-test", base_url=upstream, max_retries=0)
    wrapped = streamtap.instrument(
        openai.OpenAI(api_key="sk-test", base_url=upstream, max_retries=0),
        recorders=[],
        policy=streamtap.Policy(max_attempts=1),
        capture_content=True,
    )
    raised: list[str] = []
    with plain, wrapped:
        for _ in range(ROUNDS):
            api = rng.choice(["chat", "responses"])
            _Body.data = _chat(rng) if api == "chat" else _responses(rng)
            expected, got = _read(plain, api), _read(wrapped, api)
            if got is None or isinstance(got, openai.APIError):
                continue
            if expected is None or type(expected) is not type(got):
                raised.append(f"{got!r} where the SDK gave {expected!r}, for {_Body.data!r}")
    assert raised == []

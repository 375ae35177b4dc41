"""In-memory upstreams for the benchmarks: prebuilt SSE bodies, one network chunk per event.

The bodies imitate what OpenAI sends (field order, ids, fingerprints, `obfuscation`), so the
SDK parses the same amount of JSON per chunk as against the real API; nothing touches a socket.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2

CHUNKS = 500  # content deltas per stream
MODEL = "gpt-4o-mini-2024-07-18"
CREATED = 1767225600
_WORDS = ("stream", " of", " tokens", " that", " the", " model", " writes", " one", " piece", " at")


def _sse(payload: object, event: str | None = None) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def _word(i: int) -> str:
    return _WORDS[i % len(_WORDS)]


def chat_events(chunks: int = CHUNKS) -> list[bytes]:
    """Role chunk, `chunks` content chunks, finish chunk, usage chunk, [DONE]."""
    base = {
        "id": "chatcmpl-CUbench0123456789abcdefghijk",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_560af6e559",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, obfuscation: str = "k3Rq") -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        # With stream_options.include_usage, OpenAI sends "usage": null on every chunk but the last.
        return _sse({**base, "choices": [choice], "usage": None, "obfuscation": obfuscation})

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": _word(i)}) for i in range(chunks)]
    events.append(chunk({}, "stop"))
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": chunks,
        "total_tokens": 12 + chunks,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    events.append(_sse({**base, "choices": [], "usage": usage, "obfuscation": "x"}))
    events.append(b"data: [DONE]\n\n")
    return events


def _response(status: str, text: str | None, chunks: int) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    usage = None
    if text is not None:
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        output = [
            {
                "id": "msg_68bench0123456789abcdef",
                "type": "message",
                "status": "completed",
                "content": [part],
                "role": "assistant",
            }
        ]
        usage = {
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": chunks,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 12 + chunks,
        }
    return {
        "id": "resp_68bench0123456789abcdef",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": MODEL,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def responses_events(chunks: int = CHUNKS) -> list[bytes]:
    """response.created … `chunks` output_text deltas … response.completed."""
    seq = iter(range(10_000))
    item = {
        "id": "msg_68bench0123456789abcdef",
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    text = "".join(_word(i) for i in range(chunks))

    def event(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    events = [
        event("response.created", response=_response("in_progress", None, chunks)),
        event("response.in_progress", response=_response("in_progress", None, chunks)),
        event("response.output_item.added", output_index=0, item=item),
        event("response.content_part.added", **where, part=empty),
    ]
    events += [
        event("response.output_text.delta", **where, delta=_word(i), logprobs=[], obfuscation="k3Rq")
        for i in range(chunks)
    ]
    done_part = {**empty, "text": text}
    events += [
        event("response.output_text.done", **where, text=text, logprobs=[]),
        event("response.content_part.done", **where, part=done_part),
        event(
            "response.output_item.done",
            output_index=0,
            item={**item, "status": "completed", "content": [done_part]},
        ),
        event("response.completed", response=_response("completed", text, chunks)),
    ]
    return events


class _Body(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """Yields the prebuilt events one by one: one network read per SSE event.

    Like a body read off a socket it can be read once: iterating it again yields nothing.
    (The async SDK drains a chat body after `[DONE]` by iterating the response's stream again;
    a re-iterable body made it read the whole stream twice, one event-loop turn per chunk.)
    """

    def __init__(self, events: list[bytes]) -> None:
        self._events: list[bytes] | None = events

    def _take(self) -> list[bytes]:
        events, self._events = self._events, None
        return events or []

    def __iter__(self) -> Iterator[bytes]:
        yield from self._take()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self._take():
            yield event


_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"x-request-id", b"req_bench0123456789"),
    (b"openai-processing-ms", b"120"),
]


class MemoryUpstream(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """A sync and async transport answering every POST with the stream of its API.

    `requests` counts the calls it served, so a benchmark can check nothing was retried.
    """

    def __init__(self, chunks: int = CHUNKS) -> None:
        self._chat = chat_events(chunks)
        self._responses = responses_events(chunks)
        self.requests = 0

    def _respond(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        events = self._responses if request.url.path.endswith("/responses") else self._chat
        return httpx2.Response(200, headers=_HEADERS, stream=_Body(events), request=request)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        return self._respond(request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return self._respond(request)

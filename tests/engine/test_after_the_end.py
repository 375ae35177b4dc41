"""A responses stream after its terminal event: a `data: [DONE]` (chat's end, which some servers
send after every stream), a silence longer than idle_timeout, a reset. The answer is whole, as the
plain SDK reads it, and the call is `ok`; and a failed response's usage is counted, as it was billed."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

import streamtap

from . import loopback

USAGE = {"input_tokens": 7, "output_tokens": 11, "total_tokens": 18}
TEXT = ["Hel", "lo ", "wor", "ld"]
POLICY = streamtap.Policy(max_attempts=1, idle_timeout=0.5)
LABELS = {"api": "responses", "model": "m"}


def _response(status: str, output: list[Any], **extra: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "status": status,
            "output": output, "error": None, "usage": None, **extra}  # fmt: skip


def _frames(end: str) -> list[bytes]:
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response("in_progress", [])})
    ]
    events += [("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                               "delta": piece}) for piece in TEXT]  # fmt: skip
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "".join(TEXT), "annotations": []}]}  # fmt: skip
    if end == "failed":
        error = {"code": "server_error", "message": "The model failed mid-way"}
        events.append(("response.failed", {"response": _response("failed", [], usage=USAGE, error=error)}))
    else:
        events.append(("response.completed", {"response": _response("completed", [message], usage=USAGE)}))
    frames = [
        f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': n, **data})}\n\n".encode()
        for n, (kind, data) in enumerate(events)
    ]
    return [*frames, b"data: [DONE]\n\n"] if end == "done" else frames


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    class Handler(loopback.Handler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            end = self.headers["x-end"]
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for frame in _frames(end):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                self.wfile.flush()
            if end == "linger":
                time.sleep(1.5)  # three idle_timeouts, the body still open
            if end == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")

    with loopback.serve(Handler) as url:
        yield f"{url}/v1"


def _read(upstream: str, end: str, is_async: bool, registry: CollectorRegistry) -> str:
    recorders = [streamtap.PrometheusRecorder(registry)]
    request = {"model": "m", "input": "hi", "stream": True, "extra_headers": {"x-end": end}}

    def text(events: list[Any]) -> str:
        return "".join(e.delta for e in events if e.type == "response.output_text.delta")

    if not is_async:
        plain = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
        with streamtap.instrument(plain, policy=POLICY, recorders=recorders) as client:
            return text(list(client.responses.create(**request)))

    async def run() -> str:
        plain = openai.AsyncOpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
        async with streamtap.instrument(plain, policy=POLICY, recorders=recorders) as client:
            return text([e async for e in await client.responses.create(**request)])

    return asyncio.run(run())


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("end", ["done", "linger", "reset"])
def test_what_follows_the_terminal_event_leaves_the_answer_whole(
    upstream: str, end: str, is_async: bool
) -> None:
    registry = CollectorRegistry()
    assert _read(upstream, end, is_async, registry) == "Hello world"
    value = registry.get_sample_value
    assert value("streamtap_requests_total", {**LABELS, "outcome": "ok"}) == 1
    assert value("streamtap_tokens_total", {**LABELS, "type": "output"}) == 11


def test_a_failed_responses_usage_is_counted(upstream: str) -> None:
    registry = CollectorRegistry()
    with pytest.raises(streamtap.StreamInterrupted, match="failed mid-way"):
        _read(upstream, "failed", False, registry)
    value = registry.get_sample_value
    assert value("streamtap_requests_total", {**LABELS, "outcome": "error"}) == 1
    assert value("streamtap_tokens_total", {**LABELS, "type": "input"}) == 7
    assert value("streamtap_tokens_total", {**LABELS, "type": "output"}) == 11

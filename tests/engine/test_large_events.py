"""An event that carries a whole generated image, several MiB of base64, reaches the caller.

The upstream is a loopback server replaying a responses stream as OpenAI sends an image
generation: the image arrives once in `response.output_item.done` and again in
`response.completed`, each one SSE event. The real SDK reads it through either door.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

import streamtap
from streamtap._prometheus import PrometheusRecorder
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer

from . import loopback
from .conftest import TEST_POLICY

IMAGE = "iVBORw0KGgo" + "A" * (9 * 2**20)  # 9 MiB of base64: over the 4 MiB an event was allowed


def _event(name: str, sequence: int, **fields: Any) -> bytes:
    data = json.dumps({"type": name, "sequence_number": sequence, **fields})
    return f"event: {name}\ndata: {data}\n\n".encode()


def _stream() -> bytes:
    item = {"id": "ig_1", "type": "image_generation_call", "status": "completed", "result": IMAGE}
    response = {
        "id": "resp_1",
        "object": "response",
        "created_at": 0,
        "model": "gpt-4.1-mini",
        "status": "in_progress",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    done = {
        **response,
        "status": "completed",
        "output": [item],
        "usage": {"input_tokens": 5, "output_tokens": 1056, "total_tokens": 1061},
    }
    return b"".join(
        [
            _event("response.created", 0, response=response),
            _event("response.output_item.added", 1, output_index=0, item={**item, "result": None}),
            _event("response.output_item.done", 2, output_index=0, item=item),
            _event("response.completed", 3, response=done),
        ]
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    body = _stream()

    class Replay(loopback.Handler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), 65536):  # as a network delivers it: in pieces
                self.wfile.write(body[start : start + 65536])

    with loopback.serve(Replay) as url:
        yield f"{url}/v1"


def _draw(client: openai.OpenAI) -> list[Any]:
    with client:
        return list(
            client.responses.create(
                model="gpt-4.1-mini", input="draw a cat", tools=[{"type": "image_generation"}], stream=True
            )
        )


def _check(events: list[Any], registry: CollectorRegistry) -> None:
    assert [e.type for e in events][-2:] == ["response.output_item.done", "response.completed"]
    assert events[-2].item.result == IMAGE
    assert events[-1].response.output[0].result == IMAGE
    labels = {"api": "responses", "model": "gpt-4.1-mini"}
    assert registry.get_sample_value("streamtap_requests_total", {**labels, "outcome": "ok"}) == 1
    assert registry.get_sample_value("streamtap_attempts_total", {**labels, "result": "ok"}) == 1


def test_a_streamed_image_reaches_the_caller_whole(upstream: str) -> None:
    registry = CollectorRegistry()
    client = openai.OpenAI(api_key="sk-test", base_url=upstream)
    _check(_draw(streamtap.instrument(client, recorders=[PrometheusRecorder(registry)])), registry)


def test_a_streamed_image_reaches_the_caller_whole_through_the_proxy(upstream: str) -> None:
    registry = CollectorRegistry()
    config = ProxyConfig(upstream=upstream, listen="127.0.0.1:0", policy=TEST_POLICY)
    with ProxyServer(config, recorders=[PrometheusRecorder(registry)]) as proxy:
        _check(_draw(openai.OpenAI(api_key="sk-test", base_url=proxy.base_url)), registry)

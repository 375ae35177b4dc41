"""JSON nested past what Python's parser can follow (about a thousand levels, 2 KB of brackets),
from a client or from an upstream: it is JSON that cannot be parsed, like any other, never a
RecursionError that escapes as a plain-text 500 and a traceback per request, or as a stream cut
without its error event."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

import streamtap
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeUpstream

from . import loopback
from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, Recording

DEEP = "[" * 5000 + "]" * 5000


def _event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}  # fmt: skip
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


ROLE = _event({"role": "assistant", "content": ""})
END = _event({}, "stop") + b"data: [DONE]\n\n"
DEEP_EVENT = b'data: {"id": "c1", "choices": [], "x": ' + DEEP.encode() + b"}\n\n"
CASES = {
    "before": ROLE + DEEP_EVENT + _event({"content": "a"}) + END,
    "after": ROLE + _event({"content": "a"}) + DEEP_EVENT + END,
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    class Handler(loopback.Handler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            body = CASES[self.headers["x-case"]]
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with loopback.serve(Handler) as url:
        yield f"{url}/v1"


def test_a_client_body_nested_too_deep_is_passed_on_as_any_body_that_is_no_object(
    fake: FakeUpstream,
) -> None:
    body = (
        json.dumps({"model": "gpt-4o-mini", "messages": CHAT_MESSAGES})[:-1] + ', "metadata": ' + DEEP + "}"
    )
    recording = Recording()
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", policy=TEST_POLICY)
    with ProxyServer(config, recorders=[recording]) as proxy, httpx2.Client() as client:
        for _ in range(2):
            answer = client.post(
                f"{proxy.base_url}/chat/completions",
                content=body,
                headers={"authorization": "Bearer sk-test", "content-type": "application/json"},
            )
            assert answer.status_code == 400  # the fake upstream's own answer, as OpenAI's would be
            assert "could not parse the JSON body" in answer.json()["error"]["message"]
    assert recording.events == []  # passed through: no call of the engine's


@pytest.mark.parametrize("door", ["instrument", "proxy"])
def test_an_upstream_event_nested_too_deep_before_the_first_token_is_a_bad_response(
    upstream: str, door: str
) -> None:
    recording = Recording()
    request = {"model": "m", "messages": CHAT_MESSAGES, "stream": True, "extra_headers": {"x-case": "before"}}
    if door == "instrument":
        client = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
        with (
            streamtap.instrument(client, policy=TEST_POLICY, recorders=[recording]) as routed,
            pytest.raises(streamtap.StreamInterrupted) as raised,
        ):
            list(routed.chat.completions.create(**request))
        assert raised.value.error_type == "bad_response"
    else:
        config = ProxyConfig(upstream=upstream, listen="127.0.0.1:0", policy=TEST_POLICY)
        with (
            ProxyServer(config, recorders=[recording]) as proxy,
            openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0) as client,
            pytest.raises(openai.APIStatusError) as status,
        ):
            list(client.chat.completions.create(**request))
        assert status.value.status_code == 502
        assert status.value.body["code"] == "bad_response"  # type: ignore[index]
    finished = recording.finished
    assert (finished.outcome, finished.error_type, finished.attempts) == ("error", "bad_response", 3)


def _read_into(client: openai.OpenAI, request: dict[str, Any], received: list[str]) -> None:
    """Read the stream, each chunk's text kept as it comes: a stream that raises leaves what it gave."""
    for chunk in client.chat.completions.create(**request):
        received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")  # noqa: PERF401


@pytest.mark.parametrize("door", ["instrument", "proxy"])
def test_an_upstream_event_nested_too_deep_after_the_first_token_ends_the_stream_with_an_error(
    upstream: str, door: str
) -> None:
    recording = Recording()
    request = {"model": "m", "messages": CHAT_MESSAGES, "stream": True, "extra_headers": {"x-case": "after"}}
    received: list[str] = []
    with contextlib.ExitStack() as stack:
        if door == "instrument":
            plain = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
            client = streamtap.instrument(plain, policy=TEST_POLICY, recorders=[recording])
        else:
            config = ProxyConfig(upstream=upstream, listen="127.0.0.1:0", policy=TEST_POLICY)
            proxy = stack.enter_context(ProxyServer(config, recorders=[recording]))
            client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0)
        stack.enter_context(client)
        with pytest.raises(openai.APIError):
            _read_into(client, request, received)
    assert "".join(received) == "a"
    finished = recording.finished
    assert (finished.outcome, finished.error_type, finished.attempts) == ("error", "bad_response", 1)

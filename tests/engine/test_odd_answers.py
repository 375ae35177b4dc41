"""Answers the upstream may send that are not plain: header values in Latin-1 (which HTTP allows,
as obs-text) and with control characters (which it does not), a status past 599, and an error
body that decompresses a thousandfold. The plain SDK takes them all; so must door 1, and the
proxy must still answer its client, within bounds."""

from __future__ import annotations

import gc
import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

import streamtap
from streamtap._proxy_client import gave_up_headers
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap._whole import MAX_ERROR_BODY

from . import loopback
from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES

LATIN_1 = "req_caf\xe9"  # sent as the one byte 0xE9
CONTROL = "a\x7fb\x01c"
_CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
_SSE = (
    "".join(
        f"data: {json.dumps({**_CHUNK, 'choices': [choice]})}\n\n"
        for choice in (
            {"index": 0, "delta": {"content": "hi"}, "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
        )
    ).encode()
    + b"data: [DONE]\n\n"
)
_BOMB = gzip.compress(b"{" + b" " * (8 * 1024 * 1024) + b"}")
seen: list[str] = []  # the paths of the requests the upstream got
STATUSES = {"broken": 500, "weird": 999}  # models answered with an error status
_ERROR = json.dumps(
    {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
).encode()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    class Handler(loopback.Handler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append(self.path)
            if body["model"] == "moved" and "followed" not in self.path:
                self.send_response(307)  # a redirect that keeps the method and the body
                self.send_header("location", self.path + "?followed=1")
                self.send_header("content-length", "0")
                self.end_headers()
            elif body["model"] == "not-modified":
                self.send_response(304)
                self.end_headers()
            elif body["model"] == "cut":  # a stream that ends before its first content, each time
                self._answer(200, b"", "text/event-stream")
            elif body["model"] == "bomb":  # an error body of 8 MiB in 8 KiB of gzip
                self.send_response(400)
                self.send_header("content-type", "application/json")
                self.send_header("content-encoding", "gzip")
                self.send_header("content-length", str(len(_BOMB)))
                self.end_headers()
                self.wfile.write(_BOMB)
            elif body["model"] in STATUSES:
                self._answer(STATUSES[body["model"]], _ERROR, "application/json")
            else:
                self._answer(200, _SSE, "text/event-stream")

        def do_GET(self) -> None:
            if self.path.endswith("/weird"):
                self._answer(999, _ERROR, "application/json")
            else:
                self._answer(200, b'{"object": "list", "data": []}', "application/json")

        def _answer(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.send_header("x-request-id", LATIN_1)  # written as Latin-1
            self.send_header("x-odd", CONTROL)
            self.end_headers()
            self.wfile.write(data)

    with loopback.serve(Handler) as url:
        yield f"{url}/v1"


def _client(base: str, *, instrumented: bool, **options: Any) -> openai.OpenAI:
    """The plain SDK on `base`, or it instrumented with `options` (its own retries off: the
    engine's count)."""
    client = openai.OpenAI(base_url=base, api_key="sk-x", max_retries=0)
    return (
        streamtap.instrument(client, recorders=[], policy=TEST_POLICY, **options) if instrumented else client
    )


def _text(stream: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _stream_headers(client: Any, model: str) -> httpx2.Headers:
    """The headers of a streamed call's answer (its error's, for the broken model), read whole."""
    if model in STATUSES:
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=model, messages=CHAT_MESSAGES, stream=True)
        assert raised.value.status_code == STATUSES[model]
        return raised.value.response.headers
    raw = client.chat.completions.with_raw_response.create(model=model, messages=CHAT_MESSAGES, stream=True)
    assert _text(raw.parse()) == "hi"
    return raw.headers


@pytest.mark.parametrize("model", ["gpt-4o", "broken", "weird"], ids=["stream", "error-status", "status-999"])
def test_door_1_takes_them_as_the_plain_sdk_does(upstream: str, model: str) -> None:
    plain, wrapped = _client(upstream, instrumented=False), _client(upstream, instrumented=True)
    expected, got = _stream_headers(plain, model), _stream_headers(wrapped, model)
    plain.close()
    wrapped.close()
    assert got["x-request-id"] == expected["x-request-id"] == LATIN_1
    assert got["x-odd"] == expected["x-odd"] == CONTROL


@pytest.fixture(scope="module")
def proxy(upstream: str) -> Iterator[ProxyServer]:
    with ProxyServer(
        ProxyConfig(upstream=upstream, listen="127.0.0.1:0", policy=TEST_POLICY), recorders=[]
    ) as server:
        yield server


@pytest.mark.parametrize(
    ("method", "path", "model", "status"),
    [
        ("POST", "/chat/completions", "gpt-4o", 200),
        ("POST", "/chat/completions", "broken", 500),
        ("POST", "/chat/completions", "weird", 502),  # 999: no status line uvicorn can write
        ("GET", "/models", None, 200),
        ("GET", "/models/weird", None, 502),
    ],
    ids=["stream", "error-status", "status-999", "pass-through", "pass-through-999"],
)
def test_the_proxy_answers_its_client_control_characters_made_spaces_a_status_past_599_a_502(
    proxy: ProxyServer, method: str, path: str, model: str | None, status: int
) -> None:
    body = {"model": model, "messages": CHAT_MESSAGES, "stream": True} if model else None
    response = httpx2.request(
        method, f"{proxy.base_url}{path}", json=body, headers={"authorization": "Bearer sk-x"}
    )
    assert response.status_code == status
    if status != 200:
        assert response.json() == json.loads(_ERROR)  # the upstream's own error object
    assert response.headers["x-request-id"] == LATIN_1
    assert response.headers["x-odd"] == "a b c"  # RFC 9110 5.5; uvicorn sends no control character


def test_an_error_body_is_kept_to_its_first_mib(upstream: str, proxy: ProxyServer) -> None:
    # Decompressed whole, every such answer held 8 MiB (a GiB for a real bomb), in a proxy
    # shared by every call at once. The SDK raises on the status as before, with the start.
    wrapped = streamtap.instrument(
        openai.OpenAI(base_url=upstream, api_key="sk-x"), recorders=[], policy=TEST_POLICY
    )
    with pytest.raises(openai.BadRequestError) as raised:
        wrapped.chat.completions.create(model="bomb", messages=CHAT_MESSAGES, stream=True)
    wrapped.close()
    assert len(raised.value.response.content) == MAX_ERROR_BODY
    body = {"model": "bomb", "messages": CHAT_MESSAGES, "stream": True}
    proxied = httpx2.post(
        f"{proxy.base_url}/chat/completions", json=body, headers={"authorization": "Bearer sk-x"}
    )
    assert (proxied.status_code, len(proxied.content)) == (400, MAX_ERROR_BODY)


@pytest.mark.parametrize("mode", ["plain", "instrumented"])
def test_a_redirect_goes_back_to_the_client_which_follows_it(upstream: str, mode: str) -> None:
    # Taken for an empty stream, it was retried (3 attempts) and raised as stream_truncated.
    # Not a failure another route should answer: the caller's client follows it, or raises.
    fallbacks = [streamtap.Fallback.model("gpt-4o-mini"), streamtap.Fallback.cached()]
    client = _client(upstream, instrumented=mode == "instrumented", fallbacks=fallbacks)
    seen.clear()
    assert _text(client.chat.completions.create(model="moved", messages=CHAT_MESSAGES, stream=True)) == "hi"
    assert seen == ["/v1/chat/completions", "/v1/chat/completions?followed=1"]
    seen.clear()
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="not-modified", messages=CHAT_MESSAGES, stream=True)
    assert raised.value.status_code == 304
    assert seen == ["/v1/chat/completions"]  # not retried
    client.close()


def test_the_502_for_streams_that_all_broke_carries_their_request_id_as_a_field_may(
    proxy: ProxyServer,
) -> None:
    body = {"model": "cut", "messages": CHAT_MESSAGES, "stream": True}
    answer = httpx2.post(
        f"{proxy.base_url}/chat/completions", json=body, headers={"authorization": "Bearer sk-x"}
    )
    assert answer.status_code == 502
    assert (answer.headers["x-request-id"], answer.headers["x-streamtap-attempts"]) == (LATIN_1, "3")
    # A control character in it would have made uvicorn refuse the whole answer.
    error = streamtap.StreamInterrupted(
        request=httpx2.Request("POST", "http://x"), error_type="stream_truncated", phase="first_token",
        attempts=1, text="", message="cut", request_id=CONTROL,
    )  # fmt: skip
    assert dict(gave_up_headers(error))[b"x-request-id"] == b"a b c"


# The connection's own generator, under httpx2's, is left as any body read in part leaves it,
# streamtap or not (the plain SDK breaking out of a stream): trio warns of it when collected.
@pytest.mark.filterwarnings("ignore:Async generator 'httpcore2.:ResourceWarning")
def test_an_error_body_left_part_read_is_closed_under_trio(upstream: str) -> None:
    # Collected unfinished, httpx2's generator made trio warn (an error under filterwarnings=error).
    trio = pytest.importorskip("trio", reason="trio is not installed (pip install -e '.[test]')")

    async def call() -> int:
        client = openai.AsyncOpenAI(base_url=upstream, api_key="sk-x", max_retries=0)
        async with streamtap.instrument(client, recorders=[], policy=TEST_POLICY) as wrapped:
            with pytest.raises(openai.BadRequestError) as raised:
                await wrapped.chat.completions.create(model="bomb", messages=CHAT_MESSAGES, stream=True)
        return len(raised.value.response.content)

    assert trio.run(call) == MAX_ERROR_BODY
    gc.collect()

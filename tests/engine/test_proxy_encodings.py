"""Content codings through the proxy, as real clients and upstreams use them: clients that
accept br and zstd (curl --compressed, browsers' fetch), upstreams that compress, clients that
compress their request bodies."""

from __future__ import annotations

import gzip
import json
import socket
import zlib
from collections.abc import Iterator

import httpx2
import pytest

from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeUpstream

from . import loopback
from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, Recording

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


def _sse() -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    deltas = [{"role": "assistant", "content": ""}, {"content": "hi"}, {"content": " there"}]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, list[str]]]:
    """An upstream that compresses as a CDN in front of an API does: br when the request
    accepts it (these bytes are no real brotli: a client that asked for br cannot tell),
    else gzip when accepted. It notes each request's Accept-Encoding."""
    accepted: list[str] = []

    class Handler(loopback.Handler):
        def do_GET(self) -> None:
            self._answer(json.dumps({"object": "list", "data": []}).encode(), "application/json")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if body.get("stream"):
                self._answer(_sse(), "text/event-stream")
            else:
                self._answer(json.dumps(ANSWER).encode(), "application/json")

        def _answer(self, data: bytes, content_type: str) -> None:
            accept = self.headers.get("accept-encoding", "")
            accepted.append(accept)
            coding = "br" if "br" in accept else "gzip" if "gzip" in accept else None
            if coding == "br":
                data = b"\x1b\x03 not json, not text"
            elif coding == "gzip":
                data = gzip.compress(data)
            self.send_response(200)
            self.send_header("content-type", content_type)
            if coding is not None:
                self.send_header("content-encoding", coding)
            self.send_header("content-length", str(len(data)))
            self.send_header("x-request-id", "req_123")
            self.end_headers()
            self.wfile.write(data)

    with loopback.serve(Handler) as url:
        yield f"{url}/v1", accepted


@pytest.fixture(scope="module")
def proxy(upstream: tuple[str, list[str]]) -> Iterator[ProxyServer]:
    config = ProxyConfig(upstream=upstream[0], listen="127.0.0.1:0", policy=TEST_POLICY)
    with ProxyServer(config, recorders=[]) as server:
        yield server


# What curl --compressed, browsers and many HTTP libraries send.
CLIENT_ACCEPTS = "gzip, deflate, br, zstd"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_call_reaches_the_client_decoded_whatever_it_accepts(
    proxy: ProxyServer, upstream: tuple[str, list[str]], stream: bool
) -> None:
    # The engine reads the answer, so the upstream is offered only the codings it decodes;
    # offered the client's br, the upstream's answer was unreadable and every call a 502.
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    response = httpx2.post(
        f"{proxy.base_url}/chat/completions", json=body, headers={"accept-encoding": CLIENT_ACCEPTS}
    )
    assert response.status_code == 200, response.text
    assert upstream[1][-1] == "gzip, deflate"
    assert "content-encoding" not in response.headers  # the body the client gets is decoded
    assert response.headers["x-request-id"] == "req_123"
    if stream:
        assert response.content == _sse()
    else:
        assert json.loads(response.content) == ANSWER
        assert response.headers["content-length"] == str(len(response.content))


def test_a_pass_through_keeps_the_upstream_coding_and_the_client_offer(
    proxy: ProxyServer, upstream: tuple[str, list[str]]
) -> None:
    # Relayed byte for byte: the client's own offer goes upstream, the coding comes back
    # with the length of the encoded bytes.
    response = httpx2.get(f"{proxy.base_url}/models", headers={"accept-encoding": "gzip"})
    assert upstream[1][-1] == "gzip"
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(gzip.compress(response.content)))
    assert response.json() == {"object": "list", "data": []}


def test_a_relayed_answer_has_one_date(proxy: ProxyServer) -> None:
    # The server writes its own Date on every response; the upstream's made a second one.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert head.count(b"\r\ndate:") == 1


@pytest.fixture
def proxied(fake: FakeUpstream) -> Iterator[tuple[ProxyServer, Recording]]:
    fake.clear()
    recording = Recording()
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", policy=TEST_POLICY, max_body=2048)
    with ProxyServer(config, recorders=[recording]) as server:
        yield server, recording


def _compressed(payload: object, coding: str) -> bytes:
    data = json.dumps(payload).encode()
    return gzip.compress(data) if coding == "gzip" else zlib.compress(data)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compressed_call_body_is_served_by_the_engine(
    proxied: tuple[ProxyServer, Recording], fake: FakeUpstream, coding: str
) -> None:
    # It was passed through still compressed, the engine never saw it: no retries, no
    # fallbacks, no telemetry, and whatever an upstream makes of a compressed body.
    proxy, recording = proxied
    response = httpx2.post(
        f"{proxy.base_url}/chat/completions",
        content=_compressed({"model": "gpt-4o", "messages": CHAT_MESSAGES}, coding),
        headers={"content-encoding": coding, "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-streamtap-attempts"] == "1"
    assert recording.finished.outcome == "ok"
    (sent,) = fake.requests
    assert sent.model == "gpt-4o"  # the upstream got the JSON itself
    assert "content-encoding" not in dict(sent.headers)


def test_a_compressed_call_body_is_bounded_once_decoded(
    proxied: tuple[ProxyServer, Recording], fake: FakeUpstream
) -> None:
    proxy, _ = proxied
    packed = _compressed(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 100_000}]}, "gzip"
    )
    assert len(packed) < 2048  # under max_body as sent, a hundred times over it decoded
    response = httpx2.post(
        f"{proxy.base_url}/chat/completions", content=packed, headers={"content-encoding": "gzip"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert fake.requests == []

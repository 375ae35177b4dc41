"""A connection whose bytes go bad rather than away: a gzip body that stops decoding, a TLS record
that fails its check. httpx2 raises neither as a TransportError (a DecodingError; an SSLError
that httpcore's anyio backend lets through), yet each is the connection failing: before the first
token the attempt is retried, after it the caller gets a StreamInterrupted with the text so far,
and the call counts as an error, never as a caller who went away."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import zlib
from pathlib import Path

import openai
import pytest
from prometheus_client import CollectorRegistry

import streamtap

from . import loopback
from .support import write_self_signed

ROLE = {"role": "assistant", "content": ""}
POLICY = streamtap.Policy(max_attempts=2, backoff_base=0.01, backoff_cap=0.02)
LABELS = {"api": "chat_completions", "model": "m"}


def _frame(delta: dict[str, str]) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _good(after_first_token: bool) -> bytes:
    frames = [_frame(ROLE)]
    if after_first_token:
        frames += [_frame({"content": "Hello"}), _frame({"content": " world"})]
    return b"".join(frames)


class _Upstream(loopback.Handler):
    after_first_token = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.start_body()
        self.wfile.flush()
        time.sleep(0.1)
        self.go_bad()
        time.sleep(0.3)
        self.close_connection = True

    def start_body(self) -> None:
        raise NotImplementedError

    def go_bad(self) -> None:
        raise NotImplementedError


class _Gzip(_Upstream):
    def start_body(self) -> None:
        self.send_header("content-encoding", "gzip")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        gzip = zlib.compressobj(wbits=31)
        self._piece(gzip.compress(_good(self.after_first_token)) + gzip.flush(zlib.Z_SYNC_FLUSH))

    def go_bad(self) -> None:
        self._piece(b"\xff" * 64)  # no deflate data
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _piece(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class _Tls(_Upstream):
    def start_body(self) -> None:
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(_good(self.after_first_token))

    def go_bad(self) -> None:
        # An application-data record written under TLS, past the session: its check fails.
        os.write(self.connection.fileno(), b"\x17\x03\x03\x00\x20" + os.urandom(32))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = write_self_signed(Path(tmp_path_factory.mktemp("tls")), ip="127.0.0.1")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def _call(mode: str, url: str, verify: ssl.SSLContext | None, recorders: list[streamtap.Recorder]) -> str:
    """One streamed chat call, read whole by the real SDK through streamtap; its text."""
    messages = [{"role": "user", "content": "hi"}]
    options = {"base_url": url + "/v1", "api_key": "sk-x", "max_retries": 0}
    if mode == "sync":
        http = openai.DefaultHttpxClient(verify=verify) if verify else None
        with streamtap.instrument(
            openai.OpenAI(http_client=http, **options), recorders=recorders, policy=POLICY
        ) as client:
            stream = client.chat.completions.create(model="m", messages=messages, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    async def run() -> str:
        http = openai.DefaultAsyncHttpxClient(verify=verify) if verify else None
        async with streamtap.instrument(
            openai.AsyncOpenAI(http_client=http, **options), recorders=recorders, policy=POLICY
        ) as client:
            stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["gzip", "tls"])
@pytest.mark.parametrize("after_first_token", [True, False], ids=["after-first-token", "before"])
def test_bytes_that_go_bad_are_the_connection_failing(
    mode: str, kind: str, after_first_token: bool, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    handler = type("Handler", (_Gzip if kind == "gzip" else _Tls,), {"after_first_token": after_first_token})
    server_tls, client_tls = tls if kind == "tls" else (None, None)
    registry = CollectorRegistry()
    with loopback.serve(handler, server_tls) as url, pytest.raises(streamtap.StreamInterrupted) as raised:
        _call(mode, url, client_tls, [streamtap.PrometheusRecorder(registry)])
    error = raised.value
    assert error.error_type == "stream_interrupted"
    assert error.text == ("Hello world" if after_first_token else "")
    value = registry.get_sample_value
    assert value("streamtap_requests_total", {**LABELS, "outcome": "error"}) == 1
    assert value("streamtap_requests_total", {**LABELS, "outcome": "cancelled"}) in (None, 0)
    assert value("streamtap_attempts_total", {**LABELS, "result": "error"}) == (1 if after_first_token else 2)
    retries = value("streamtap_retries_total", {**LABELS, "reason": "stream_interrupted"})
    assert retries == (None if after_first_token else 1)

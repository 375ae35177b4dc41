"""Uploads through the proxy: bodies of other /v1 paths stream to the upstream as they arrive,
bounded by `max_upload` (not the engine's `max_body`), and are never held whole."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx2
import openai
import pytest

from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer

from . import loopback
from .conftest import TEST_POLICY
from .support import until


class _Upload:
    """What the upstream has received of the current upload."""

    def __init__(self) -> None:
        self.received = 0
        self.requests: list[str] = []


def _read_chunked(handler: loopback.Handler, got: Callable[[bytes], None]) -> None:
    while True:
        size = int(handler.rfile.readline().split(b";")[0], 16)
        if size == 0:
            handler.rfile.readline()
            return
        got(handler.rfile.read(size))
        handler.rfile.readline()


@pytest.fixture
def upstream() -> Iterator[tuple[str, _Upload]]:
    """An upstream that reads each body in pieces, counting as it goes, and answers its digest."""
    upload = _Upload()

    class Handler(loopback.Handler):
        def do_POST(self) -> None:
            upload.requests.append(f"{self.command} {self.path}")
            digest = hashlib.sha256()

            def got(piece: bytes) -> None:
                digest.update(piece)
                upload.received += len(piece)

            if "content-length" in self.headers:
                left = int(self.headers["content-length"])
                while left:
                    piece = self.rfile.read(min(left, 65536))
                    got(piece)
                    left -= len(piece)
            else:
                _read_chunked(self, got)
            body = json.dumps({"bytes": upload.received, "sha256": digest.hexdigest()}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with loopback.serve(Handler) as url:
        yield f"{url}/v1", upload


@pytest.fixture
def proxy(upstream: tuple[str, _Upload]) -> Iterator[ProxyServer]:
    config = ProxyConfig(
        upstream=upstream[0],
        listen="127.0.0.1:0",
        policy=TEST_POLICY,
        max_body=2048,
        max_upload=1_000_000,
        body_timeout=1.0,
    )
    with ProxyServer(config, recorders=[]) as server:
        yield server


def test_an_upload_over_max_body_streams_through(proxy: ProxyServer, upstream: tuple[str, _Upload]) -> None:
    """The SDK's multipart file upload, 300 kB against a 2 kB max_body, arrives whole."""
    _, upload = upstream
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-x", max_retries=0)
    data = bytes(range(256)) * 1200
    with client:
        answer = client.files.with_raw_response.create(file=("big.jsonl", data), purpose="batch")
    sent = json.loads(answer.http_response.content)
    assert upload.requests == ["POST /v1/files"]
    assert sent["bytes"] > len(data)  # the multipart envelope around the file
    assert upload.received == sent["bytes"]


def test_the_upstream_reads_an_upload_before_it_is_whole(
    proxy: ProxyServer, upstream: tuple[str, _Upload]
) -> None:
    """Chunked, of unknown length: the first half reaches the upstream while the client still
    holds back the second, so the proxy holds nothing whole."""
    _, upload = upstream
    half = b"a" * 100_000
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%b\r\n" % (len(half), half)
        )
        assert until(lambda: upload.received == len(half)), upload.received
        sock.sendall(b"%x\r\n%b\r\n0\r\n\r\n" % (len(half), half))
        reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:60]
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["sha256"] == hashlib.sha256(half * 2).hexdigest()


def test_an_upload_over_max_upload_is_refused(proxy: ProxyServer, upstream: tuple[str, _Upload]) -> None:
    _, upload = upstream
    declared = httpx2.post(f"{proxy.base_url}/files", content=b"x" * 1_000_001)
    assert declared.status_code == 413
    assert "1000000 bytes" in declared.json()["error"]["message"]
    assert upload.requests == []  # refused on its declared length, before a byte went on

    def pieces() -> Iterator[bytes]:
        for _ in range(11):
            yield b"x" * 100_000

    chunked = httpx2.post(f"{proxy.base_url}/files", content=pieces())
    assert chunked.status_code == 413


def test_an_upload_that_stalls_times_out(proxy: ProxyServer, upstream: tuple[str, _Upload]) -> None:
    """body_timeout bounds the wait for each next piece, so a long upload is not cut at 1 s."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        for _ in range(3):  # 1.8 s in all, each piece within the 1 s
            sock.sendall(b"x")
            time.sleep(0.6)
        started = time.monotonic()
        reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:60]
    assert b"stalled for over 1.0 s" in reply
    assert time.monotonic() - started < 3.0


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0

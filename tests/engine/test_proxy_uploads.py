"""Uploads through the proxy: bodies of other /v1 paths stream to the upstream as they arrive,
bounded by `max_upload` (not the engine's `max_body`), and are never held whole."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx2
import openai
import pytest

import streamtap._proxy_server
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
        self.framings: list[str] = []  # how each body came: "content-length: N" or "chunked"


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
                upload.framings.append(f"content-length: {self.headers['content-length']}")
                left = int(self.headers["content-length"])
                while left:
                    piece = self.rfile.read(min(left, 65536))
                    got(piece)
                    left -= len(piece)
            else:
                upload.framings.append(self.headers.get("transfer-encoding", "none"))
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
    # Streamed on with the length the SDK declared, not chunked: some servers refuse chunked.
    assert upload.framings == [f"content-length: {sent['bytes']}"]


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
    assert upload.framings == ["chunked"]  # of unknown length: chunked on


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


class _Silent:
    """What a silent upstream saw: requests read whole, and connections the proxy closed."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.closed = 0


@pytest.fixture
def silent() -> Iterator[tuple[str, _Silent]]:
    """An upstream that reads each request whole and never answers; it notes when the proxy
    closes the connection."""
    seen = _Silent()

    class Handler(loopback.Handler):
        def _hold(self) -> None:
            if "transfer-encoding" in self.headers:
                _read_chunked(self, lambda _: None)
            else:
                self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.requests.append(f"{self.command} {self.path}")
            self.rfile.read(1)  # until the proxy closes the connection (or sends another request)
            seen.closed += 1
            self.close_connection = True

        do_GET = do_POST = _hold

    with loopback.serve(Handler) as url:
        yield f"{url}/v1", seen


_SILENT_REQUESTS = [
    pytest.param(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", id="get"),
    pytest.param(
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000, id="upload"
    ),
]


@pytest.mark.parametrize("request_", _SILENT_REQUESTS)
def test_a_request_passed_through_times_out_when_the_upstream_never_answers(
    silent: tuple[str, _Silent], request_: bytes
) -> None:
    url, seen = silent
    config = ProxyConfig(upstream=url, listen="127.0.0.1:0", policy=TEST_POLICY, pass_through_timeout=0.5)
    with ProxyServer(config, recorders=[]) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(request_)
            reply = _read_reply(sock)
        assert reply.startswith(b"HTTP/1.1 504"), reply[:60]
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["code"] == "timeout"
        assert until(lambda: seen.closed == 1)  # the upstream's connection was dropped
    assert len(seen.requests) == 1


@pytest.mark.parametrize("request_", _SILENT_REQUESTS)
def test_a_client_that_leaves_frees_the_upstream_of_a_request_passed_through(
    silent: tuple[str, _Silent], request_: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the body is whole, the proxy watches the client while the upstream thinks: a client
    that gives up ends the request and closes its upstream connection at once."""
    url, seen = silent
    config = ProxyConfig(upstream=url, listen="127.0.0.1:0", policy=TEST_POLICY)
    with ProxyServer(config, recorders=[]) as proxy:
        state = proxy._server.server_state
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(request_)
            assert until(lambda: len(seen.requests) == 1)  # the upstream has it whole, and waits
        assert until(lambda: seen.closed == 1)
        assert until(lambda: not state.tasks)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("request_", _SILENT_REQUESTS)
def test_a_request_passed_through_still_waiting_at_the_end_of_the_grace_gets_503(
    silent: tuple[str, _Silent], request_: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """As a call still waiting for its first token: an error the SDKs know, not uvicorn's
    plain-text 500 and a logged traceback."""
    url, seen = silent
    config = ProxyConfig(upstream=url, listen="127.0.0.1:0", policy=TEST_POLICY, shutdown_grace=1)
    uvicorn_log = logging.getLogger("uvicorn.error")  # does not propagate to the root logger
    uvicorn_log.addHandler(caplog.handler)
    proxy = ProxyServer(config, recorders=[]).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            sock.sendall(request_)
            assert until(lambda: len(seen.requests) == 1)
            proxy.stop()
            reply = _read_reply(sock)
    finally:
        proxy.stop()
        uvicorn_log.removeHandler(caplog.handler)
    assert reply.startswith(b"HTTP/1.1 503"), reply[:60]
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["code"] == "shutting_down"
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []  # no traceback


@pytest.fixture
def refusing() -> Iterator[str]:
    """An upstream that answers 401 as soon as it has a request's head, and closes without
    reading the body, as servers refuse a bad key or a body declared too large."""
    answer = json.dumps({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def refuse(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and (piece := conn.recv(65536)):
                head += piece
            conn.sendall(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(answer), answer.encode())
            )

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=refuse, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_the_upstream_refuses_early_gets_its_answer(
    refusing: str, chunked: bool, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream's 401, sent before it took the body, reaches the client: not a 502 for the
    body it would not take. Its close resets the connection the proxy still writes to, and the
    event loop drops it unread: the answer is read from the socket before it is closed."""
    if loop == "asyncio":
        monkeypatch.setattr(streamtap._proxy_server, "has_uvloop", lambda: False)
    elif not streamtap._proxy_server.has_uvloop():
        pytest.skip("uvloop is not installed here")
    config = ProxyConfig(upstream=refusing, listen="127.0.0.1:0", policy=TEST_POLICY)
    data = b"a" * (8 * 1024 * 1024)  # far more than the socket buffers between proxy and upstream
    with ProxyServer(config, recorders=[]) as proxy:

        def pieces() -> Iterator[bytes]:
            for start in range(0, len(data), 65536):
                yield data[start : start + 65536]

        answer = httpx2.post(f"{proxy.base_url}/files", content=pieces() if chunked else data, timeout=30)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "invalid_api_key"


def test_a_pipelined_upload_s_body_is_not_taken_for_a_head(
    proxy: ProxyServer, upstream: tuple[str, _Upload]
) -> None:
    """Two requests in one write, the second an upload whose body follows: the body is not
    counted against the 64 KiB head limit (it was, and the upload got 431)."""
    _, upload = upstream
    size = 200_000
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size
        )
        time.sleep(0.2)  # both heads are parsed before the body comes
        sock.sendall(b"a" * size)
        replies = b""
        while chunk := sock.recv(65536):
            replies += chunk
    assert replies.count(b"HTTP/1.1 ") == replies.count(b"HTTP/1.1 200 OK\r\n") == 2, replies[-200:]
    assert upload.requests == ["POST /v1/files", "POST /v1/files"]
    assert upload.received == 3 + size

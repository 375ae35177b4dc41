"""The proxy's httptools protocol keeps h11's protections (request-head limit, absolute-form
refusal) and bounds the time a request head may take."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator

import pytest

from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_protocol import (
    LINGER,
    MAX_HEAD,
    LimitedHttpToolsProtocol,
    blank_line_end,
    last_chunk_end,
)
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeUpstream


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyServer]:
    config = ProxyConfig(upstream="http://127.0.0.1:9/v1", listen="127.0.0.1:0", shutdown_grace=1)
    with ProxyServer(config, recorders=[]) as server:
        yield server


def _exchange(port: int, *parts: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for part in parts:
            sock.sendall(part)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize("pieces", [1, 100], ids=["one-write", "many-writes"])
def test_a_head_over_the_limit_is_refused_with_431(proxy: ProxyServer, pieces: int) -> None:
    start = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: "
    head = start + b"a" * (MAX_HEAD + 1 - len(start))  # one byte over, still unterminated
    # Only the last byte crosses the limit, so the proxy has read everything when it refuses
    # (unread bytes would turn its close into a reset).
    size = -(-len(head) // pieces)
    reply = _exchange(proxy.port, *(head[i : i + size] for i in range(0, len(head), size)))
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert reply.endswith(b"\r\n\r\nrequest line and headers too large")


def test_a_client_still_sending_when_refused_sends_all_then_reads_its_431(proxy: ProxyServer) -> None:
    # The proxy refuses at 64 KiB with most of the 16 MiB (more than the socket buffers hold)
    # unread. It must linger, reading and dropping: closed at once, it resets the connection and
    # the client's send fails before it can read the answer, as an HTTP client's would.
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * (16 * 1024 * 1024)
    assert _exchange(proxy.port, head).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def _sends_until_closed(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes (a reset or a broken pipe) while a KiB goes every 50 ms."""
    for _ in range(int(seconds / 0.05)):
        try:
            sock.sendall(b"a" * 1024)
        except (ConnectionResetError, BrokenPipeError):
            return True
        time.sleep(0.05)
    return False


def test_a_refused_client_that_keeps_sending_is_closed_after_the_linger(proxy: ProxyServer) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * MAX_HEAD)
        refused = time.monotonic()
        assert _sends_until_closed(sock, LINGER * 2)
    assert time.monotonic() - refused >= LINGER * 0.9


def test_heads_under_the_limit_are_served_back_to_back(proxy: ProxyServer) -> None:
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * (MAX_HEAD - 200) + b"\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    reply = _exchange(proxy.port, head, head, last)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 3


_SMALL = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"


# A call whose body is read whole, then passed through (it is no JSON) to an upstream that
# refuses the connection: 502, and the connection stays open.
_POST = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"


@pytest.mark.parametrize(
    "first",
    [
        _SMALL,
        _POST + b"content-length: 5\r\n\r\nhello",
        _POST + b"transfer-encoding: chunked\r\n\r\n6\r\nhe\r\n\r\n\r\n0\r\n\r\n",  # a blank line inside
    ],
    ids=["no-body", "content-length", "chunked"],
)
def test_a_head_over_the_limit_pipelined_in_one_write_is_refused(proxy: ProxyServer, first: bytes) -> None:
    # The parser took what followed the first message's end in a read uncounted: a head over
    # the limit behind a small request in the same write was served.
    big = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    reply = _exchange(proxy.port, first + big)
    # The first answered, then the refusal, after it and not inside it.
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n" if first == _SMALL else b"HTTP/1.1 502 "), reply[:100]
    assert reply.count(b"HTTP/1.1 ") == 2, reply
    assert b"}HTTP/1.1 431 Request Header Fields Too Large\r\n" in reply
    assert reply.endswith(b"request line and headers too large")


def test_a_head_begun_in_the_read_that_ended_a_request_is_counted_whole(proxy: ProxyServer) -> None:
    # Its first KiB came behind a request, the rest in later writes: every part is counted.
    big = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    rest = (big[i : i + 9000] for i in range(1024, len(big), 9000))
    reply = _exchange(proxy.port, _SMALL + big[:1024], *rest)
    assert reply.count(b"HTTP/1.1 ") == 2, reply
    assert b'"ok"}HTTP/1.1 431 Request Header Fields Too Large\r\n' in reply


def test_a_blank_line_is_found_however_reads_cut_it() -> None:
    assert blank_line_end(b"", b"ab\r\n\r\ncd", 0) == 6
    assert blank_line_end(b"", b"ab\r\n\r\ncd\r\n\r\n", 6) == 12  # from `at` on
    assert [blank_line_end(b"\r\n\r\n"[:cut], b"\r\n\r\n"[cut:] + b"x", 0) for cut in (1, 2, 3)] == [3, 2, 1]
    assert blank_line_end(b"\r\n", b"xx\r\n\r\n", 2) == 4  # the tail is what came before `at`
    assert blank_line_end(b"a\r\n", b"\r", 0) == -1


def test_a_chunked_bodys_usual_end_is_found_however_reads_cut_it() -> None:
    body = b"6\r\nhe\r\n\r\n\r\n0\r\n\r\n"  # a blank line inside its data first
    assert last_chunk_end(b"", body + b"GET", 0) == len(body)
    assert last_chunk_end(b"", b"0\r\n\r\nGET", 0) == 5  # an empty body, right after its head
    assert [last_chunk_end(body[cut - 3 : cut], body[cut:], 0) for cut in (len(body) - 6, len(body) - 5)] == [
        6,
        5,
    ]
    assert last_chunk_end(b"", b"1;x\r\na\r\n0;ext\r\n\r\n", 0) == -1  # not the usual end: read whole


def test_a_chunked_body_of_blank_lines_goes_to_the_parser_whole(
    proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cut at every blank line in it, 256 KiB of them went to the parser 4 bytes at a time, a
    # Python loop's turn each: 0.65 s of the event loop per MiB, every stream stalled meanwhile.
    fed: list[int] = []
    feed = LimitedHttpToolsProtocol._feed

    def counted(self: LimitedHttpToolsProtocol, part: memoryview) -> int:
        fed.append(len(part))
        return feed(self, part)

    monkeypatch.setattr(LimitedHttpToolsProtocol, "_feed", counted)
    data = b"\r\n" * (128 * 1024)
    body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
    reply = _exchange(proxy.port, _POST + b"connection: close\r\ntransfer-encoding: chunked\r\n\r\n" + body)
    assert reply.startswith(b"HTTP/1.1 502 "), reply[:100]  # read whole, then refused upstream
    assert len(fed) < 40, f"{len(fed)} parts"


def test_absolute_form_target_is_refused(proxy: ProxyServer) -> None:
    request = (
        b"GET http://169.254.169.254/v1/models HTTP/1.1\r\nhost: 169.254.169.254\r\nconnection: close\r\n\r\n"
    )
    assert _exchange(proxy.port, request).startswith(b"HTTP/1.1 404 ")


@pytest.fixture(scope="module")
def impatient() -> Iterator[ProxyServer]:
    """A proxy, with an ops listener, whose keep-alive timeout, which also bounds a request
    head, is 0.3 s."""
    config = ProxyConfig(
        upstream="http://127.0.0.1:9/v1", listen="127.0.0.1:0", ops_listen="127.0.0.1:0", shutdown_grace=1
    )
    server = ProxyServer(config, recorders=[])
    for listener in server._servers:
        listener.config.timeout_keep_alive = 0.3  # read by each connection's protocol
    with server:
        yield server


def _closed_after(sock: socket.socket, trickle: bytes = b"") -> tuple[bytes, float]:
    """What the proxy sends until it closes, and when, while `trickle` goes a byte per 50 ms."""
    start = time.monotonic()
    sock.settimeout(0.05)
    received = b""
    for _ in range(100):  # 5 s at most
        if trickle:
            sock.sendall(trickle[:1])
            trickle = trickle[1:] or trickle
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        received += chunk
    else:
        raise AssertionError("the proxy kept the connection open")
    return received, time.monotonic() - start


def test_a_connection_that_sends_nothing_is_closed(impatient: ProxyServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=5) as sock:
        assert _closed_after(sock)[0] == b""


def test_a_head_sent_a_byte_at_a_time_gets_408(impatient: ProxyServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        received, _ = _closed_after(sock, trickle=b"x-slow: " + b"a" * 200)
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    # Meanwhile, and after, the proxy serves the others.
    last = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    assert _exchange(impatient.port, last).startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_partial_head_pipelined_behind_a_request_gets_408(impatient: ProxyServer) -> None:
    # Its timer did not start in the read that ended the request before it: uvicorn's keep-alive
    # timer closed the connection after the first answer, without a 408.
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=5) as sock:
        sock.sendall(_SMALL + b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        received, _ = _closed_after(sock)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received
    assert b'"ok"}HTTP/1.1 408 Request Timeout\r\n' in received


def _answer(sock: socket.socket) -> bytes:
    """One answer, read whole (its length declared, or chunked); its head."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: (\d+)", head, re.IGNORECASE)
    while not (len(body) >= int(length[1]) if length else body.endswith(b"\r\n0\r\n\r\n")):
        body += sock.recv(65536)
    return head


def _closes_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the proxy ends the connection within `seconds` (a FIN or a reset)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("listener", ["api", "ops"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_an_ops_answer_that_leaves_a_body_unread_closes_the_connection(
    impatient: ProxyServer, path: str, listener: str
) -> None:
    # Kept alive, the connection read the unread body's bytes, and one of them stopped the
    # keep-alive timer for good: 300 such connections took every file descriptor of the proxy.
    port = impatient.port if listener == "api" else impatient.ops_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n".encode())
        head = _answer(sock)
        assert b"\r\nconnection: close" in head.lower(), head
        with contextlib.suppress(OSError):  # already closed: the byte meets a reset
            sock.sendall(b"A")
        assert _closes_within(sock, 3)


def test_bytes_after_an_answer_that_left_a_body_unread_have_a_timer(impatient: ProxyServer) -> None:
    # An upload whose upstream cannot be reached gets its 502 before its body is read, and the
    # connection stays open; the body's first byte after it stopped the keep-alive timer.
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 502 ")
        sock.sendall(b"A")
        assert _closes_within(sock, 3)


def test_a_head_sent_in_time_after_a_keep_alive_is_served(impatient: ProxyServer) -> None:
    request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=5) as sock:
        for _ in range(3):  # each head starts a new 0.3 s, split or not
            sock.sendall(request[:10])
            time.sleep(0.15)
            sock.sendall(request[10:])
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            time.sleep(0.15)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_an_http_1_0_client_gets_its_answer_unchunked(fake: FakeUpstream, stream: bool) -> None:
    # RFC 9112 section 6.1: no Transfer-Encoding to an HTTP/1.0 request. Such a client reads a
    # body without Content-Length to the connection's close; chunk sizes would be in its text.
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", shutdown_grace=1)
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    request = (
        f"POST /v1/chat/completions HTTP/1.0\r\nhost: x\r\nauthorization: Bearer sk-test\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}"
    ).encode()
    with ProxyServer(config, recorders=[]) as server:
        reply = _exchange(server.port, request)
    head, _, content = reply.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 200"), head
    assert not any(line.startswith(b"transfer-encoding") for line in lines), head
    assert b"connection: close" in lines
    if stream:
        assert content.startswith(b"data: {") and content.endswith(b"data: [DONE]\n\n"), content[-200:]
        events = [e for e in content.split(b"\n\n") if e]
        assert all(e.startswith(b"data: ") for e in events)  # no chunk sizes between them
    else:
        assert f"content-length: {len(content)}".encode() in lines
        assert json.loads(content)["object"] == "chat.completion"

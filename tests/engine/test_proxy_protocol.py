"""The proxy's httptools protocol keeps h11's protections: request-head limit, absolute-form refusal."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_protocol import MAX_HEAD, http_protocol
from streamtap._proxy_server import ProxyServer


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyServer]:
    if http_protocol() == "h11":
        pytest.skip("httptools is not installed: the proxy runs on h11")
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


def test_heads_under_the_limit_are_served_back_to_back(proxy: ProxyServer) -> None:
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * (MAX_HEAD - 200) + b"\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    reply = _exchange(proxy.port, head, head, last)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 3


def test_absolute_form_target_is_refused(proxy: ProxyServer) -> None:
    request = (
        b"GET http://169.254.169.254/v1/models HTTP/1.1\r\nhost: 169.254.169.254\r\nconnection: close\r\n\r\n"
    )
    assert _exchange(proxy.port, request).startswith(b"HTTP/1.1 404 ")

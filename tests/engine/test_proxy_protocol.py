"""The proxy's httptools protocol keeps h11's protections (request-head limit, absolute-form
refusal) and writes a response's head with its first body bytes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_protocol import MAX_HEAD, HeadWithFirstBody, http_protocol
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


class _RecordingTransport:
    """What a connection's transport is asked to do, for the tests of the head's write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8787), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Cycle:
    def __init__(self) -> None:
        self.transport: object = None


def _holder(loop: asyncio.AbstractEventLoop) -> tuple[_Cycle, _RecordingTransport, HeadWithFirstBody]:
    cycle, transport = _Cycle(), _RecordingTransport()
    holder = HeadWithFirstBody(cycle, transport, loop)  # type: ignore[arg-type]
    cycle.transport = holder
    return cycle, transport, holder


def test_the_head_goes_out_with_the_first_body_in_one_write() -> None:
    async def scenario() -> tuple[_Cycle, _RecordingTransport]:
        cycle, transport, holder = _holder(asyncio.get_running_loop())
        holder.write(b"HEAD")
        assert transport.writes == []  # held
        holder.write(b"BODY1")
        await asyncio.sleep(0)  # the next turn flushes nothing more
        return cycle, transport

    cycle, transport = asyncio.run(scenario())
    assert transport.writes == [b"HEADBODY1"]
    assert cycle.transport is transport  # the rest of the response goes straight to the connection


def test_a_head_without_a_body_in_the_same_turn_goes_out_in_the_next() -> None:
    async def scenario() -> tuple[_RecordingTransport, list[bytes]]:
        cycle, transport, holder = _holder(asyncio.get_running_loop())
        holder.write(b"HEAD")
        await asyncio.sleep(0)
        flushed = list(transport.writes)
        cycle.transport.write(b"BODY1")  # type: ignore[attr-defined]
        return transport, flushed

    transport, flushed = asyncio.run(scenario())
    assert flushed == [b"HEAD"]
    assert transport.writes == [b"HEAD", b"BODY1"]


def test_closing_with_a_head_held_writes_it_first_and_a_closing_transport_gets_nothing() -> None:
    async def scenario() -> tuple[_RecordingTransport, _RecordingTransport]:
        loop = asyncio.get_running_loop()
        _, closed, holder = _holder(loop)
        holder.write(b"HEAD")
        holder.close()
        _, gone, other = _holder(loop)
        other.write(b"HEAD")
        gone.closed = True  # the client left before the flush
        await asyncio.sleep(0)
        return closed, gone

    closed, gone = asyncio.run(scenario())
    assert (closed.writes, closed.closed) == ([b"HEAD"], True)
    assert gone.writes == []


def test_the_proxy_protocol_writes_a_response_head_and_its_body_at_once() -> None:
    """Real uvicorn protocol and httptools parser; only the socket is a recording stand-in."""
    protocol_class = http_protocol()
    if protocol_class == "h11":
        pytest.skip("httptools is not installed: the proxy runs on h11")

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def scenario() -> _RecordingTransport:
        config = uvicorn.Config(
            app, interface="asgi3", lifespan="off", log_level="warning", http=protocol_class
        )
        config.load()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = _RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /v1/stream HTTP/1.1\r\nhost: x\r\n\r\n")
        while not any(write.endswith(b"0\r\n\r\n") for write in transport.writes):
            await asyncio.sleep(0.001)
        protocol.connection_lost(None)
        return transport

    writes = asyncio.run(asyncio.wait_for(scenario(), 10)).writes
    assert len(writes) == 3, writes
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert writes[1:] == [b"9\r\ndata: 2\n\n\r\n", b"0\r\n\r\n"]

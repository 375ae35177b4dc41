"""The proxy's upstream transport against scripted HTTP/1.1 servers on loopback (and its pure parsers)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from streamtap._upstream_http import ChunkedDecoder, ResponseHead, request_head
from streamtap._upstream_pool import UpstreamTransport

from .support import write_self_signed

Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"


class Server:
    """A loopback server running `handler(server, reader, writer)` per connection."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(self, reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def _request(
    port: int, *, scheme: str = "http", host: str = "127.0.0.1", read: float | None = 5.0
) -> httpx2.Request:
    timeout = {"connect": 5.0, "read": read, "write": 5.0, "pool": None}
    return httpx2.Request(
        "POST",
        f"{scheme}://{host}:{port}/v1/chat/completions",
        content=b'{"a":1}',
        extensions={"timeout": timeout},
    )


async def _body(response: httpx2.Response) -> list[bytes]:
    stream: Any = response.stream
    return [chunk async for chunk in stream]


def _answers(*responses: bytes, close: bool = False) -> Handler:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            await server.read_request(reader)
            writer.write(response)
            await writer.drain()
        if not close:
            await reader.read()

    return handler


def _server(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Server:
    return Server(handler, ssl_context)


@pytest.mark.anyio
async def test_content_length_bodies_reuse_one_connection() -> None:
    async with _server(_answers(OK, OK, OK)) as server:
        transport = UpstreamTransport()
        for _ in range(3):
            response = await transport.handle_async_request(_request(server.port))
            assert (response.status_code, b"".join(await _body(response))) == (200, b"hello")
        await transport.aclose()
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert server.requests[0].endswith(b'\r\n\r\n{"a":1}')


@pytest.mark.anyio
async def test_idle_connections_close_as_they_expire_with_no_request_after_them() -> None:
    # They were closed only by the next request's look at the pool: once traffic stopped, every
    # idle connection (up to 512 an upstream) stayed open for good.
    closed = asyncio.Event()

    async def answer_then_wait_for_close(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _answers(OK, OK)(server, reader, writer)  # returns when the client closes
        closed.set()

    async with _server(answer_then_wait_for_close) as server:
        transport = UpstreamTransport(keepalive_expiry=0.3)
        started = asyncio.get_running_loop().time()
        for _ in range(2):  # the second refreshes its idle time: expiry counts from the last
            response = await transport.handle_async_request(_request(server.port))
            assert b"".join(await _body(response)) == b"hello"
            await asyncio.sleep(0.2)
        await asyncio.wait_for(closed.wait(), 5)
        assert asyncio.get_running_loop().time() - started >= 0.2 + 0.3
        assert transport._open == set() and not transport._sweeps
        await transport.aclose()
    assert server.connections == 1


@pytest.mark.anyio
async def test_chunked_body_is_decoded_and_the_connection_reused() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n"
    async with _server(_answers(chunked, OK)) as server:
        transport = UpstreamTransport()
        response = await transport.handle_async_request(_request(server.port))
        assert b"".join(await _body(response)) == b"hello!"
        assert response.headers["transfer-encoding"] == "chunked"
        response = await transport.handle_async_request(_request(server.port))
        assert b"".join(await _body(response)) == b"hello"
        await transport.aclose()
    assert server.connections == 1


@pytest.mark.anyio
async def test_connection_close_and_unread_bodies_are_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    async with _server(_answers(closing, close=True)) as server:
        transport = UpstreamTransport()
        for _ in range(2):
            response = await transport.handle_async_request(_request(server.port))
            assert b"".join(await _body(response)) == b"ok"
        await transport.aclose()
    assert server.connections == 2
    async with _server(_answers(OK, OK)) as server:
        transport = UpstreamTransport()
        response = await transport.handle_async_request(_request(server.port))
        await response.aclose()  # closed before its body was read: that connection is done
        response = await transport.handle_async_request(_request(server.port))
        assert b"".join(await _body(response)) == b"hello"
        await transport.aclose()
    assert server.connections == 2


@pytest.mark.anyio
async def test_a_connection_the_server_closed_while_idle_is_skipped() -> None:
    async with _server(_answers(OK, close=True)) as server:
        transport = UpstreamTransport()
        response = await transport.handle_async_request(_request(server.port))
        assert b"".join(await _body(response)) == b"hello"
        idle = next(iter(transport._idle.values()))
        for _ in range(200):  # until the loop has delivered the server's FIN to the protocol
            if not idle[0].reusable:
                break
            await asyncio.sleep(0.005)
        response = await transport.handle_async_request(_request(server.port))
        assert b"".join(await _body(response)) == b"hello"
        await transport.aclose()
    assert (server.connections, len(server.requests)) == (2, 2)


def _on_its_stream(request: httpx2.Request) -> httpx2.Request:
    """A request built on another's stream, as the engine builds its attempts (`build_request`)."""
    return httpx2.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=request.stream,
        extensions=request.extensions,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("build", [lambda r: r, _on_its_stream], ids=["read-content", "on-its-stream"])
async def test_a_pooled_connection_failing_while_writing_is_retried_once_afresh(
    build: Callable[[httpx2.Request], httpx2.Request],
) -> None:
    async with _server(_answers(OK, OK)) as server:
        transport = UpstreamTransport()
        await _body(await transport.handle_async_request(_request(server.port)))
        pooled = next(iter(transport._idle.values()))[0]
        writes: list[bytes] = []

        async def broken(data: bytes, timeout: float | None) -> None:
            writes.append(data)
            raise httpx2.WriteError("broken pipe")

        pooled.write = broken  # type: ignore[method-assign]
        response = await transport.handle_async_request(build(_request(server.port)))
        assert b"".join(await _body(response)) == b"hello"
        await transport.aclose()
    # One write held the whole request, head and in-memory body; it failed on the stale
    # connection, so the request went again on a fresh one.
    assert len(writes) == 1
    assert writes[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert writes[0].endswith(b'\r\n\r\n{"a":1}')
    assert server.requests[1] == writes[0]
    assert (server.connections, len(server.requests)) == (2, 2)


@pytest.mark.anyio
async def test_an_in_memory_body_without_a_length_goes_chunked() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await reader.readuntil(b"0\r\n\r\n"))
        writer.write(OK)
        await writer.drain()
        await reader.read()

    async with _server(handler) as server:
        transport = UpstreamTransport()
        request = _request(server.port)
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
        bare = httpx2.Request(
            "POST", request.url, headers=headers, stream=request.stream, extensions=request.extensions
        )
        response = await transport.handle_async_request(bare)
        assert b"".join(await _body(response)) == b"hello"
        await transport.aclose()
    assert server.requests[0].endswith(b'\r\n\r\n7\r\n{"a":1}\r\n0\r\n\r\n')


@pytest.mark.anyio
async def test_no_answer_after_the_request_went_out_is_raised_not_resent() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()
        await server.read_request(reader)  # then close without answering

    server = Server(handler)
    async with server:
        transport = UpstreamTransport()
        await _body(await transport.handle_async_request(_request(server.port)))
        with pytest.raises(httpx2.RemoteProtocolError, match="without a response"):
            await transport.handle_async_request(_request(server.port))
        await transport.aclose()
    assert (server.connections, len(server.requests)) == (1, 2)


@pytest.mark.anyio
async def test_errors_are_httpx2_types() -> None:
    async def silent(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def cut(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhell")
        await writer.drain()

    async def garbage(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    transport = UpstreamTransport()
    async with Server(silent) as server:
        with pytest.raises(httpx2.ReadTimeout):
            await transport.handle_async_request(_request(server.port, read=0.05))
    async with Server(cut) as server:
        response = await transport.handle_async_request(_request(server.port))
        with pytest.raises(httpx2.RemoteProtocolError, match="6 bytes before the body's end"):
            await _body(response)
    async with Server(garbage) as server:
        with pytest.raises(httpx2.RemoteProtocolError, match="malformed status line"):
            await transport.handle_async_request(_request(server.port))
    port = server.port  # closed now: refused
    with pytest.raises(httpx2.ConnectError):
        await transport.handle_async_request(_request(port))
    with pytest.raises(httpx2.UnsupportedProtocol):
        await transport.handle_async_request(httpx2.Request("GET", "ftp://127.0.0.1/x"))
    await transport.aclose()
    assert transport._open == set()


@pytest.mark.anyio
async def test_the_engine_can_apply_its_own_deadline_to_each_body_read() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    async with _server(_answers(chunked)) as server:
        transport = UpstreamTransport()
        response = await transport.handle_async_request(_request(server.port))
        network: Any = response.extensions["network_stream"]
        seen: list[float | None] = []
        original = type(network).read

        async def deadline_read(max_bytes: int, timeout: float | None = None) -> bytes:
            seen.append(timeout)
            data: bytes = await original(network, max_bytes, 0.25)
            return data

        network.read = deadline_read
        assert b"".join(await _body(response)) == b"hello"
        await transport.aclose()
    assert seen and all(t == 5.0 for t in seen)


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert_file, key_file = write_self_signed(tmp_path, ip="127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    return server_ctx, ssl.create_default_context(cafile=str(cert_file))


@pytest.mark.anyio
async def test_tls_with_sni_and_verification(tmp_path: Path) -> None:
    server_ctx, client_ctx = _self_signed(tmp_path)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)
    async with _server(_answers(OK, OK), server_ctx) as server:
        transport = UpstreamTransport(ssl_context=client_ctx)
        for _ in range(2):
            response = await transport.handle_async_request(
                _request(server.port, scheme="https", host="localhost")
            )
            assert b"".join(await _body(response)) == b"hello"
        await transport.aclose()
        untrusting = UpstreamTransport(ssl_context=ssl.create_default_context())
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.handle_async_request(_request(server.port, scheme="https", host="localhost"))
        await untrusting.aclose()
    assert names[:1] == ["localhost"]
    assert (
        server.connections == 1
    )  # both requests on one TLS connection; the refused handshake never completed


# --- the pure parsers ---


def test_chunked_decoder_gives_the_same_payload_however_the_bytes_are_split() -> None:
    wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT"
    for cut in range(1, len(wire)):
        decoder = ChunkedDecoder()
        payload = decoder.feed(wire[:cut])
        if not decoder.done:
            payload += decoder.feed(wire[cut:])
        leftover = wire[len(wire) - 4 : cut] if cut >= len(wire) - 4 else b"NEXT"  # what was fed past the end
        assert (payload, decoder.done, decoder.leftover) == (b"hello, world", True, leftover), cut


def test_chunked_decoder_one_whole_chunk_per_read() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b'1a\r\ndata: {"a": 1}\n\n0123456789\r\n') == b'data: {"a": 1}\n\n0123456789'
    assert decoder.feed(b"0\r\n\r\n") == b""
    assert decoder.done


@pytest.mark.parametrize("wire", [b"zz\r\nhello\r\n", b"5\r\nhelloXX", b"-1\r\n", b"1" * 2000])
def test_chunked_decoder_refuses_malformed_framing(wire: bytes) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        ChunkedDecoder().feed(wire)


def test_response_head_framing() -> None:
    head = ResponseHead(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked")
    assert (head.status, head.reason, head.framing, head.close) == (200, b"OK", 2, False)
    assert head.headers == [(b"Content-Type", b"text/event-stream"), (b"Transfer-Encoding", b"chunked")]
    head = ResponseHead(b"HTTP/1.0 200 OK\r\ncontent-length: 3")
    assert (head.framing, head.length, head.close) == (1, 3, True)
    assert ResponseHead(b"HTTP/1.1 204 No Content").body_framing("POST") == 0
    assert ResponseHead(b"HTTP/1.1 200 OK\r\ncontent-length: 3").body_framing("HEAD") == 0
    until_close = ResponseHead(b"HTTP/1.1 200 OK")
    assert (until_close.framing, until_close.close) == (3, True)
    # RFC 9110 8.6: a length repeated, in one field or two, is that length (h11 and so the SDK agree).
    for repeated in (b"content-length: 3, 3", b"content-length: 3\r\ncontent-length: 3,3"):
        head = ResponseHead(b"HTTP/1.1 200 OK\r\n" + repeated)
        assert (head.framing, head.length) == (1, 3)
        assert {v for k, v in head.headers} == {b"3"}  # passed on as the one value
    for bad in (
        b"HTTP/2 200 OK",
        b"HTTP/1.1 200 OK\r\nno colon",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1, ",
    ):
        with pytest.raises(httpx2.RemoteProtocolError):
            ResponseHead(bad)


def test_request_head_refuses_header_injection() -> None:
    assert (
        request_head("GET", b"/v1/models", [(b"Host", b"a")]) == b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    with pytest.raises(httpx2.LocalProtocolError):
        request_head("GET", b"/", [(b"x-a", b"1\r\nx-b: 2")])
    with pytest.raises(httpx2.LocalProtocolError):
        request_head("GET", b"/", [(b"x a", b"1")])


def test_bytes_waiting_on_a_socket_numbered_past_1023_are_seen() -> None:
    """The check that a late loop's deadline finds bytes waiting (a paused proxy) used select(),
    which refuses descriptors from 1024 on: a busy proxy's paused streams failed as stalls."""
    import os
    import resource
    import socket

    from streamtap._upstream_conn import UpstreamConnection

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = 1500
    if hard != resource.RLIM_INFINITY and hard <= high:
        pytest.skip(f"this machine allows {hard} open files, fewer than the {high + 1} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, high + 1), hard))
    ours, theirs = socket.socketpair()
    loop = asyncio.new_event_loop()
    try:
        os.dup2(ours.fileno(), high)
        numbered = socket.socket(fileno=high)

        class Transport:
            def get_extra_info(self, name: str) -> Any:
                return numbered if name == "socket" else None

            def is_closing(self) -> bool:
                return False

        conn = UpstreamConnection(loop)
        conn.transport = Transport()  # type: ignore[assignment]
        assert not conn._readable()
        theirs.send(b"data: waiting\n\n")
        assert conn._readable()
        numbered.close()
    finally:
        ours.close()
        theirs.close()
        loop.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

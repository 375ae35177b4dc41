"""The proxy's upstream transport: HTTP/1.1 on asyncio protocols with an O(1) keep-alive pool.

`httpx2.AsyncHTTPTransport` walks every pooled connection and probes each idle socket on
every request open and close; with hundreds of streams held open that walk was a third of the
proxy's CPU. Here each upstream (scheme, host, port) has a deque of idle connections: a
request takes the most recently used one (the least likely to have been closed by the
server), and a connection goes back only after its response body was read to the end.

Stale connections: the event loop tells a connection's protocol the moment the server
closes it, so a connection closed while idle is skipped when taken from the pool (a flag
check, no syscall). One that fails while its request is written is retried once on a fresh
connection. One that fails after the request went out, before any response byte, is not
resent here: the upstream may have acted on it; the error reaches the engine, which counts it
as a failed attempt in the connect phase and retries it visibly. One that fails while its
request is written because the upstream answered early (a 401 or 413 before the body, then a
close) returns that answer, and the connection is not reused. Errors are the httpx2
exception types the engine classifies (`ConnectError`, `ConnectTimeout`, `ReadTimeout`,
`ReadError`, `RemoteProtocolError`, `WriteError`, `WriteTimeout`).

asyncio only (the proxy runs under uvicorn); door 1 keeps httpx2's own transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from ._upstream_conn import UpstreamConnection
from ._upstream_http import (
    CHUNKED,
    LENGTH,
    MAX_HEAD,
    NO_BODY,
    UNTIL_CLOSE,
    ChunkedDecoder,
    ResponseHead,
    request_head,
)

_READ_SIZE = 64 * 1024
# How long a request that could not be written waits for an answer the upstream sent first;
# it is normally there already (the upstream closed after sending it).
_EARLY_ANSWER_WAIT = 1.0
_Key = tuple[str, str, int]


class UpstreamTransport(httpx2.AsyncBaseTransport):
    """An `httpx2.AsyncBaseTransport` for one process's upstream traffic.

    Args:
        ssl_context: for https upstreams (default: httpx2's, which honours SSL_CERT_FILE).
        max_keepalive: idle connections kept per upstream; more are closed.
        keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_keepalive: int = 512,
        keepalive_expiry: float = 15.0,
    ) -> None:
        self._ssl = ssl_context
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._idle: dict[_Key, deque[UpstreamConnection]] = {}
        # Per upstream, the timer that closes its idle connections as they expire: without it
        # they waited for the next request, open for good once traffic stopped.
        self._sweeps: dict[_Key, asyncio.TimerHandle] = {}
        self._open: set[UpstreamConnection] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"the upstream URL must be http or https, got {scheme!r}")
        if not url.host:
            raise httpx2.UnsupportedProtocol("the upstream URL has no host")
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        headers = request.headers.raw
        if not any(name.lower() == b"host" for name, _ in headers):
            headers = [(b"Host", url.netloc), *headers]
        head = request_head(request.method, url.raw_path, headers)
        body = _body_bytes(request)
        close_after = any(
            name.lower() == b"connection" and b"close" in value.lower() for name, value in headers
        )
        while True:
            conn, reused = await self._acquire(key, timeouts.get("connect"))
            try:
                if body is not None:
                    await conn.write(head + body, timeouts.get("write"))
                else:
                    await conn.write(head, timeouts.get("write"))
                    await _write_stream(conn, request, timeouts.get("write"))
            except httpx2.WriteError:
                # An upstream may answer before it has taken the whole request (401, 413) and
                # close: that answer, already here, is the response.
                early = await self._early_answer(conn)
                if early is None:
                    self.discard(conn)
                    if reused and body is not None:
                        continue  # closed while idle, and the request never left: once more, afresh
                    raise
                response, close_after = early, True  # the rest of the request can never follow
                break
            except BaseException:
                self.discard(conn)
                raise
            try:
                response = await _read_head(conn, timeouts.get("read"))
            except BaseException:
                # Once the request went out, the upstream may have acted on it: no silent resend.
                # The engine sees the error (a connect-phase failure) and decides, visibly.
                self.discard(conn)
                raise
            break
        framing = response.body_framing(request.method)
        network = NetworkStream(conn)
        stream = _Body(self, network, key, response, framing, timeouts.get("read"), close_after)
        if framing == NO_BODY:
            stream.finish()
        return httpx2.Response(
            response.status,
            headers=response.headers,
            stream=stream,
            extensions={
                "http_version": b"HTTP/1.1" if response.minor else b"HTTP/1.0",
                "reason_phrase": response.reason,
                "network_stream": network,
            },
        )

    async def _early_answer(self, conn: UpstreamConnection) -> ResponseHead | None:
        """The response head an upstream sent before it stopped taking the request, or None."""
        try:
            return await _read_head(conn, _EARLY_ANSWER_WAIT)
        except httpx2.TransportError:
            return None
        except BaseException:
            self.discard(conn)
            raise

    async def _acquire(self, key: _Key, timeout: float | None) -> tuple[UpstreamConnection, bool]:
        if self._closed:
            raise httpx2.ConnectError("the transport is closed")
        idle = self._idle.get(key)
        loop = asyncio.get_running_loop()
        while idle:
            conn = idle.pop()
            if conn.reusable and loop.time() - conn.idle_since < self._expiry:
                return conn, True
            self.discard(conn)
        return await self._connect(loop, key, timeout), False

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, key: _Key, timeout: float | None
    ) -> UpstreamConnection:
        scheme, host, port = key
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx2.create_ssl_context()
            context = self._ssl
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                ),
                timeout,
            )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"no connection to {host}:{port} within {timeout} s") from None
        except OSError as error:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {error}") from error
        self._open.add(conn)
        return conn

    def release(self, conn: UpstreamConnection, key: _Key) -> None:
        """Take back a connection whose response was read to the end."""
        if self._closed or not conn.reusable:
            self.discard(conn)
            return
        idle = self._idle.setdefault(key, deque())
        if len(idle) >= self._max_keepalive:
            self.discard(idle.popleft())
        conn.idle_since = conn.loop.time()
        idle.append(conn)
        if key not in self._sweeps:  # one timer an upstream, not one a request
            self._sweeps[key] = conn.loop.call_at(
                idle[0].idle_since + self._expiry, self._sweep, key, conn.loop
            )

    def _sweep(self, key: _Key, loop: asyncio.AbstractEventLoop) -> None:
        """Close the upstream's expired idle connections; come back when the next one expires."""
        del self._sweeps[key]
        now = loop.time()
        idle = self._idle.get(key)
        while idle and now - idle[0].idle_since >= self._expiry:  # the oldest are on the left
            self.discard(idle.popleft())
        if idle and not self._closed:
            self._sweeps[key] = loop.call_at(idle[0].idle_since + self._expiry, self._sweep, key, loop)

    def discard(self, conn: UpstreamConnection) -> None:
        """Close a connection and forget it."""
        conn.close()
        self._open.discard(conn)

    async def aclose(self) -> None:
        self._closed = True
        for timer in self._sweeps.values():
            timer.cancel()
        self._sweeps.clear()
        self._idle.clear()
        for conn in list(self._open):
            self.discard(conn)


def _body_bytes(request: httpx2.Request) -> bytes | None:
    """The request's body when it is in memory, so head and body go in one write; else None.

    A request built on another's stream (the engine's attempts, `build_request`) holds the
    bytes in a `ByteStream` it has not read; they go as they are only when its headers give
    their length, else chunked, as any stream. None is a streamed body: sent once, so never
    retried.
    """
    try:
        return request.content
    except httpx2.RequestNotRead:
        stream = request.stream
        if isinstance(stream, httpx2.ByteStream) and "content-length" in request.headers:
            return b"".join(stream)
        return None


async def _write_stream(conn: UpstreamConnection, request: httpx2.Request, timeout: float | None) -> None:
    chunked = "content-length" not in request.headers
    stream: Any = request.stream
    async for part in stream:
        if part:
            await conn.write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part, timeout)
    if chunked:
        await conn.write(b"0\r\n\r\n", timeout)


async def _read_head(conn: UpstreamConnection, timeout: float | None) -> ResponseHead:
    """The final response head (interim 1xx responses are skipped)."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HEAD:
                raise httpx2.RemoteProtocolError(f"the response head exceeds {MAX_HEAD} bytes")
            more = await UpstreamConnection.read(conn, _READ_SIZE, timeout)
            if not more:
                raise httpx2.RemoteProtocolError("the upstream closed the connection without a response")
            data += more
            continue
        head = ResponseHead(data[:end])
        data = data[end + 4 :]
        if head.status == 101:
            raise httpx2.RemoteProtocolError("the upstream switched protocols; not supported")
        if head.status >= 200:
            conn.unread(data)
            return head


class NetworkStream:
    """A response's ``network_stream`` extension: the reads of one body, on its connection.

    The engine may set an instance attribute ``read`` that applies its own deadline to every
    read (`_async_body.deadline_reads`); the body looks ``read`` up on each read so the override
    takes effect, and it dies with the response, so it never reaches the next request.
    """

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.conn.read(max_bytes, timeout)

    def get_extra_info(self, name: str) -> Any:
        return self.conn.get_extra_info(name)


class _Body(httpx2.AsyncByteStream):
    """A response body: raw payload bytes per network read; the connection goes back at the end."""

    def __init__(
        self,
        pool: UpstreamTransport,
        network: NetworkStream,
        key: _Key,
        head: ResponseHead,
        framing: int,
        timeout: float | None,
        close_after: bool,
    ) -> None:
        self._pool = pool
        self._network = network
        self._conn: UpstreamConnection | None = network.conn
        self._key = key
        self._framing = framing
        self._length = head.length
        self._timeout = timeout
        self._keep = not head.close and not close_after and framing != UNTIL_CLOSE
        # Dropped unread (an abandoned call): the socket is closed rather than left to linger.
        self._finalizer = weakref.finalize(self, _drop, pool, network.conn)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        network = self._network
        timeout = self._timeout
        try:
            if self._framing == CHUNKED:
                decoder = ChunkedDecoder()
                while not decoder.done:
                    data = await network.read(_READ_SIZE, timeout)
                    if not data:
                        raise httpx2.RemoteProtocolError(
                            "the upstream closed the connection inside a chunked body"
                        )
                    payload = decoder.feed(data)
                    if decoder.done:
                        conn.unread(decoder.leftover)
                        self.finish()  # before the last yield: the connection is free already
                    if payload:
                        yield payload
            elif self._framing == LENGTH:
                remaining = self._length
                while remaining:
                    data = await network.read(min(remaining, _READ_SIZE), timeout)
                    if not data:
                        raise httpx2.RemoteProtocolError(
                            f"the upstream closed the connection {remaining} bytes before the body's end"
                        )
                    remaining -= len(data)
                    if not remaining:
                        self.finish()
                    yield data
            else:
                while data := await network.read(_READ_SIZE, timeout):
                    yield data
                self.finish()
        except BaseException:
            self._abandon()
            raise

    def finish(self) -> None:
        """The body was read to its end: the connection may serve the next request."""
        conn, self._conn = self._conn, None
        self._finalizer.detach()
        if conn is not None:
            if self._keep:
                self._pool.release(conn, self._key)
            else:
                self._pool.discard(conn)

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        self._finalizer.detach()
        if conn is not None:
            self._pool.discard(conn)

    async def aclose(self) -> None:
        self._abandon()


def _drop(pool: UpstreamTransport, conn: UpstreamConnection) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: so is the socket
        conn.loop.call_soon_threadsafe(pool.discard, conn)

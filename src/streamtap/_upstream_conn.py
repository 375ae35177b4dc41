"""One HTTP/1.1 connection to the upstream, on an asyncio protocol (no stream layers in between).

The connection is what the engine sees as a response's ``network_stream`` extension: its
coroutine method ``read(max_bytes, timeout)`` is looked up on the instance on every read, so
the engine can install a per-body override that applies the attempt's moving deadline
(`_async_body.deadline_reads`). The pool removes any such override before reusing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import socket
from typing import Any, cast

import httpx2

_PAUSE_AT = 256 * 1024  # unread bytes at which the socket stops being read (flow control)
_RESUME_AT = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    """A client connection: bytes arrive through protocol callbacks, readers await them.

    Args:
        loop: the event loop the connection lives on.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.received = 0  # bytes ever received: did a request get any answer at all?
        self.idle_since = 0.0
        self._data = b""
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._deadline = math.inf  # when the read now waiting times out
        self._timer: asyncio.TimerHandle | None = None

    # --- protocol callbacks (called by the event loop) ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self._data = self._data + data if self._data else data
        if len(self._data) > _PAUSE_AT and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport: this client never writes after the peer finished

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.transport is not None:
            # The loop drops a connection whose write failed (the upstream reset it) without
            # reading what arrived before the reset: often the answer that explains it.
            unread = _unread(self.transport)
            if unread:
                self.received += len(unread)
                self._data += unread
        self._eof = True
        self._error = exc
        self._wake()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    # --- what the transport and the engine call ---

    @property
    def reusable(self) -> bool:
        """Open, and nothing unexpected arrived while idle (no stray bytes, no EOF)."""
        transport = self.transport
        return not self._eof and not self._data and transport is not None and not transport.is_closing()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """The next bytes received (at most `max_bytes`), b"" at the end of the connection.

        Raises:
            httpx2.ReadTimeout: nothing arrived within `timeout` seconds.
            httpx2.ReadError: the connection broke.
        """
        if not self._data and not self._eof:
            waiter: asyncio.Future[bool] = self.loop.create_future()
            self._waiter = waiter
            if timeout is not None:
                self._arm(timeout)
            else:
                self._deadline = math.inf
            try:
                await waiter
            finally:
                self._waiter = None
        data = self._data
        if data:
            if len(data) > max_bytes:
                self._data, data = data[max_bytes:], data[:max_bytes]
            else:
                self._data = b""
            if self._reading_paused and len(self._data) < _RESUME_AT and self.transport is not None:
                self._reading_paused = False
                self.transport.resume_reading()
            return data
        if self._error is not None:
            raise httpx2.ReadError(f"the connection broke: {self._error!r}")
        if self._eof:
            return b""
        raise httpx2.ReadTimeout(f"no data from the upstream within {timeout} s")

    def _arm(self, timeout: float) -> None:
        # One timer per connection, moved only when a deadline comes earlier than the one it
        # is set for: most reads end long before their deadline, and creating and cancelling
        # a timer per read was a tenth of the proxy's CPU.
        self._deadline = deadline = self.loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self._deadline == math.inf:
            return  # no read waiting: the next one arms the timer again
        if self.loop.time() >= self._deadline:
            if self._readable():
                # Bytes wait in the socket that the loop has not read yet: it ran late (the
                # process was paused; uvloop runs timers before polling). No stall: look again
                # once the loop has read them.
                self._timer = self.loop.call_at(self.loop.time() + 0.001, self._on_timer)
                return
            waiter.set_result(False)
        else:  # the deadline moved on since the timer was set
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _readable(self) -> bool:
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or transport is None or transport.is_closing() or self._reading_paused:
            return False
        try:  # poll, not select: select refuses descriptors from 1024 on, a busy proxy's
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return False

    def unread(self, data: bytes) -> None:
        """Put back bytes read past the end of a message."""
        if data:
            self._data = data + self._data

    async def write(self, data: bytes, timeout: float | None) -> None:
        """Send `data`; wait for the buffer to drain only when the socket pushes back."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._eof:
            raise httpx2.WriteError("the connection is closed")
        transport.write(data)
        drain = self._drain
        if drain is not None:
            try:
                await asyncio.wait_for(asyncio.shield(drain), timeout)
            except TimeoutError:
                raise httpx2.WriteTimeout(
                    f"the upstream took over {timeout} s to accept the request"
                ) from None
        if self._error is not None:
            raise httpx2.WriteError(f"the connection broke: {self._error!r}")

    def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        self._eof = True

    def get_extra_info(self, name: str) -> Any:
        """Like httpcore's network streams: e.g. "ssl_object", "peername"."""
        return self.transport.get_extra_info(name) if self.transport is not None else None


def _unread(transport: asyncio.Transport) -> bytes:
    """What the kernel still holds for a plain TCP connection the event loop gave up on (a reset
    met by a write): read from a duplicate of its socket, which the loop closes only after
    `connection_lost`. Nothing over TLS: those bytes are records only the TLS layer could read."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return b""
    parts: list[bytes] = []
    size = 0
    # OSError: closed already, or nothing more to read (the reset, or EAGAIN).
    with contextlib.suppress(OSError, ValueError), socket.socket(fileno=os.dup(sock.fileno())) as raw:
        raw.setblocking(False)
        while size < _PAUSE_AT and (piece := raw.recv(_PAUSE_AT)):
            parts.append(piece)
            size += len(piece)
    return b"".join(parts)

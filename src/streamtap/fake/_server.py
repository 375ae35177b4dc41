"""The socket side: asyncio streams + h11 parsing, executing response plans byte for byte.

An ASGI server would refuse to reset a connection or leave a chunked body unfinished, which
is exactly what the fault catalogue needs; so requests are parsed with h11 and responses are
written by executing `_plan` actions on the raw transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

import h11

from ._app import App, Request
from ._errors import REASONS, error_body
from ._plan import Action, Close, End, Head, Pause, Reset, Write, json_bytes

log = logging.getLogger("streamtap.fake")

_MAX_BODY = 16 * 1024 * 1024
_READ_SIZE = 65536


class _ClientGone(Exception):
    """The client closed its side while we were waiting."""


class _Connection:
    """One client connection: h11 state plus a single reader, so waits notice disconnects."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.h11 = h11.Connection(h11.SERVER)
        self._reader = reader
        self._writer = writer
        # At most one read is in flight; pauses wait on it to notice a client leaving early.
        self._pending: asyncio.Future[bytes] | None = None

    async def _recv(self, timeout: float | None = None) -> bytes | None:
        """Next bytes from the client (b"" at EOF), or None if `timeout` passed first."""
        if self._pending is None:
            if timeout is None:
                return await self._reader.read(_READ_SIZE)
            self._pending = asyncio.ensure_future(self._reader.read(_READ_SIZE))
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return None
        data = self._pending.result()
        self._pending = None
        return data

    async def read_request(self) -> Request | None:
        """The next complete request, or None when the client closed between requests."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self._recv()
                self.h11.receive_data(data or b"")
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                headers = tuple(
                    (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
                )
                return Request(
                    request.method.decode("ascii"), request.target.decode("latin-1"), headers, bytes(body)
                )
            else:  # ConnectionClosed or PAUSED
                return None

    async def pause(self, seconds: float) -> None:
        """Send nothing for `seconds`; raise `_ClientGone` as soon as the client disconnects."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            data = await self._recv(remaining)
            if data is None:
                return
            if not data:
                raise _ClientGone
            self.h11.receive_data(data)  # a pipelined request: kept for the next cycle

    async def _flush(self) -> None:
        await self._writer.drain()
        transport = self._writer.transport
        # drain() returns below the high-water mark; an abort must not discard sent chunks.
        for _ in range(1000):
            if transport.is_closing() or transport.get_write_buffer_size() == 0:
                return
            await asyncio.sleep(0.001)

    async def execute(self, plan: list[Action], *, head_only: bool = False) -> bool:
        """Run a plan; True when the connection can serve another request.

        Args:
            plan: the actions to run.
            head_only: answer a HEAD request: headers only, no body bytes, no pauses.
        """
        for action in plan:
            if head_only and isinstance(action, (Write, Pause)):
                continue
            if isinstance(action, Head):
                headers = list(action.headers)
                if action.length is not None:
                    headers.append(("content-length", str(action.length)))
                reason = REASONS.get(action.status, "")
                self._send(h11.Response(status_code=action.status, headers=headers, reason=reason))
            elif isinstance(action, Write):
                self._send(h11.Data(data=action.data))
                await self._writer.drain()
            elif isinstance(action, Pause):
                await self.pause(action.seconds)
            elif isinstance(action, End):
                self._send(h11.EndOfMessage())
                await self._writer.drain()
                return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
            elif isinstance(action, Close):
                await self._flush()
                self._writer.close()
                return False
            elif isinstance(action, Reset):
                await self._flush()
                self.reset()
                return False
        return False

    def _send(self, event: h11.Response | h11.Data | h11.EndOfMessage) -> None:
        data = self.h11.send(event)
        if data:
            self._writer.write(data)

    async def send_protocol_error(self, status: int) -> None:
        """Answer a request h11 could not parse, if a response can still be started."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json_bytes(error_body("Malformed HTTP request.", "invalid_request_error"))
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        # The client may be gone already (it left mid-body): there is no one to answer then.
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError, OSError):
            self._send(h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, "")))
            self._send(h11.Data(data=body))
            self._send(h11.EndOfMessage())
            await self._flush()

    def reset(self) -> None:
        """Abort with an RST: linger on, timeout 0, then close."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    def close(self, *, graceful: bool = True) -> None:
        """Release the connection (idempotent): flush then FIN, or drop at once."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        lost = self._reader.exception()
        if lost is not None:
            # How the connection was lost (a reset met by a read or a write), kept by the
            # reader with a traceback through this connection's frames, which hold the reader:
            # let go of the frames, or each such connection waits for the cyclic collector.
            lost.__traceback__ = None
        if self._writer.transport.is_closing():
            return
        if graceful:
            self._writer.close()
        else:
            self._writer.transport.abort()


class Server:
    """An HTTP/1.1 keep-alive server answering with the plans `app` makes.

    Args:
        app: maps requests to plans.
        host: interface to bind.
        port: TCP port, 0 for a free one.
    """

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connection_count(self) -> int:
        """How many client connections are open right now."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind and start accepting connections in the running loop."""
        # A deep backlog: load benchmarks open hundreds of connections at once.
        self._server = await asyncio.start_server(self._serve, self._host, self._port, backlog=2048)

    async def stop(self, timeout: float = 3.0) -> None:
        """Stop accepting, cancel every connection and wait for them (at most `timeout`)."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        connection = _Connection(reader, writer)
        graceful = True
        try:
            while True:
                request = await connection.read_request()
                if request is None:
                    break
                plan = self._app.handle(request)
                if not await connection.execute(plan, head_only=request.method == "HEAD"):
                    break
                connection.h11.start_next_cycle()
        except h11.RemoteProtocolError as err:
            await connection.send_protocol_error(err.error_status_hint)
        except (_ClientGone, ConnectionError, OSError):
            pass  # the client left; nothing to answer
        except h11.LocalProtocolError as err:
            log.debug("fake upstream: cannot answer this request over HTTP/1.1: %s", err)
        except asyncio.CancelledError:
            graceful = False  # stopping: do not wait for a client that may not read
            if not self._stopping:
                raise
            # Cancelled by stop(): end normally, since asyncio's stream callback logs an
            # error for a cancelled connection task on Python 3.11.
        except Exception:
            log.exception("fake upstream: unexpected error while serving a connection")
        finally:
            connection.close(graceful=graceful)
            self._connections.discard(task)

"""The proxy's HTTP/1.1 server protocol: uvicorn's httptools protocol, with h11's protections.

httptools (llhttp) parses in C where h11 parses in Python; with uvloop (libuv) under it the
proxy's CPU per relayed event went from 119 to 92 µs (docs/benchmarks.md, "What changed, step
by step"). httptools is a dependency, so the proxy has one protocol and one set of protections
on every platform; uvloop is its event loop wherever uvloop installs (CPython, not Windows).

llhttp enforces no limit on a request's head, which h11 did for us
(`h11_max_incomplete_event_size`): `LimitedHttpToolsProtocol` refuses a request line plus
headers over `MAX_HEAD` bytes with 431 and closes the connection. To count every head's bytes
however the client's writes and pipelining split them, a read goes to the parser a part at a
time, each ending where a message may end: a head at its blank line, a Content-Length body
after its length, a chunked body at its next blank line (its last chunk and trailers end with
one). Fed whole, a read would take the heads pipelined after the first message's end past the
count. It also passes an absolute-form request target on whole, as h11 does, so the proxy
refuses it.

The proxy switches to no other protocol. llhttp stops at a head that asks for one
(`Connection: upgrade` with `Upgrade`, or `CONNECT`) and skips its body, which the parser then
reads as the next request: a body smuggled a request past the proxy's checks, and uvicorn
served the first with an empty body. Such a request with a body, and `CONNECT`, get a 400
before the app sees them, and the connection closes. Without a body the upgrade is ignored, as
RFC 9110 (section 7.8) lets a server do (`curl --http2` asks for h2c on every request): the
request is served as HTTP/1.1, and what follows it parsed as the next request.

Neither of uvicorn's protocols bounds the time a head takes: its keep-alive timer runs only
between requests and stops at the first byte, so a connection that never sends a byte, or
sends its head a byte at a time (slowloris), was held for ever. Here a head must be whole
within the keep-alive timeout (15 s) of the connection opening or of its own first byte; a
partial one then gets 408, and either way the connection is closed. Bytes that arrive once
every request has its answer (the rest of a body the app did not read: one byte of it held the
connection for ever) start the same timer: by its end the next request must have come whole.

An HTTP/1.0 client knows no chunked coding, and RFC 9112 (section 6.1) forbids sending it one;
uvicorn's httptools protocol chunks every body without a Content-Length whatever the request's
version. Here such a body is sent as it is and ends with the connection (HTTP/1.0 connections
are closed after each answer anyway), as h11 does.

A refused connection closes lingering, as nginx's `lingering_close` does: the answer goes, then
a FIN, and whatever the client still sends is read and dropped for up to `LINGER` seconds or
until it closes too. Closed at once, the socket would answer the client's next bytes with a
reset, and a client still sending its head could lose the 408 or 431 before it read it. A
request refused behind pipelined ones still being answered gets its answer after theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import socket
import struct
import weakref
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ._dialect import error_object
from ._proxy_http import Headers, declared_length, header

MAX_HEAD = 64 * 1024  # a request's line and headers together
LINGER = 2.0  # seconds a refused connection's late bytes are read and dropped before it closes
_END = b"\r\n\r\n"
ABORT = "streamtap.abort"  # the scope key of the connection's abort, for the app


def has_uvloop() -> bool:
    """uvloop is a dependency where it installs (CPython, not Windows); asyncio elsewhere."""
    return importlib.util.find_spec("uvloop") is not None


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads over `MAX_HEAD` bytes or too slow."""

    _head_seen = 0  # bytes of the current request's head received so far
    _in_head = True  # between requests, the next bytes are a head
    _tail = b""  # the last bytes of the head or body so far, so "\r\n\r\n" split across reads is found
    _body_left: int | None = 0  # bytes of the current body not yet fed; None: chunked
    _guessed = False  # where this read ends the current chunked body was looked for already
    # Runs while a head is awaited or partial, or bytes came with every request answered.
    _head_timer: asyncio.TimerHandle | None = None
    _lingering = False  # refused: what arrives now is dropped until the connection closes
    _refusal: bytes | None = None  # the refusal waiting for the answers before it to be sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(cast(asyncio.Transport, transport))
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._unset_keepalive_if_required()  # as uvicorn does: bytes came
        self._guessed = False
        view, at = memoryview(data), 0  # the parser takes a memoryview's slices as they are
        while at < len(data) and not self._lingering and not self.transport.is_closing():
            end = self._part_end(data, at)
            if self._in_head:
                if self._head_seen + end - at > MAX_HEAD:
                    self._refuse_head()
                    return
                self._head_seen += end - at  # the parser's callbacks reset it once the head is whole
            elif self._body_left:
                self._body_left -= end - at
            self._tail = (self._tail + data[max(at, end - 3) : end])[-3:]
            at += self._feed(view[at:end])
        if self._head_timer is None and not self._lingering and (self._head_seen or self._answered()):
            # A partial head, or bytes with every request answered (the rest of a body the app
            # left unread): the timer uvicorn stopped at the first byte is not started again.
            self._time_head()

    def _answered(self) -> bool:
        """Whether every request parsed so far has its whole answer."""
        return self.cycle is None or self.cycle.response_complete

    def _feed(self, part: memoryview) -> int:
        """Parse `part` (uvicorn's `data_received`, but for an upgrade); how many of its bytes
        the parser took."""
        try:
            self.parser.feed_data(part)
        except httptools.HttpParserUpgrade as upgrade:
            # The parser stopped after an upgrade's head. One with a body was refused
            # (`on_headers_complete`); one without was served as HTTP/1.1, and what follows it
            # is the next request. uvicorn would log its warnings and drop those bytes.
            return int(upgrade.args[0])
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
        return len(part)

    def _part_end(self, data: bytes, at: int) -> int:
        """Where the part of `data` from `at` that the parser takes next ends: at the end of a
        Content-Length body; for a chunked body, where its usual last chunk ends, looked for once
        a read (`last_chunk_end`), else at the end of the read; else (a head) at the next blank
        line, else at the end of the read.

        A chunked body is not cut at every blank line in it: a body of blank lines went to the
        parser four bytes at a time, a Python loop's turn each (0.65 s of the event loop per MiB,
        every stream stalled meanwhile). A head pipelined behind a chunked body whose end is not
        found so (an extension on its last chunk, trailers, a fake end in its data, an end split
        across reads) is counted from the next read on: the bypass is one read at most."""
        if not self._in_head:
            if self._body_left:
                return min(len(data), at + self._body_left)
            if self._body_left is None:
                if self._guessed:
                    return len(data)
                self._guessed = True
                end = last_chunk_end(self._tail, data, at)
                return len(data) if end < 0 else end
        end = blank_line_end(self._tail, data, at)
        return len(data) if end < 0 else end

    def _time_head(self) -> None:
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        timer, self._head_timer = self._head_timer, None
        if timer is not None:
            timer.cancel()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._lingering or self.transport.is_closing():
            return
        if not self._answered():
            self._time_head()  # a pipelined head, behind a response still going: wait on
            return
        if self._head_seen:
            self._answer_and_close(408, b"Request Timeout", b"request line and headers took too long")
        else:
            self.transport.close()

    def on_headers_complete(self) -> None:
        # The parser's word, not the bytes': in a read holding pipelined requests, the next
        # head may end after the previous message did, and what follows it is a body.
        self._in_head, self._head_seen, self._tail = False, 0, b""
        self._body_left = body_length(self.headers)
        self._stop_head_timer()
        if self.parser.should_upgrade():
            refused = upgrade_refusal(self.parser.get_method(), self._body_left)
            if refused is not None:
                self._answer_and_close(400, b"Bad Request", refused, b"application/json")
                return  # no request for the app: it never runs
        super().on_headers_complete()
        # What the app may do that ASGI has no word for: end the connection at once (`reset`).
        # Weakly: the scope is this protocol's, and a bound method in it would make a reference
        # cycle per request, left to the collector, whose pauses stop every stream at once.
        self.scope[ABORT] = weakref.WeakMethod(self.reset)  # type: ignore[literal-required]
        if self.scope["http_version"] == "1.0" and self.cycle is not None and self.cycle.scope is self.scope:
            _close_delimited(self.cycle)
        if not self.url.startswith(b"/") and "raw_path" in self.scope:
            # An absolute-form target: httptools reports only its path; h11 reports it whole,
            # and the proxy refuses it (it never forwards to a host a client names).
            self.scope["raw_path"] = self.url

    def reset(self) -> None:
        """End the connection at once, with a reset: for a client that stopped reading
        (`ClientWatch`), whose connection a close would hold, its socket and buffers (megabytes
        in the kernel alone), until it read what it never will."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # no lingering: the unsent bytes are dropped
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def on_message_complete(self) -> None:
        if self._lingering:
            return  # the message of a refused upgrade, which has no cycle
        super().on_message_complete()
        # The next request's head starts (pipelined or after keep-alive).
        self._in_head, self._tail, self._guessed = True, b"", False

    def _refuse_head(self) -> None:
        self._answer_and_close(431, b"Request Header Fields Too Large", b"request line and headers too large")

    def _answer_and_close(
        self, status: int, reason: bytes, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
    ) -> None:
        self._stop_head_timer()
        self._lingering = True  # nothing after the refused request is parsed
        answer = b"HTTP/1.1 %d %b\r\ncontent-type: %b\r\n" % (status, reason, content_type)
        answer += b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body)
        if not self._answered():
            # Pipelined behind requests still being answered: written now, it would land inside
            # their answers. It follows the last of them (`on_response_complete`).
            self._refusal = answer
            return
        self._close_with(answer)

    def _close_with(self, answer: bytes) -> None:
        self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._refusal is not None and self.cycle.response_complete:  # the last request's answer
            self._unset_keepalive_if_required()  # armed by uvicorn: the refusal closes instead
            answer, self._refusal = self._refusal, None
            self._close_with(answer)
        elif self._head_seen:
            # A head pipelined behind this answer is partial: its own timer bounds it, and
            # uvicorn's keep-alive timer would close the connection without its 408.
            self._unset_keepalive_if_required()


def blank_line_end(tail: bytes, data: bytes, at: int) -> int:
    """The offset in `data` just past the first "\r\n\r\n" of `tail` (the bytes before
    `data[at]`) and `data[at:]`, or -1 when there is none."""
    if tail:
        edge = (tail + data[at : at + 3]).find(_END)
        if edge >= 0:
            return at + edge + len(_END) - len(tail)
    end = data.find(_END, at)
    return end + len(_END) if end >= 0 else -1


_LAST_CHUNK = b"\r\n0\r\n\r\n"  # a chunked body's usual end: a last chunk with no extension, no trailers


def last_chunk_end(tail: bytes, data: bytes, at: int) -> int:
    """The offset in `data` just past the first usual end of a chunked body in `tail` (the bytes
    of the body before `data[at]`; empty right after its head) and `data[at:]`, or -1."""
    if not tail and data.startswith(_LAST_CHUNK[2:], at):  # an empty body
        return at + len(_LAST_CHUNK) - 2
    found = (tail + data[at:]).find(_LAST_CHUNK)
    return -1 if found < 0 else at + found + len(_LAST_CHUNK) - len(tail)


def upgrade_refusal(method: bytes, body_length: int | None) -> bytes | None:
    """The JSON error body refusing a request that asks for an upgrade, as the proxy's other
    refusals are written (the OpenAI API's shape); None for one it serves, ignoring the upgrade
    (no body, not `CONNECT`). `body_length`: as `body_length` gives it."""
    if method == b"CONNECT":
        message = "the proxy does not tunnel: CONNECT is not supported"
    elif body_length != 0:
        message = (
            "the proxy does not switch protocols, and a request with a body cannot ask it to: "
            "send it without Connection: upgrade"
        )
    else:
        return None
    return json.dumps({"error": error_object("upgrade_not_supported", message)}).encode()


def body_length(headers: Headers) -> int | None:
    """The length of the body after a head the parser accepted: its Content-Length, 0 for none,
    None for chunked (llhttp refuses a request's Transfer-Encoding that does not end in
    chunked, and one beside a Content-Length)."""
    return None if header(headers, b"transfer-encoding") is not None else declared_length(headers)


def _close_delimited(cycle: RequestResponseCycle) -> None:
    """Have `cycle` (of an HTTP/1.0 request, which uvicorn never keeps alive) send a body that has
    no Content-Length unchunked, to the connection's close."""
    send = cycle.send
    unframed = False

    async def close_delimited(message: Any) -> None:
        nonlocal unframed
        kind = message["type"]
        if kind == "http.response.start":
            unframed = not any(name.lower() == b"content-length" for name, _ in message.get("headers", ()))
            if unframed:
                cycle.chunked_encoding = False  # decided: uvicorn adds no transfer-encoding
        elif kind == "http.response.body" and unframed:
            # uvicorn counts a body against its Content-Length; this one's is what it sends.
            cycle.expected_content_length = len(message.get("body", b""))
        await send(message)

    cycle.send = close_delimited  # type: ignore[method-assign]

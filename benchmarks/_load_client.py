"""The load generator of proxy_load.py: N keep-alive connections streaming chat completions.

A minimal HTTP/1.1 client on asyncio protocols, so the client's own cost stays small and
identical for every target: one request at a time per connection, chunked or
length-delimited bodies, SSE events split on blank lines, all parsed in `data_received`
callbacks (no coroutine wakes per read). A content event is a chunk whose delta carries
non-empty ``content``; time to first token is measured from just before the request is written
to the moment the first content event has been read. Run in its own process by proxy_load.py,
on uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

_BUCKET_S = 0.1  # events are counted per 100 ms, so the steady phase can be cut out afterwards
_CONTENT = b'"content":"'
_MAX_HEAD = 64 * 1024


@dataclass
class LoadResult:
    """What one load run saw at the client."""

    ttft_s: list[float] = field(default_factory=list)  # streams started in the steady window
    buckets: list[int] = field(default_factory=list)  # content events per 100 ms since start
    streams: int = 0  # completed with [DONE] and the expected content count
    bad_streams: int = 0  # errors, wrong status, missing [DONE] or wrong count
    events: int = 0  # content events in the whole run
    first_error: str | None = None

    def count(self, now: float, start: float) -> None:
        index = int((now - start) / _BUCKET_S)
        while len(self.buckets) <= index:
            self.buckets.append(0)
        self.buckets[index] += 1
        self.events += 1

    def events_per_s(self, since: float, until: float) -> float:
        low, high = round(since / _BUCKET_S), round(until / _BUCKET_S)
        return sum(self.buckets[low:high]) / (until - since)


def is_content(data: bytes) -> bool:
    """Whether an SSE data payload is a chat chunk with non-empty delta content."""
    at = data.find(_CONTENT)
    return at >= 0 and data[at + len(_CONTENT) : at + len(_CONTENT) + 1] != b'"'


def request_bytes(url: str, model: str, api_key: str = "sk-fake") -> bytes:
    parts = urlsplit(url)
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Say something."}], "stream": True}
    ).encode()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {api_key}\r\naccept: text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ResponseParser:
    """One HTTP/1.1 response, parsed incrementally: status, headers, body framing, SSE events.

    `feed` takes bytes as they arrive and returns the SSE events completed by them (each
    without its blank line, CRLF turned to LF). Once `complete`, the response has ended; a
    body delimited by the connection's close ends with `finish_at_eof`.
    """

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.complete = False
        self._buffer = b""  # unparsed bytes of the head or of the chunked framing
        self._events = b""  # body bytes not yet split into events
        self._chunked = False
        # Chunked: None before a size line, > 0 inside a payload, 0 before the CRLF after it.
        # Content-length: the body bytes still due.
        self._remaining: int | None = None
        self._until_eof = False

    @property
    def keep_alive(self) -> bool:
        return self.headers.get(b"connection", b"").lower() != b"close"

    def feed(self, data: bytes) -> list[bytes]:
        body: list[bytes] = []
        if self.status is None:
            self._buffer += data
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    raise ValueError("response head over 64 KiB")
                return []
            self._head(self._buffer[:end])
            data, self._buffer = self._buffer[end + 4 :], b""
        if self._chunked:
            self._dechunk(data, body)
        elif self._until_eof:
            body.append(data)
        elif self._remaining is not None:
            body.append(data[: self._remaining])
            self._remaining -= len(body[-1])
            self.complete = self._remaining == 0
        return self._split(b"".join(body)) if body else []

    def finish_at_eof(self) -> list[bytes]:
        """The connection closed: a body read until EOF ends here; any other is cut short."""
        if not self._until_eof or self.status is None:
            return []
        self.complete = True
        rest, self._events = self._events, b""
        return [rest] if rest.strip() else []

    def _head(self, head: bytes) -> None:
        status_line, *lines = head.split(b"\r\n")
        self.status = int(status_line.split(b" ", 2)[1])
        for line in lines:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            self._chunked = True
        elif b"content-length" in self.headers:
            self._remaining = int(self.headers[b"content-length"])
            self.complete = self._remaining == 0
        else:
            self._until_eof = True

    def _dechunk(self, data: bytes, body: list[bytes]) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        while at < len(buffer) and not self.complete:
            if self._remaining:  # inside a chunk's payload
                piece = buffer[at : at + self._remaining]
                body.append(piece)
                self._remaining -= len(piece)
                at += len(piece)
                continue
            if self._remaining == 0:  # the CRLF after a payload
                if len(buffer) - at < 2:
                    break
                if buffer[at : at + 2] != b"\r\n":
                    raise ValueError("a chunk longer than its size line says")
                at += 2
                self._remaining = None
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                break
            digits = buffer[at:end].split(b";", 1)[0]
            if not digits.isalnum():  # int() would take surrounding whitespace
                raise ValueError(f"a chunk size line that is not hex: {digits!r}")
            size = int(digits, 16)
            if size == 0:  # the last chunk: a blank line follows (no trailers here)
                if buffer.find(b"\r\n", end + 2) != end + 2:
                    break
                self.complete = True  # one response per parser: nothing after it is read
                break
            self._remaining = size
            at = end + 2
        self._buffer = buffer[at:]

    def _split(self, body: bytes) -> list[bytes]:
        pending = self._events + body
        if b"\r" in pending:
            pending = pending.replace(b"\r\n", b"\n")
        *events, self._events = pending.split(b"\n\n")
        return events


class _Stream:
    """What one request's stream has shown so far."""

    __slots__ = ("contents", "done", "sent", "ttft")

    def __init__(self, sent: float) -> None:
        self.sent = sent
        self.ttft: float | None = None
        self.contents = 0
        self.done = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its response in callbacks."""

    def __init__(self, result: LoadResult, run_start: float) -> None:
        self._result = result
        self._run_start = run_start
        self.transport: asyncio.Transport | None = None
        self._parser = ResponseParser()
        self._stream: _Stream | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes) -> tuple[_Stream, asyncio.Future[None]]:
        assert self.transport is not None
        self._parser = ResponseParser()
        self._stream = stream = _Stream(time.perf_counter())
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return stream, waiter

    def data_received(self, data: bytes) -> None:
        try:
            self._take(self._parser.feed(data))
        except (ValueError, IndexError) as error:
            self._fail(error)
            return
        if self._parser.complete:
            self._resolve()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._take(self._parser.finish_at_eof())
        if self._parser.complete:
            self._resolve()
        else:
            self._fail(exc or ConnectionError("connection closed before the response ended"))

    def _take(self, events: list[bytes]) -> None:
        stream = self._stream
        if stream is None:
            return
        content = self._parser.status == 200
        for event in events:
            if event.startswith(b"data: [DONE]"):
                stream.done = True
            elif content and is_content(event):
                now = time.perf_counter()
                if stream.ttft is None:
                    stream.ttft = now - stream.sent
                stream.contents += 1
                self._result.count(now, self._run_start)

    def _resolve(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return not self.closed and self._parser.complete and self._parser.keep_alive

    @property
    def status(self) -> int | None:
        return self._parser.status


async def _worker(
    index: int,
    n: int,
    url: str,
    model: str,
    chunks: int,
    stop_at: float,
    ramp_s: float,
    stagger_s: float,
    start: float,
    result: LoadResult,
    api_key: str,
) -> None:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"the target URL must name a host and a port, got {url!r}")
    host, port = parts.hostname, parts.port
    request = request_bytes(url, model, api_key)
    # Starts spread evenly over one stream's length: streams of one length then keep their
    # phases, so requests and first tokens arrive spread out, not in waves of all `n` at once.
    await asyncio.sleep(index * stagger_s / n)
    conn: _Connection | None = None
    while time.perf_counter() < stop_at:
        began = time.perf_counter()
        try:
            if conn is None:
                _, conn = await loop.create_connection(lambda: _Connection(result, start), host, port)
            stream, finished = conn.send(request)
            await finished
        except (OSError, ValueError, IndexError) as error:
            result.bad_streams += 1
            result.first_error = result.first_error or f"{type(error).__name__}: {error}"
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            conn = None
            await asyncio.sleep(0.05)
            continue
        if conn.status != 200 or stream.ttft is None or not stream.done or stream.contents != chunks:
            result.bad_streams += 1
            result.first_error = result.first_error or (
                f"status={conn.status} ttft={stream.ttft} done={stream.done} contents={stream.contents}"
            )
        else:
            result.streams += 1
            if began - start >= ramp_s:
                result.ttft_s.append(stream.ttft)
        if not conn.reusable:
            if conn.transport is not None:
                conn.transport.close()
            conn = None
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def run_load(
    url: str,
    *,
    streams: int,
    duration_s: float,
    ramp_s: float,
    chunks: int,
    stream_s: float,
    model: str = "gpt-4o",
    models: int = 1,
    api_key: str = "sk-fake",
) -> LoadResult:
    """Keep `streams` streams open against `url` for `duration_s`; finish those in flight.

    Args:
        url: the chat completions URL, e.g. http://127.0.0.1:8600/v1/chat/completions.
        streams: concurrent connections, each streaming one response after another.
        duration_s: no stream starts after this many seconds.
        ramp_s: streams started before this are not sampled for time to first token.
        chunks: the content events each complete stream must carry.
        stream_s: how long one stream lasts unloaded (the upstream's time to first token plus
            its chunks' gaps); the streams' starts are spread over it, within `ramp_s`.
        model: the request's model.
        models: how many models the streams ask for, each its own share of them: `model` alone,
            or `model-0` to `model-<models - 1>`, stream i the (i mod models)th.
        api_key: sent as the bearer token.
    """
    result = LoadResult()
    stagger = min(stream_s, ramp_s)
    start = time.perf_counter()
    workers = [
        _worker(
            i,
            streams,
            url,
            model if models == 1 else f"{model}-{i % models}",
            chunks,
            start + duration_s,
            ramp_s,
            stagger,
            start,
            result,
            api_key,
        )
        for i in range(streams)
    ]
    await asyncio.gather(*workers)
    return result

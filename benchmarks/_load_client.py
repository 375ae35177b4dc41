"""The load generator of proxy_load.py: N keep-alive connections streaming chat completions.

A minimal asyncio HTTP/1.1 client, so the client's own cost stays small and identical for
every target: one request at a time per connection, chunked or length-delimited bodies, SSE
events split on blank lines. A content event is a chunk whose delta carries non-empty
``content``; time to first token is measured from just before the request is written to the
moment the first content event has been read. Run in its own process by proxy_load.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_BUCKET_S = 0.1  # events are counted per 100 ms, so the steady phase can be cut out afterwards
_CONTENT = b'"content":"'


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


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before the response")
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body_parts(reader: asyncio.StreamReader, headers: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readline()  # the blank line after the last chunk (no trailers here)
                return
            part = await reader.readexactly(size + 2)
            yield part[:-2]
    elif b"content-length" in headers:
        yield await reader.readexactly(int(headers[b"content-length"]))
    else:
        while part := await reader.read(65536):
            yield part


async def one_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    result: LoadResult,
    run_start: float,
) -> tuple[float | None, int, bool, bool]:
    """Send one request and read its stream: (ttft, content events, saw [DONE], keep-alive)."""
    sent = time.perf_counter()
    writer.write(request)
    status, headers = await _read_head(reader)
    ttft: float | None = None
    contents, done, pending = 0, False, b""
    async for part in _body_parts(reader, headers):
        pending += part
        *events, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
        for event in events:
            if event.startswith(b"data: [DONE]"):
                done = True
            elif status == 200 and is_content(event):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - sent
                contents += 1
                result.count(now, run_start)
    keep = headers.get(b"connection", b"").lower() != b"close"
    return (ttft if status == 200 else None), contents, done, keep


async def _worker(
    index: int,
    n: int,
    url: str,
    model: str,
    chunks: int,
    stop_at: float,
    ramp_s: float,
    start: float,
    result: LoadResult,
    api_key: str,
) -> None:
    parts = urlsplit(url)
    request = request_bytes(url, model, api_key)
    await asyncio.sleep(index * min(0.5, ramp_s / 2) / n)  # stagger, so streams do not tick in step
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.perf_counter() < stop_at:
        began = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
            ttft, contents, done, keep = await one_stream(*conn, request, result, start)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as error:
            result.bad_streams += 1
            result.first_error = result.first_error or f"{type(error).__name__}: {error}"
            if conn is not None:
                conn[1].close()
            conn = None
            await asyncio.sleep(0.05)
            continue
        if ttft is None or not done or contents != chunks:
            result.bad_streams += 1
            result.first_error = result.first_error or f"ttft={ttft} done={done} contents={contents}"
        else:
            result.streams += 1
            if began - start >= ramp_s:
                result.ttft_s.append(ttft)
        if not keep:
            conn[1].close()  # type: ignore[index]
            conn = None
    if conn is not None:
        conn[1].close()


async def run_load(
    url: str,
    *,
    streams: int,
    duration_s: float,
    ramp_s: float,
    chunks: int,
    model: str = "gpt-4o",
    api_key: str = "sk-fake",
) -> LoadResult:
    """Keep `streams` streams open against `url` for `duration_s`; finish those in flight.

    Args:
        url: the chat completions URL, e.g. http://127.0.0.1:8600/v1/chat/completions.
        streams: concurrent connections, each streaming one response after another.
        duration_s: no stream starts after this many seconds.
        ramp_s: streams started before this are not sampled for time to first token.
        chunks: the content events each complete stream must carry.
        model: the request's model.
        api_key: sent as the bearer token.
    """
    result = LoadResult()
    start = time.perf_counter()
    workers = [
        _worker(i, streams, url, model, chunks, start + duration_s, ramp_s, start, result, api_key)
        for i in range(streams)
    ]
    await asyncio.gather(*workers)
    return result

"""The engine's committed response: its body reads itself, and keeps what httpx2's layers keep.

Each test sends a streamed chat completion through a real `StreamtapTransport` (an httpx2
client, no SDK, so nothing else closes the response) over an in-memory upstream, and reads the
response as httpx2's own readers would be read: the same bytes, states, errors and closes as a
plain `httpx2.Response` over the same upstream, with one generator between caller and upstream.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

import streamtap
from streamtap import CallFinished
from streamtap.fake._content import chat_frames

from .finished import Finished

FRAMES = [
    frame.data
    for frame in chat_frames(
        completion_id="chatcmpl-1", created=1, model="gpt-4o-mini", prompt="Hi", chunks=3, include_usage=False
    )
]
BODY = b"".join(FRAMES)
REQUEST = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
)


class Upstream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """Answers with `reads`, one per iteration step (then `error`, if any); counts its closes."""

    def __init__(
        self, reads: list[bytes], error: Exception | None = None, headers: dict[str, str] | None = None
    ):
        self.reads = reads
        self.error = error
        self.headers = {"content-type": "text/event-stream", **(headers or {})}
        self.closed = 0

    def answer(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers=self.headers, stream=self)

    def __iter__(self) -> Iterator[bytes]:
        yield from self.reads
        if self.error is not None:
            raise self.error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            yield read
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed += 1

    async def aclose(self) -> None:
        self.closed += 1


def _client(upstream: Upstream, finished: Finished) -> httpx2.Client:
    transport = streamtap.StreamtapTransport(httpx2.MockTransport(upstream.answer), recorders=[finished])
    return httpx2.Client(transport=transport)


def _aclient(upstream: Upstream, finished: Finished) -> httpx2.AsyncClient:
    transport = streamtap.AsyncStreamtapTransport(httpx2.MockTransport(upstream.answer), recorders=[finished])
    return httpx2.AsyncClient(transport=transport)


def _sent(upstream: Upstream, finished: Finished | None = None) -> httpx2.Response:
    client = _client(upstream, finished or Finished())
    request = client.build_request("POST", "http://upstream.test/v1/chat/completions", content=REQUEST)
    return client.send(request, stream=True)


async def _asent(upstream: Upstream, finished: Finished | None = None) -> httpx2.Response:
    client = _aclient(upstream, finished or Finished())
    request = client.build_request("POST", "http://upstream.test/v1/chat/completions", content=REQUEST)
    return await client.send(request, stream=True)


def _outcomes(finished: Finished) -> list[str]:
    return [call.outcome for call in finished.calls]


def test_iter_bytes_is_the_bodys_own_reader_and_passes_the_stream_as_it_came() -> None:
    upstream, finished = Upstream(FRAMES), Finished()
    response = _sent(upstream, finished)
    reads = response.iter_bytes()
    assert reads.gi_code.co_name == "reads"  # type: ignore[attr-defined]
    assert b"".join(reads) == BODY
    assert response.num_bytes_downloaded == len(BODY)
    assert response.is_stream_consumed and response.is_closed
    assert response.elapsed.total_seconds() >= 0
    assert upstream.closed == 1
    assert _outcomes(finished) == ["ok"]


def test_num_bytes_downloaded_counts_as_the_reads_go() -> None:
    response = _sent(Upstream(FRAMES))
    reads = response.iter_bytes()
    assert response.num_bytes_downloaded == 0
    passed = next(reads)  # the role frame and the first content, released together at commit
    assert passed == FRAMES[0] + FRAMES[1]
    assert response.num_bytes_downloaded == len(passed)
    assert next(reads) == FRAMES[2]
    assert response.num_bytes_downloaded == len(passed) + len(FRAMES[2])


def test_a_second_read_raises_stream_consumed_and_a_read_after_close_stream_closed() -> None:
    response = _sent(Upstream(FRAMES))
    list(response.iter_bytes())
    with pytest.raises(httpx2.StreamConsumed):
        response.iter_bytes()
    closed = _sent(Upstream(FRAMES))
    closed.close()
    with pytest.raises(httpx2.StreamClosed):
        closed.iter_bytes()


def test_a_chunk_size_read_and_lines_go_through_httpx2s_layers() -> None:
    response = _sent(Upstream(FRAMES))
    chunks = list(response.iter_bytes(chunk_size=64))
    assert b"".join(chunks) == BODY
    assert {len(chunk) for chunk in chunks[:-1]} == {64}
    assert response.num_bytes_downloaded == len(BODY)
    read = _sent(Upstream(FRAMES))
    assert read.read() == BODY
    assert list(read.iter_bytes()) == [BODY]
    lines = [line for line in _sent(Upstream(FRAMES)).iter_lines() if line]
    assert lines == [frame.decode().strip() for frame in FRAMES]


def test_leaving_early_closes_the_response_and_the_upstream() -> None:
    upstream, finished = Upstream(FRAMES), Finished()
    response = _sent(upstream, finished)
    reads = response.iter_bytes()
    next(reads)
    reads.close()  # type: ignore[attr-defined]
    assert response.is_closed and upstream.closed == 1
    assert _outcomes(finished) == ["cancelled"]


def test_a_body_that_stops_decoding_names_the_callers_request_and_closes() -> None:
    # A gzip body whose first frames decode and whose next read does not: httpx2's decoder
    # raises DecodingError, the connection's bytes failing like a broken connection's.
    packer = zlib.compressobj(wbits=31)
    good = packer.compress(b"".join(FRAMES[:3])) + packer.flush(zlib.Z_SYNC_FLUSH)
    upstream = Upstream([good, b"\x00not gzip at all"], headers={"content-encoding": "gzip"})
    response = _sent(upstream)
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        list(response.iter_bytes())
    assert raised.value.error_type == "stream_interrupted"
    assert raised.value.request.url == "http://upstream.test/v1/chat/completions"
    assert response.is_closed and upstream.closed == 1


def test_a_replaced_stream_is_read_through_httpx2s_layers() -> None:
    response = _sent(Upstream(FRAMES))
    other = Upstream([b"data: other\n\n"])
    response.stream = other
    assert list(response.iter_bytes()) == [b"data: other\n\n"]
    assert other.closed == 1


def test_the_sync_reader_refuses_the_async_body() -> None:
    response = asyncio.run(_asent(Upstream(FRAMES)))
    with pytest.raises(RuntimeError, match="sync iterator on an async stream"):
        next(response.iter_bytes())
    asyncio.run(response.aclose())


@pytest.mark.anyio
async def test_aiter_bytes_is_the_bodys_own_reader_and_passes_the_stream_as_it_came() -> None:
    upstream, finished = Upstream(FRAMES), Finished()
    response = await _asent(upstream, finished)
    reads = response.aiter_bytes()
    assert reads.ag_code.co_name == "areads"  # type: ignore[attr-defined]
    assert b"".join([read async for read in reads]) == BODY
    assert response.num_bytes_downloaded == len(BODY)
    assert response.is_stream_consumed and response.is_closed
    assert upstream.closed == 1
    assert _outcomes(finished) == ["ok"]
    with pytest.raises(httpx2.StreamConsumed):
        response.aiter_bytes()


@pytest.mark.anyio
async def test_async_leaving_early_chunk_sizes_and_errors() -> None:
    upstream, finished = Upstream(FRAMES), Finished()
    response = await _asent(upstream, finished)
    reads = response.aiter_bytes()
    await reads.__anext__()
    await reads.aclose()
    assert response.is_closed and upstream.closed == 1
    assert _outcomes(finished) == ["cancelled"]

    sized = await _asent(Upstream(FRAMES))
    assert b"".join([chunk async for chunk in sized.aiter_bytes(chunk_size=64)]) == BODY
    assert await (await _asent(Upstream(FRAMES))).aread() == BODY

    packer = zlib.compressobj(wbits=31)
    good = packer.compress(b"".join(FRAMES[:3])) + packer.flush(zlib.Z_SYNC_FLUSH)
    failing = Upstream([good, b"\x00not gzip at all"], headers={"content-encoding": "gzip"})
    response = await _asent(failing)
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        [read async for read in response.aiter_bytes()]
    assert raised.value.error_type == "stream_interrupted"
    assert raised.value.request.url == "http://upstream.test/v1/chat/completions"
    assert response.is_closed and failing.closed == 1


def test_the_call_is_finished_once_whatever_closes_it() -> None:
    finished = Finished()
    response = _sent(Upstream(FRAMES), finished)
    list(response.iter_bytes())
    response.close()
    assert [type(call) for call in finished.calls] == [CallFinished]

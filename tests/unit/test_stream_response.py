"""StreamResponse reads the engine's body without httpx2's layers and keeps what they keep.

Each test runs the same reads through a plain `httpx2.Response` and a `StreamResponse`, sent by
a real `httpx2.Client` (which wraps the body in its timer), and expects the same outcome.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

from streamtap._stream_response import StreamResponse

READS = [b"data: one\n\n", b"", b"data: two\n\n", b"data: three\n\n"]


class Body(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body of fixed reads that may fail after them and counts its closes."""

    def __init__(self, reads: list[bytes], error: Exception | None = None) -> None:
        self.reads = reads
        self.error = error
        self.closed = 0

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


class Door(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Answers every request with `kind` over `body`."""

    def __init__(self, kind: type[httpx2.Response], body: Body) -> None:
        self.kind = kind
        self.body = body

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.kind(200, stream=self.body, request=request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.kind(200, stream=self.body, request=request)


KINDS = [httpx2.Response, StreamResponse]


def sent(kind: type[httpx2.Response], body: Body) -> httpx2.Response:
    client = httpx2.Client(transport=Door(kind, body))
    return client.send(client.build_request("POST", "http://upstream.test/v1/x"), stream=True)


async def asent(kind: type[httpx2.Response], body: Body) -> httpx2.Response:
    client = httpx2.AsyncClient(transport=Door(kind, body))
    return await client.send(client.build_request("POST", "http://upstream.test/v1/x"), stream=True)


@pytest.mark.parametrize("kind", KINDS)
def test_iter_bytes_passes_every_read_but_empty_ones_counts_and_closes(kind: type[httpx2.Response]) -> None:
    body = Body(READS)
    response = sent(kind, body)
    assert list(response.iter_bytes()) == [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]
    assert response.num_bytes_downloaded == 11 + 11 + 13
    assert response.is_stream_consumed and response.is_closed
    assert body.closed == 1
    assert response.elapsed.total_seconds() >= 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_read_raises_stream_consumed(kind: type[httpx2.Response]) -> None:
    response = sent(kind, Body(READS))
    list(response.iter_bytes())
    with pytest.raises(httpx2.StreamConsumed):
        next(response.iter_bytes())


@pytest.mark.parametrize("kind", KINDS)
def test_a_read_after_close_raises_stream_closed(kind: type[httpx2.Response]) -> None:
    body = Body(READS)
    response = sent(kind, body)
    response.close()
    with pytest.raises(httpx2.StreamClosed):
        next(response.iter_bytes())
    assert body.closed == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_chunk_size_is_honoured(kind: type[httpx2.Response]) -> None:
    response = sent(kind, Body(READS))
    assert list(response.iter_bytes(chunk_size=16)) == [
        b"data: one\n\ndata:",
        b" two\n\ndata: thre",
        b"e\n\n",
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_read_lines_and_text_go_through_it(kind: type[httpx2.Response]) -> None:
    response = sent(kind, Body(READS))
    assert response.read() == b"data: one\n\ndata: two\n\ndata: three\n\n"
    assert list(response.iter_bytes()) == [response.content]
    lines = sent(kind, Body(READS)).iter_lines()
    assert [line for line in lines if line] == ["data: one", "data: two", "data: three"]


@pytest.mark.parametrize("kind", KINDS)
def test_leaving_early_closes_the_body(kind: type[httpx2.Response]) -> None:
    body = Body(READS)
    response = sent(kind, body)
    reads = response.iter_bytes()
    assert next(reads) == b"data: one\n\n"
    reads.close()
    assert response.is_closed and body.closed == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_transport_error_names_the_request(kind: type[httpx2.Response]) -> None:
    body = Body(READS[:1], httpx2.ReadError("connection reset"))
    response = sent(kind, body)
    with pytest.raises(httpx2.ReadError) as raised:
        list(response.iter_bytes())
    assert raised.value.request.url == "http://upstream.test/v1/x"
    assert response.is_closed and body.closed == 1


def test_a_replaced_stream_is_read_instead_of_the_body() -> None:
    response = sent(StreamResponse, Body(READS))
    other = Body([b"data: other\n\n"])
    response.stream = other
    assert list(response.iter_bytes()) == [b"data: other\n\n"]
    assert other.closed == 1


def test_the_sync_reader_refuses_an_async_body() -> None:
    class Async(httpx2.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"x"

    response = StreamResponse(200, stream=Async())
    with pytest.raises(RuntimeError, match="sync iterator on an async stream"):
        next(response.iter_bytes())


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_aiter_bytes_passes_every_read_but_empty_ones_counts_and_closes(
    kind: type[httpx2.Response],
) -> None:
    body = Body(READS)
    response = await asent(kind, body)
    assert [read async for read in response.aiter_bytes()] == [
        b"data: one\n\n",
        b"data: two\n\n",
        b"data: three\n\n",
    ]
    assert response.num_bytes_downloaded == 35
    assert response.is_stream_consumed and response.is_closed
    assert body.closed == 1
    assert response.elapsed.total_seconds() >= 0
    with pytest.raises(httpx2.StreamConsumed):
        await response.aiter_bytes().__anext__()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_aiter_bytes_leaving_early_and_errors(kind: type[httpx2.Response]) -> None:
    body = Body(READS)
    response = await asent(kind, body)
    reads = response.aiter_bytes()
    assert await reads.__anext__() == b"data: one\n\n"
    await reads.aclose()  # type: ignore[attr-defined]
    assert response.is_closed and body.closed == 1

    failing = Body(READS[:1], httpx2.ReadError("connection reset"))
    response = await asent(kind, failing)
    with pytest.raises(httpx2.ReadError) as raised:
        [read async for read in response.aiter_bytes()]
    assert raised.value.request.url == "http://upstream.test/v1/x"
    assert response.is_closed and failing.closed == 1


@pytest.mark.anyio
async def test_aread_and_chunk_size_go_through_it() -> None:
    response = await asent(StreamResponse, Body(READS))
    assert [read async for read in response.aiter_bytes(chunk_size=16)] == [
        b"data: one\n\ndata:",
        b" two\n\ndata: thre",
        b"e\n\n",
    ]
    response = await asent(StreamResponse, Body(READS))
    assert await response.aread() == b"data: one\n\ndata: two\n\ndata: three\n\n"


def test_the_body_is_read_directly_not_through_the_clients_timer() -> None:
    readers: list[str] = []

    class Traced(Body):
        def __iter__(self) -> Iterator[bytes]:
            for read in self.reads:
                readers.append(sys._getframe(1).f_code.co_name)
                yield read

    list(sent(httpx2.Response, Traced(READS[:1])).iter_bytes())
    list(sent(StreamResponse, Traced(READS[:1])).iter_bytes())
    assert readers == ["__iter__", "_iter_body"]

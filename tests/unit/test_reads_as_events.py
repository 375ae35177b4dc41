"""An answer labelled `application/json` to a stream's request: an event stream (some gateways
label one so) or one JSON body, told apart by its first bytes however they are split."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from streamtap import _async_body, _sync_body
from streamtap._whole import reads_as_events

EVENTS = [
    b'data: {"id": "c"}\n\n',
    b": OPENROUTER PROCESSING\n\ndata: {}\n\n",
    b"event: response.created\ndata: {}\n\n",
    b"\n\r\ndata: {}\n\n",  # blank lines first
    b"id: 1\ndata: {}\n\n",
    b"retry: 1000\n\n",
]
NOT_EVENTS = [
    b'{"id": "chatcmpl-1", "object": "chat.completion"}',
    b'  \n{"error": {"message": "boom"}}',
    b"[1, 2]",
    b"Internal Server Error",
    b"dat",  # the whole body: the start of a field, and no more
    b"",
]


@pytest.mark.parametrize("body", EVENTS)
def test_an_event_streams_start_is_told_at_every_split(body: bytes) -> None:
    assert reads_as_events(body) is True
    for cut in range(len(body)):
        assert reads_as_events(body[:cut]) in (None, True)  # never taken for JSON on the way
    assert _peek([body[:1], body[1:4], body[4:]]) == (body[: _first_decisive(body)], True)


@pytest.mark.parametrize("body", NOT_EVENTS)
def test_anything_else_is_read_whole(body: bytes) -> None:
    assert reads_as_events(body, whole=True) is False
    assert _peek([body[i : i + 2] for i in range(0, len(body), 2)])[1] is False


def test_a_long_run_of_blank_lines_is_not_read_for_ever() -> None:
    assert reads_as_events(b"\n" * 10) is None
    assert reads_as_events(b"\n" * (64 * 1024 + 1)) is False


def _first_decisive(body: bytes) -> int:
    """How many bytes the peek reads of `body` split as in the test: whole chunks until it tells."""
    head = b""
    for chunk in (body[:1], body[1:4], body[4:]):
        head += chunk
        if reads_as_events(head) is not None:
            return len(head)
    return len(head)


def _peek(chunks: list[bytes]) -> tuple[bytes, bool]:
    """Both drivers' peek over the same chunks, which must agree; the rest stays unread."""
    source = iter(chunks)
    sync = _sync_body.peek(source)

    async def apeek() -> tuple[bytes, bool]:
        async def gen() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return await _async_body.peek(gen())

    assert anyio.run(apeek) == sync
    rest: Iterator[bytes] = source
    assert sync[0] + b"".join(rest) == b"".join(chunks)
    return sync

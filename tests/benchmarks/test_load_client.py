"""The load generator's response parser: framing and SSE events, however the bytes arrive."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _load_client import ResponseParser

EVENTS = [
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}',
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}',
    b'data: {"choices":[{"delta":{"content":"lo"}}]}',
    b"data: [DONE]",
]
SSE = b"".join(event + b"\n\n" for event in EVENTS)


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at : at + size]
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
        at += size
    return out + b"0\r\n\r\n"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
CHUNKED = HEAD + b"transfer-encoding: chunked\r\n\r\n" + chunked(SSE, [len(e) + 2 for e in EVENTS])
# Chunk boundaries that cut events (and the blank lines between them) anywhere.
CUT = HEAD + b"Transfer-Encoding: Chunked\r\n\r\n" + chunked(SSE, [7, 50, 1, 1, 30, len(SSE)])
LENGTH = HEAD + f"content-length: {len(SSE)}\r\nconnection: close\r\n\r\n".encode() + SSE


def feed_in_pieces(raw: bytes, size: int) -> tuple[ResponseParser, list[bytes]]:
    parser, events = ResponseParser(), []
    for at in range(0, len(raw), size):
        assert not parser.complete
        events += parser.feed(raw[at : at + size])
    return parser, events


@pytest.mark.parametrize("raw", [CHUNKED, CUT, LENGTH], ids=["chunked", "cut", "content-length"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_every_event_once_in_order_and_the_end_seen(raw: bytes, size: int) -> None:
    parser, events = feed_in_pieces(raw, size)
    assert events == EVENTS
    assert parser.complete
    assert parser.status == 200
    assert parser.keep_alive is (raw is not LENGTH)


def test_a_body_until_eof_ends_with_the_connection() -> None:
    raw = HEAD + b"connection: close\r\n\r\n" + SSE[:-2]  # the last event's blank line never came
    parser, events = feed_in_pieces(raw, 5)
    assert events == EVENTS[:-1]
    assert not parser.complete
    assert parser.finish_at_eof() == [EVENTS[-1]]
    assert parser.complete


def test_a_chunked_body_cut_short_never_completes() -> None:
    parser, events = feed_in_pieces(CHUNKED[:-5], 9)
    assert events == EVENTS
    assert parser.finish_at_eof() == []
    assert not parser.complete


@pytest.mark.parametrize("size", [1, 2, 100])
def test_a_chunk_longer_than_its_size_line_is_refused(size: int) -> None:
    raw = HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\ndata: x\n\n\r\n0\r\n\r\n"
    with pytest.raises(ValueError, match="longer than its size line"):
        feed_in_pieces(raw, size)


def test_crlf_events_are_split_like_lf_ones() -> None:
    body = SSE.replace(b"\n", b"\r\n")
    raw = HEAD + f"content-length: {len(body)}\r\n\r\n".encode() + body
    assert feed_in_pieces(raw, 4)[1] == EVENTS


def test_an_error_status_and_its_body() -> None:
    body = b'{"error":{"message":"slow down"}}'
    raw = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    parser, events = feed_in_pieces(raw, 10)
    assert parser.status == 429
    assert parser.complete
    assert events == []  # no blank line: not an event


def test_a_head_that_never_ends_is_refused() -> None:
    parser = ResponseParser()
    line = b"x-filler: " + b"a" * 1000 + b"\r\n"
    for _ in range(64):  # 64 × 1,012 bytes: under 64 KiB
        assert parser.feed(line) == []
    with pytest.raises(ValueError, match="64 KiB"):
        parser.feed(line)


@pytest.mark.parametrize(("models", "asked"), [(1, {"gpt-4o"}), (3, {"gpt-4o-0", "gpt-4o-1", "gpt-4o-2"})])
def test_the_streams_share_the_models_among_them(models: int, asked: set[str]) -> None:
    from _load_client import run_load

    from streamtap.fake import FakeConfig, FakeUpstream

    with FakeUpstream(FakeConfig(chunks=2)) as fake:
        result = asyncio.run(
            run_load(
                fake.base_url + "/chat/completions",
                streams=6,
                duration_s=0.3,
                ramp_s=0.0,
                chunks=2,
                stream_s=0.01,
                models=models,
            )
        )
        seen = [r.model for r in fake.requests]
    assert result.bad_streams == 0
    assert set(seen) == asked

"""SSE framing: FrameBuffer, split_frames, parse_frame, encode_event."""

from __future__ import annotations

import itertools

import pytest

from streamtap._sse import Event, FrameBuffer, FrameTooLarge, encode_event, parse_frame, split_frames

STREAM = (
    b'data: {"a":1}\n\n'
    b": keep-alive\n\n"
    b"event: response.output_text.delta\n"
    b'data: {"delta":"h\xc3\xa9"}\n\n'
    b"data: [DONE]\n\n"
)
FRAMES = [
    b'data: {"a":1}',
    b": keep-alive",
    b'event: response.output_text.delta\ndata: {"delta":"h\xc3\xa9"}',
    b"data: [DONE]",
]


def feed_all(chunks: list[bytes], buffer: FrameBuffer | None = None) -> list[bytes]:
    buffer = buffer or FrameBuffer()
    frames: list[bytes] = []
    for chunk in chunks:
        out = buffer.feed(chunk)
        if out:
            assert out.endswith(b"\n\n")
        frames.extend(split_frames(out))
    return frames


def test_whole_stream_in_one_chunk() -> None:
    buffer = FrameBuffer()
    assert buffer.feed(STREAM) == STREAM
    assert buffer.pending == b""
    assert split_frames(STREAM) == FRAMES


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_single_split_point(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for cut in range(len(stream) + 1):
        buffer = FrameBuffer()
        assert feed_all([stream[:cut], stream[cut:]], buffer) == FRAMES, cut
        assert buffer.pending == b""


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_pair_of_split_points(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for a, b in itertools.combinations(range(len(stream) + 1), 2):
        buffer = FrameBuffer()
        assert feed_all([stream[:a], stream[a:b], stream[b:]], buffer) == FRAMES, (a, b)
        assert buffer.pending == b""


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_byte_by_byte(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    buffer = FrameBuffer()
    assert feed_all([stream[i : i + 1] for i in range(len(stream))], buffer) == FRAMES
    assert buffer.pending == b""


def test_frame_is_released_as_soon_as_it_is_complete() -> None:
    buffer = FrameBuffer()
    assert buffer.feed(b"data: 1\n") == b""
    assert buffer.pending == b"data: 1\n"
    assert buffer.feed(b"\ndata: 2") == b"data: 1\n\n"
    assert buffer.pending == b"data: 2"
    assert buffer.feed(b"\n\n") == b"data: 2\n\n"
    assert buffer.pending == b""


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    buffer = FrameBuffer()
    assert buffer.feed(b"data: 1\r\n\r") == b"data: 1\n\n"
    # The last \r and this \n are one line end: no empty extra line, no lost byte.
    assert buffer.feed(b"\ndata: 2\r\n\r") == b"data: 2\n\n"
    assert buffer.feed(b"") == b""  # an empty read does not forget the pending \n skip
    assert buffer.feed(b"\ndata: 3") == b""
    assert buffer.pending == b"data: 3"


def test_cr_only_frame_ending_at_chunk_end_is_released() -> None:
    # A CR-only producer's last frame ends with "\r\r" exactly at the end of the body: the
    # second \r ends the blank line whatever follows, so the frame is complete now.
    buffer = FrameBuffer()
    assert buffer.feed(b"data: [DONE]\r\r") == b"data: [DONE]\n\n"
    assert buffer.pending == b""
    # and a following \n (a CRLF producer) does not make an extra line
    assert buffer.feed(b"\ndata: x\n\n") == b"data: x\n\n"


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_one_byte_at_a_time(newline: bytes) -> None:
    # Every blank line falls between two reads, each frame is held as many pieces.
    stream = STREAM.replace(b"\n", newline)
    buffer = FrameBuffer()
    assert feed_all([stream[i : i + 1] for i in range(len(stream))], buffer) == FRAMES
    assert buffer.pending == b""


def test_an_event_carrying_a_whole_image_is_one_frame() -> None:
    # An image generation's output_item.done (or response.completed) carries the image as base64:
    # several MiB in one event, read 64 KiB at a time. It was over the 4 MiB the buffer took before.
    event = b"event: response.output_item.done\ndata: {" + b'"result":"' + b"A" * (9 * 2**20) + b'"}\n\n'
    stream = event + b"data: [DONE]\n\n"
    buffer = FrameBuffer()
    reads = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    assert feed_all(reads, buffer) == [event[:-2], b"data: [DONE]"]
    assert buffer.idle


def test_mixed_line_endings() -> None:
    assert feed_all([b"data: 1\r\n\ndata: 2\r\rdata: 3\n\r\n"]) == [b"data: 1", b"data: 2", b"data: 3"]


def test_oversize_incomplete_frame_raises() -> None:
    buffer = FrameBuffer(max_frame=16)
    assert buffer.feed(b"data: 0123456789") == b""  # 16 bytes: at the limit, still held
    with pytest.raises(FrameTooLarge, match="an SSE event exceeds 16 bytes"):
        buffer.feed(b"x")


def test_oversize_tail_after_complete_frames_raises() -> None:
    buffer = FrameBuffer(max_frame=8)
    with pytest.raises(FrameTooLarge, match="exceeds 8 bytes"):
        buffer.feed(b"data: 1\n\n" + b"data: 123456")


def test_frame_within_limit_after_a_large_one_is_fine() -> None:
    buffer = FrameBuffer(max_frame=8)
    assert buffer.feed(b"data: 1\n\ndata") == b"data: 1\n\n"
    assert buffer.pending == b"data"


def test_split_frames_drops_empty_frames() -> None:
    assert split_frames(b"data: 1\n\n\n\ndata: 2\n\n") == [b"data: 1", b"data: 2"]
    assert split_frames(b"") == []


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b"data: x", Event(None, "x")),
        (b"data:x", Event(None, "x")),
        (b"data:  x", Event(None, " x")),  # only one space is stripped
        (b"data: a\ndata: b", Event(None, "a\nb")),
        (b"event: ping\ndata: {}", Event("ping", "{}")),
        (b"event: ping", Event("ping", "")),
        (b"data", Event(None, "")),
        (b": keep-alive", Event(None, "", comment=True)),
        (b": a\n: b", Event(None, "", comment=True)),
        (b"id: 7", Event(None, "")),
        (b"retry: 100", Event(None, "")),
        (b"foo: bar", Event(None, "", comment=True)),  # unknown fields are ignored
        (b": c\ndata: x", Event(None, "x")),
        ("data: h\u00e9".encode(), Event(None, "h\u00e9")),
    ],
)
def test_parse_frame(frame: bytes, expected: Event) -> None:
    assert parse_frame(frame) == expected


def test_parse_frame_rejects_invalid_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        parse_frame(b"data: \xff")


def test_encode_event() -> None:
    assert encode_event("x") == b"data: x\n\n"
    assert encode_event("a\nb", event="e") == b"event: e\ndata: a\ndata: b\n\n"
    assert encode_event("h\u00e9") == b"data: h\xc3\xa9\n\n"


@pytest.mark.parametrize("data", ["x", "a\nb", "", '{"k": "v"}'])
def test_encode_parse_round_trip(data: str) -> None:
    encoded = encode_event(data, event="kind")
    (frame,) = split_frames(FrameBuffer().feed(encoded))
    assert parse_frame(frame) == Event("kind", data)

"""Response plans: which bytes go out, when, and how the connection ends (pure)."""

from __future__ import annotations

import pytest

from streamtap.fake import parse_fault
from streamtap.fake._content import KEEPALIVE, Frame
from streamtap.fake._plan import (
    Action,
    Close,
    End,
    Head,
    Pause,
    Reset,
    Timing,
    Write,
    body_fault_plan,
    json_bytes,
    stream_plan,
)

FRAMES = [
    Frame("head", b"H", 0),
    Frame("pre", b"P", 1),
    Frame("content", b"c1", 2),
    Frame("content", b"c2", 3),
    Frame("content", b"c3", 4),
    Frame("post", b"stop", 5),
    Frame("post", b"DONE", 6),
]
SSE_HEAD = Head(200, (("content-type", "text/event-stream; charset=utf-8"),), None)


def plan(spec: str, timing: Timing | None = None) -> list[Action]:
    return stream_plan(
        FRAMES, parse_fault(spec), timing or Timing(), (), lambda seq: f"ERR{seq}".encode(), b"BAD", b"c"
    )


def w(*chunks: str) -> list[Action]:
    return [Write(chunk.encode()) for chunk in chunks]


@pytest.mark.parametrize(
    ("spec", "tail"),
    [
        pytest.param("", [*w("H", "P", "c1", "c2", "c3", "stop", "DONE"), End()], id="clean"),
        pytest.param("drop_after=0", [*w("H", "P"), Reset()], id="drop-0"),
        pytest.param("drop_after=2", [*w("H", "P", "c1", "c2"), Reset()], id="drop-2"),
        pytest.param("drop_after=3", [*w("H", "P", "c1", "c2", "c3"), Reset()], id="drop-after-last"),
        pytest.param("drop_after=99", [*w("H", "P", "c1", "c2", "c3"), Reset()], id="drop-clamped"),
        pytest.param("truncate_after=1", [*w("H", "P", "c1"), End()], id="truncate"),
        pytest.param("error_after=0", [*w("H", "P", "ERR2"), End()], id="error-0"),
        pytest.param("error_after=2", [*w("H", "P", "c1", "c2", "ERR4"), End()], id="error-2"),
        pytest.param("error_after=3", [*w("H", "P", "c1", "c2", "c3", "ERR5"), End()], id="error-after-last"),
        pytest.param(
            "malformed_after=1", [*w("H", "P", "c1", "BAD", "c2", "c3", "stop", "DONE"), End()], id="bad"
        ),
        pytest.param(
            "garbled_after=1",
            [*w("H", "P", "c1"), Write(b"c\xff2"), *w("c2", "c3", "stop", "DONE"), End()],
            id="garbled",
        ),
        pytest.param(
            "garbled_after=3",
            [*w("H", "P", "c1", "c2", "c3"), Write(b"c\xff3"), *w("stop", "DONE"), End()],
            id="garbled-after-last",
        ),
        pytest.param(
            "stall_after=2;stall=0.5",
            [*w("H", "P", "c1", "c2"), Pause(0.5), *w("c3", "stop", "DONE"), End()],
            id="stall-after",
        ),
        pytest.param(
            "stall_first=2",
            [*w("H"), Pause(2.0), *w("P", "c1", "c2", "c3", "stop", "DONE"), End()],
            id="stall-first",
        ),
        pytest.param(
            "keepalive=2",
            [*w("H"), Write(KEEPALIVE), Write(KEEPALIVE), *w("P", "c1", "c2", "c3", "stop", "DONE"), End()],
            id="keepalive-no-ttft",
        ),
    ],
)
def test_stream_plan(spec: str, tail: list[Action]) -> None:
    assert plan(spec) == [SSE_HEAD, *tail]


def test_timing_spreads_keepalives_over_ttft_and_gaps_content() -> None:
    got = plan("keepalive=3", Timing(ttft=0.4, gap=0.05))
    assert got == [
        SSE_HEAD,
        *w("H"),
        Pause(0.1),
        Write(KEEPALIVE),
        Pause(0.1),
        Write(KEEPALIVE),
        Pause(0.1),
        Write(KEEPALIVE),
        Pause(0.1),
        *w("P", "c1"),
        Pause(0.05),
        *w("c2"),
        Pause(0.05),
        *w("c3", "stop", "DONE"),
        End(),
    ]


def test_plain_ttft_is_one_pause_before_the_preamble() -> None:
    assert plan("", Timing(ttft=0.3))[:4] == [SSE_HEAD, Write(b"H"), Pause(0.3), Write(b"P")]


def test_zero_chunk_stream_still_fires_faults_after_the_preamble() -> None:
    frames = [Frame("pre", b"P"), Frame("post", b"stop"), Frame("post", b"DONE")]
    got = stream_plan(frames, parse_fault("error_after=5"), Timing(), (), lambda _seq: b"ERR", b"BAD", b"c")
    assert got == [SSE_HEAD, Write(b"P"), Write(b"ERR"), End()]


PAYLOAD = {"id": "x", "text": "hello world"}
BODY = json_bytes(PAYLOAD)
JSON_HEADERS = (("content-type", "application/json"),)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("", [Head(200, JSON_HEADERS, len(BODY)), Write(BODY), End()], id="clean"),
        pytest.param(
            "drop_after=1",
            [Head(200, JSON_HEADERS, len(BODY)), Write(BODY[: len(BODY) // 2]), Reset()],
            id="drop",
        ),
        pytest.param(
            "truncate_after=1",
            [Head(200, JSON_HEADERS, len(BODY)), Write(BODY[: len(BODY) // 2]), Close()],
            id="truncate",
        ),
        pytest.param(
            "malformed_after=0",
            [Head(200, JSON_HEADERS, len(BODY) // 2), Write(BODY[: len(BODY) // 2]), End()],
            id="malformed",
        ),
        pytest.param(
            "stall_first=1", [Pause(1.0), Head(200, JSON_HEADERS, len(BODY)), Write(BODY), End()], id="stall"
        ),
        pytest.param(
            "keepalive=3", [Head(200, JSON_HEADERS, len(BODY)), Write(BODY), End()], id="stream-only"
        ),
        pytest.param(
            "garbled_after=0",
            [Head(200, JSON_HEADERS, len(BODY)), Write(BODY), End()],
            id="garbled-stream-only",
        ),
    ],
)
def test_body_fault_plan(spec: str, expected: list[Action]) -> None:
    assert body_fault_plan(200, PAYLOAD, parse_fault(spec), Timing(), 3, ()) == expected


def test_non_stream_waits_for_the_whole_generation() -> None:
    got = body_fault_plan(200, PAYLOAD, parse_fault(""), Timing(ttft=0.5, gap=0.25), 5, ())
    assert got[0] == Pause(1.5)

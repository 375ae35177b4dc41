"""StreamAttempt over randomly cut streams, read as the drivers read them (lane, then feed).

Fixed seeds: real streams as the fake upstream writes them (chat completions and responses),
with keep-alives and LF, CRLF or CR line ends, cut into reads of random sizes (single bytes
and empty reads included, and reads of whole events, which take the lane), are released frame
for frame as the reference splitter cuts the whole stream, commit on the read that completes
the first content, and tell the same facts and chunk count as the stream fed in one read.
"""

from __future__ import annotations

import random

import pytest

from streamtap._attempt import StreamAttempt
from streamtap._chat import CHAT
from streamtap._dialect import COMMENT, CONTENT, TERMINAL, Dialect, StreamFacts
from streamtap._responses import RESPONSES
from streamtap._sse import split_frames
from streamtap.fake._content import KEEPALIVE, chat_frames
from streamtap.fake._responses import ResponseSeed, response_frames

CASES = 300


def _stream(rng: random.Random) -> tuple[Dialect, list[bytes]]:
    """A dialect and its stream's events, with their line ends."""
    chunks = rng.randint(0, 5)
    if rng.random() < 0.5:
        dialect: Dialect = CHAT
        frames = chat_frames(
            completion_id="chatcmpl-1",
            created=1,
            model="m",
            prompt=str(rng.random()),
            chunks=chunks,
            include_usage=rng.random() < 0.5,
        )
    else:
        dialect = RESPONSES
        seed = ResponseSeed("resp_1", "msg_1", 1, "m", str(rng.random()), chunks)
        frames = response_frames(seed)
    events = [b for frame in frames for b in ((KEEPALIVE,) if rng.random() < 0.1 else ()) + (frame.data,)]
    newline = rng.choice([b"\n"] * 6 + [b"\r\n", b"\r"])
    return dialect, [event.replace(b"\n", newline) for event in events]


def _reads(rng: random.Random, events: list[bytes]) -> list[bytes]:
    if rng.random() < 0.3:  # one event a read, as servers write them: the lane's case
        return events
    stream = b"".join(events)
    reads: list[bytes] = []
    at = 0
    while at < len(stream):
        size = rng.choice([0, 1, 1, 2, 7, 40, 200])
        reads.append(stream[at : at + size])
        at += size
    return reads


def _read(dialect: Dialect, reads: list[bytes]) -> tuple[StreamAttempt, list[bytes], int | None]:
    """The attempt, what it released, and the index of the read that committed it."""
    attempt = StreamAttempt(
        dialect, sent_at=0.0, headers_at=0.0, first_token_timeout=None, idle_timeout=None, deadline=None
    )
    released: list[bytes] = []
    committed_by = None
    for index, read in enumerate(reads):
        now = float(index + 1)
        lane = attempt.lane
        if lane is not None and lane.fits(read):
            attempt.stamps.append(now)
            released.append(read)
            continue
        was = attempt.committed
        released.append(attempt.feed(read, now))
        if attempt.committed and not was:
            committed_by = index
    attempt.end()
    return attempt, released, committed_by


def _frames(data: bytes) -> list[bytes]:
    normal = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return [frame.lstrip(b"\n") for frame in split_frames(normal) if frame.strip(b"\n")]


def _facts(facts: StreamFacts) -> tuple[object, ...]:
    return (facts.response_id, facts.input_tokens, facts.output_tokens, facts.finish_reasons, facts.error)


@pytest.mark.parametrize("block", range(3))
def test_random_cuts_release_the_frames_and_facts_of_the_whole_stream(block: int) -> None:
    for seed in range(block * CASES // 3, (block + 1) * CASES // 3):
        rng = random.Random(seed)
        dialect, events = _stream(rng)
        reads = _reads(rng, events)
        stream = b"".join(events)
        attempt, released, committed_by = _read(dialect, reads)
        whole, _, _ = _read(dialect, [stream])
        assert attempt.failure is None and attempt.terminal, seed
        # The reference: every frame, less the keep-alives before the first content.
        expected: list[bytes] = []
        first = None
        for frame in _frames(stream):
            kind = dialect.inspect(frame, StreamFacts())
            if first is None and kind in (CONTENT, TERMINAL):
                first = frame
            if kind != COMMENT or first is not None:
                expected.append(frame)
        assert _frames(b"".join(released)) == expected, seed
        assert committed_by is not None and not any(released[:committed_by]), seed
        assert first is not None and first in _frames(b"".join(reads[: committed_by + 1])), seed
        assert _facts(attempt.facts) == _facts(whole.facts), seed
        assert attempt.chunks == whole.chunks, seed

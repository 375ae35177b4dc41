"""verify_events: for a relaying caller (the proxy), nothing unparsed goes out that does not decode."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from streamtap._attempt import StreamAttempt
from streamtap._chat import CHAT
from streamtap._dialect import CheckedShape, Dialect, SequencedShape, Shape, decodes
from streamtap._responses import RESPONSES

ROLE = b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
DONE = b"data: [DONE]\n\n"


def chat(text: bytes) -> bytes:
    """A chat content frame as OpenAI writes them (glance knows it; its Shape is padded)."""
    head = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"'
    return head + text + b'"},"finish_reason":null}],"obfuscation":"k3"}\n\n'


def delta(text: bytes, event: bytes = b"response.output_text.delta") -> bytes:
    data = b'{"type":"response.output_text.delta","sequence_number":3,"delta":"' + text + b'"}'
    return b"event: " + event + b"\ndata: " + data + b"\n\n"


CREATED = b'event: response.created\ndata: {"type":"response.created","response":{"id":"r1"}}\n\n'


def attempt(dialect: Dialect, verify: bool) -> StreamAttempt:
    return StreamAttempt(
        dialect,
        sent_at=0.0,
        headers_at=0.0,
        first_token_timeout=None,
        idle_timeout=None,
        deadline=None,
        verify=verify,
    )


def drive(stream: StreamAttempt, reads: list[bytes]) -> bytes:
    """What the drivers do with each read: the lane when it fits, else `feed`."""
    out: list[bytes] = []
    for read in reads:
        lane = stream.lane
        if lane is not None and lane.fits(read):
            stream.stamps.append(1.0)
            out.append(read)
            continue
        out.append(stream.feed(read, 1.0))
        if stream.failure is not None:
            break
    return b"".join(out)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        pytest.param(chat(b"Hi"), True, id="chat"),
        pytest.param(chat("héllo".encode()), True, id="chat-utf8"),
        pytest.param(chat(b"a\\nb \\u00e9 \\\\"), True, id="chat-escapes"),
        pytest.param(chat(b"\xffHi"), False, id="chat-not-utf8"),
        pytest.param(chat(b"\xc3"), False, id="chat-cut-utf8"),
        pytest.param(chat(b"a\\qb"), False, id="chat-bad-escape"),
        pytest.param(chat(b"a\x01b"), False, id="chat-control-char"),
        pytest.param(b'data: {"id":"c1",,"finish_reason":null}\n\n', False, id="chat-bad-json"),
        pytest.param(delta(b"Hi"), True, id="responses"),
        pytest.param(delta(b"\xffHi"), False, id="responses-not-utf8"),
        pytest.param(delta(b"Hi", event=b"\xff.delta"), False, id="responses-event-not-utf8"),
        pytest.param(b"event: x\n\n", False, id="no-data-line"),
    ],
)
def test_decodes(frame: bytes, expected: bool) -> None:
    assert decodes(frame) is expected


@pytest.mark.parametrize("verify", [True, False])
def test_the_lane_checks_decoding_only_when_verifying(verify: bool) -> None:
    stream = attempt(CHAT, verify)
    drive(stream, [ROLE, chat(b"Hi"), chat(b" there")])
    assert type(stream.lane) is (CheckedShape if verify else Shape)
    assert stream.lane is not None
    assert stream.lane.fits(chat(b" more")) is True
    assert stream.lane.fits(chat(b"\xff more")) is (not verify)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(chat(b"\xff there"), id="not-utf8"),
        pytest.param(chat(b"a\\qb"), id="bad-escape"),
        pytest.param(b'data: {"id":"c1","x":,"finish_reason":null}\n\n', id="bad-json"),
    ],
)
@pytest.mark.parametrize("together", [False, True], ids=["own-read", "one-read-with-good"])
def test_a_bad_event_after_commit_is_bad_response_and_not_passed_on(bad: bytes, together: bool) -> None:
    stream = attempt(CHAT, verify=True)
    good = [ROLE, chat(b"Hi"), chat(b" there")]
    reads = [*good, chat(b" one") + bad] if together else [*good, chat(b" one"), bad]
    out = drive(stream, [*reads, chat(b" never"), DONE])
    assert out == b"".join(good) + chat(b" one")
    assert stream.failure is not None
    assert (stream.failure.error_type, stream.failure.phase) == ("bad_response", "streaming")
    assert stream.chunks == 3


def test_in_process_a_garbled_event_goes_to_the_sdk_which_fails_on_it() -> None:
    # Door 1 keeps the hot path: the SDK parses every event, and the driver classifies its
    # decode error (tests/unit/test_split_reads.py).
    stream = attempt(CHAT, verify=False)
    reads = [ROLE, chat(b"Hi"), chat(b" there"), chat(b"\xff bad"), DONE]
    assert drive(stream, reads) == b"".join(reads)
    assert stream.failure is None


def test_escaped_text_still_goes_on_when_verifying() -> None:
    stream = attempt(CHAT, verify=True)
    reads = [ROLE, chat(b"Hi"), chat(b"a\\nb"), chat(b'say \\"hi\\"'), chat("é".encode()), DONE]
    assert drive(stream, reads) == b"".join(reads)
    assert stream.failure is None
    assert stream.chunks == 4


def test_responses_garbled_delta_after_commit() -> None:
    stream = attempt(RESPONSES, verify=True)
    reads = [CREATED, delta(b"Hi"), delta(b" there"), delta(b"\xff bad"), delta(b" never")]
    assert drive(stream, reads) == b"".join(reads[:3])
    assert stream.failure is not None
    assert stream.failure.error_type == "bad_response"
    assert stream.chunks == 2


def sdk_decodes(read: bytes) -> bool:
    """What a client's SDK does with the event: decode the lines as UTF-8, parse the data."""
    try:
        data = read.decode().split("data: ", 1)[1]
        json.loads(data)
    except (ValueError, IndexError):
        return False
    return True


# Text bytes: plain, UTF-8, escapes good and bad, raw control bytes, bytes that are not UTF-8.
_PIECES = [
    b"a",
    b" ",
    b"word",
    b"ok",
    "\u00e9".encode(),
    "\u2603".encode(),
    b"\\n",
    b"\\u00e9",
    b"\\\\",
    b"\\q",
    b"\\u12",
]
_PIECES += [b"\\", b"\n", b"\t", b"\x00", b"\x1f", b"\x7f", b"\xff", b"\xc3", b"\xed\xa0\x80", b"}", b"{"]


def chat_unpadded(text: bytes, pad: bytes) -> bytes:
    return chat(text).replace(b',"obfuscation":"k3"', b"")


def chat_padded(text: bytes, pad: bytes) -> bytes:
    return chat(text).replace(b'"k3"', b'"' + pad + b'"')


# Sequence numbers: JSON integers the proof reads, JSON numbers it leaves to the parse, and
# no JSON number at all.
_NUMBERS = [b"0", b"7", b"42", b"1234567", b"007", b"-1", b"1e3", b"3.0", b"12a", b""]


def openai_delta(text: bytes, pad: bytes | None, number: bytes = b"3") -> bytes:
    """A responses output_text delta laid out as OpenAI writes it (padded unless pad is None)."""
    data = (
        b'{"type":"response.output_text.delta","sequence_number":' + number + b',"item_id":"msg_1",'
        b'"output_index":0,"content_index":0,"delta":"'
        + text
        + b'","logprobs":[]'
        + (b',"obfuscation":"' + pad + b'"' if pad is not None else b"")
        + b"}"
    )
    return b"event: response.output_text.delta\ndata: " + data + b"\n\n"


def responses_padded(text: bytes, pad: bytes) -> bytes:
    return openai_delta(text, pad, _NUMBERS[(3 * len(text) + len(pad)) % len(_NUMBERS)])


def responses_unpadded(text: bytes, pad: bytes) -> bytes:
    return openai_delta(text, None, _NUMBERS[(3 * len(text) + len(pad)) % len(_NUMBERS)])


def responses_short(text: bytes, pad: bytes) -> bytes:
    return delta(text).replace(b'"sequence_number":3', b'"sequence_number":' + str(len(pad) * 7).encode())


@pytest.mark.parametrize(
    ("make", "dialect"),
    [
        (chat_padded, CHAT),
        (chat_unpadded, CHAT),
        (responses_padded, RESPONSES),
        (responses_unpadded, RESPONSES),
        (responses_short, RESPONSES),
    ],
    ids=["chat-padded", "chat-unpadded", "responses-padded", "responses-unpadded", "responses-short"],
)
def test_a_checked_shape_fits_exactly_what_fits_and_decodes(make: Any, dialect: Dialect) -> None:
    # Its quick proof (no control byte or backslash, UTF-8) and its parse together answer
    # exactly as the SDK's decoding would, over seeded random texts and paddings.
    shape = dialect.shape(make(b"learnt", b"k3"))
    strict = dialect.checked_shape(make(b"learnt", b"k3"))
    assert shape is not None and strict is not None
    rng = random.Random(7)
    answers = {True: 0, False: 0}
    for _ in range(3000):
        text = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 3)))
        pad = b"".join(
            rng.choice([b"a", b"Z", b"9", b"\\", b"\n", b"\xff"]) for _ in range(rng.randint(1, 3))
        )
        read = make(text, pad)
        if not shape.fits(read):
            assert not strict.fits(read)
            continue
        expected = sdk_decodes(read)
        assert strict.fits(read) is expected, read
        answers[expected] += 1
    assert answers[True] > 200 and answers[False] > 200, answers


def test_a_responses_delta_is_proven_without_a_parse() -> None:
    strict = RESPONSES.checked_shape(openai_delta(b"Hi", b"k3"))
    assert isinstance(strict, SequencedShape)
    for read in [
        openai_delta(b" there", b"xyz", b"4"),
        openai_delta("\u00e9t\u00e9".encode(), b"p", b"12345"),
        openai_delta(b"x", b"p", b"0"),
    ]:
        assert strict.proven(read) is True, read
        assert strict.fits(read) is True
    # Left to the parse, which decides: an escape, numbers JSON writes otherwise, bad bytes.
    for read, decodes_ in [
        (openai_delta(b"a\\nb", b"p"), True),
        (openai_delta(b"x", b"p", b"1e3"), True),
        (openai_delta(b"x", b"p", b"-1"), True),
        (openai_delta(b"x", b"p", b"007"), False),
        (openai_delta(b"x", b"p", b""), False),
        (openai_delta(b"\xff", b"p"), False),
        (openai_delta(b"x\x01", b"p"), False),
    ]:
        assert strict.proven(read) is False, read
        assert strict.fits(read) is decodes_, read


def test_a_verifying_responses_stream_learns_the_sequenced_shape() -> None:
    stream = attempt(RESPONSES, verify=True)
    reads = [CREATED, openai_delta(b"Hi", b"k3", b"1"), openai_delta(b" there", b"k", b"2")]
    drive(stream, [*reads, openai_delta(b"!", b"abc", b"3")])
    assert type(stream.lane) is SequencedShape
    assert stream.chunks == 3
    assert type(attempt_lane(RESPONSES, reads, verify=False)) is Shape


def attempt_lane(dialect: Dialect, reads: list[bytes], *, verify: bool) -> Shape | None:
    stream = attempt(dialect, verify)
    drive(stream, reads)
    return stream.lane


def test_the_fake_upstreams_deltas_are_proven_too() -> None:
    # The fake writes the fields in OpenAI's order (type, sequence number, ..., delta), so the
    # proxy's check of its events needs no parse either.
    from streamtap.fake._responses import ResponseSeed, response_frames

    frames = response_frames(ResponseSeed("resp_1", "msg_1", 5, "gpt-4o", "Hi there", 40))
    deltas = [frame.data for frame in frames if frame.kind == "content"]
    strict = RESPONSES.checked_shape(deltas[1])
    assert isinstance(strict, SequencedShape)
    assert all(strict.proven(read) for read in deltas)

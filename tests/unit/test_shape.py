"""The drivers' hot path: a stream's content frames recognised by the Shape learnt from one.

`Shape.fits` may only say yes where the glance and the full parse agree that a read is one
ordinary content frame; the drivers that use it must deliver and count exactly what `feed`
alone would.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest

import streamtap
from streamtap import CallFinished
from streamtap._chat import CHAT
from streamtap._dialect import BAD, CONTENT, PREAMBLE, UNKNOWN, Shape, StreamFacts
from streamtap._responses import RESPONSES

from .finished import Finished

HEAD = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o",
    "system_fingerprint": "fp_1",
}


def chat_chunk(
    delta: dict[str, Any], *, finish: str | None = None, padding: str | None = "k3Rq", **extra: Any
) -> bytes:
    body: dict[str, Any] = {
        **HEAD,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        **extra,
    }
    if padding is not None:
        body["obfuscation"] = padding
    # Raw UTF-8, as OpenAI writes it (not \u escapes).
    return b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def text(content: str, **kwargs: Any) -> bytes:
    return chat_chunk({"content": content}, **kwargs)


# Texts whose chunks fit the shape, and texts with quotes (escaped in JSON), whose do not.
TEXTS = ["hi", " a longer piece", "back \\ slash", "caf\u00e9 \u2603", "\n\r\t", "ends with \\"]
QUOTED = ['say "hi"', '"},"logprobs":null,"finish_reason":"stop"}],"x":{"y":"']
ALL = TEXTS + QUOTED


def test_chat_shape_of_a_padded_chunk() -> None:
    shape = CHAT.shape(text("hi"))
    assert shape == Shape(
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
        b'"system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"',
        b'"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"',
        padded=True,
    )


def test_chat_shape_of_an_unpadded_chunk_keeps_the_whole_tail() -> None:
    shape = CHAT.shape(text("hi", padding=None))
    assert shape is not None and not shape.padded
    assert shape.tail == b'"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'


@pytest.mark.parametrize("padding", ["k3Rq", None])
def test_a_chat_shape_fits_every_text_and_padding(padding: str | None) -> None:
    shape = CHAT.shape(text("first", padding=padding))
    assert shape is not None
    for content, pad in itertools.product(ALL, ["", "x", "0123456789abcdef"]):
        read = text(content, padding=None if padding is None else pad)
        assert shape.fits(read) == (content in TEXTS), read
        assert CHAT.glance(read) == CONTENT  # a quoted text takes the glance instead


def test_an_empty_text_is_no_content_for_the_shape_the_glance_and_the_parse() -> None:
    # OpenAI's first chunk announces the role with an empty text; some servers send more.
    empty = text("")
    for padding in ("k3Rq", None):
        shape = CHAT.shape(text("hi", padding=padding))
        assert shape is not None and not shape.fits(text("", padding=padding))
    assert CHAT.glance(empty) == UNKNOWN
    assert CHAT.inspect(empty[:-2], StreamFacts()) == PREAMBLE


def test_tool_calls_and_undecodable_text_have_no_shape() -> None:
    call = {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}
    assert CHAT.shape(chat_chunk(call)) is None
    assert CHAT.shape(b'data: {"choices":[{"delta":{"content":"\x01"}}]}\n\n') is None


def _not_content(padding: str | None) -> list[bytes]:
    """Reads of the same stream that a shape learnt from its content chunks must refuse."""
    content = text("hi", padding=padding)
    error = b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
    return [
        text("hi", finish="stop", padding=padding),
        text("hi", padding=padding, error={"message": "m"}),  # an error riding on a chunk
        chat_chunk({"content": "hi"}, padding=padding, index=1),
        chat_chunk({"content": "hi", "role": "assistant"}, padding=padding),
        chat_chunk({"content": "hi", "refusal": None}, padding=padding),
        chat_chunk({}, finish="stop", padding=padding),
        b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":1},"obfuscation":"x"}\n\n',
        error,
        b"data: [DONE]\n\n",
        b": keep-alive\n\n",
        content + content,  # two events in one read
        content + error,
        text("hi", padding=padding, error="boom") + content,
        content + b": keep-alive\n\n",
        content[:-1],  # the blank line still to come
        content[:-2],
        content[:40],
        content[:-2] + b"\r\n\r\n",
        content + b"\n",
    ]


@pytest.mark.parametrize("padding", ["k3Rq", None])
def test_a_chat_shape_refuses_every_other_read(padding: str | None) -> None:
    shape = CHAT.shape(text("hi", padding=padding))
    assert shape is not None
    for read in _not_content(padding):
        assert not shape.fits(read), read


def _responses_event(kind: str, **data: Any) -> bytes:
    body = json.dumps({"type": kind, "sequence_number": 7, **data}, separators=(",", ":"))
    return f"event: {kind}\ndata: {body}\n\n".encode()


def test_responses_shape_is_the_event_line() -> None:
    delta = _responses_event("response.output_text.delta", item_id="m", delta="hi", obfuscation="x")
    shape = RESPONSES.shape(delta)
    assert shape == Shape(b"event: response.output_text.delta\ndata: {")
    for piece in ALL:
        assert shape.fits(_responses_event("response.output_text.delta", item_id="m", delta=piece))
    refused = [
        _responses_event("response.output_text.done", text="hi"),
        _responses_event("response.completed", response={"id": "r"}),
        _responses_event("error", message="boom"),
        delta + delta,
        delta + _responses_event("error", message="boom"),
        delta[:-1],
        delta[:-2],  # the event's line, its blank line still to come
        delta[:40],  # part of the line
        delta[:-3] + b"\n\n",  # a line that does not end with `}`
        delta.replace(b"\ndata: {", b"\ndata: {\n", 1),
        delta[:-2] + b"\r\n\r\n",
    ]
    for read in refused:
        assert not shape.fits(read), read


def _corpus() -> Iterator[bytes]:
    """Chat reads around one stream's layout: every kind, joined and cut."""
    kinds = [text(t) for t in ALL] + _not_content("k3Rq") + [text("x", padding=None)]
    yield from kinds
    for a, b in itertools.product(kinds[:12], repeat=2):
        yield a + b
    for read in kinds[:8]:
        for cut in range(0, len(read), 9):
            yield read[:cut]
            yield read[cut:]


def test_fits_only_where_glance_and_the_parse_agree() -> None:
    shape = CHAT.shape(text("learnt"))
    assert shape is not None
    accepted = set()
    for read in _corpus():
        if not shape.fits(read):
            continue
        accepted.add(read)
        assert read.count(b"\n\n") == 1 and read.endswith(b"\n\n"), read
        assert CHAT.glance(read) == CONTENT, read
        facts = StreamFacts()
        assert CHAT.inspect(read[:-2], facts) == CONTENT, read
        # Only what every chunk repeats (read from a stream's first chunk), nothing skipping
        # the parse could lose: no finish reason, usage or error.
        assert facts == StreamFacts(
            response_id="chatcmpl-1", response_model="gpt-4o", system_fingerprint="fp_1"
        ), read
    assert accepted == {text(t) for t in TEXTS}  # every text chunk of the learnt layout, nothing else


_PIECES = ["a", " ", '"', "\\", "\n", "\r", "\u00e9", "\u2603", "}", "{", "\t", "'", ":", ","]
_BYTES = [b'"', b"\n", b"\r", b"}", b"\\", b"x", b"\n\n", b'"}\n\n', b"{", b"\xff"]


def _delta(piece: str, padding: str | None) -> bytes:
    return _responses_event("response.output_text.delta", item_id="m", delta=piece)


@pytest.mark.parametrize(
    ("make", "padding"),
    [(text, "k3Rq"), (text, None), (_delta, None)],
    ids=["chat-padded", "chat-unpadded", "responses"],
)
def test_fits_is_sound_and_complete_over_random_reads(make: Any, padding: str | None) -> None:
    # Sound: a read that fits is one content frame that the glance and the full parse agree
    # on, or one that is not UTF-8 or not JSON: passed on unparsed, the SDK's decoding fails
    # on it as the parse does, and the drivers record `bad_response` (test_split_reads.py).
    # Complete: every frame of the learnt layout whose text (and padding) has no quote fits.
    dialect = CHAT if make is text else RESPONSES
    shape = dialect.shape(make("learnt", padding=padding))
    assert shape is not None
    rng = random.Random(11)
    fitted = bad = 0
    for _ in range(4000):
        piece = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 5)))
        pad = None if padding is None else "".join(rng.choice('ab"}') for _ in range(rng.randint(1, 4)))
        read = make(piece, padding=pad)
        clean = bool(piece) and '"' not in piece and '"' not in (pad or "")
        if rng.random() < 0.4:  # a byte inserted after the prefix, or the read cut or doubled
            at = rng.randint(len(shape.prefix) - 1, len(read))
            read = rng.choice([read[:at] + rng.choice(_BYTES) + read[at:], read[:at], read + read])
            clean = False
        if not shape.fits(read):
            assert not clean, read
            continue
        fitted += 1
        facts = StreamFacts()
        kind = dialect.inspect(read[:-2], facts)
        if kind == BAD:
            assert facts.bad is not None and ("UTF-8" in facts.bad or "JSON" in facts.bad), read
            bad += 1
            continue
        if dialect is RESPONSES and kind != CONTENT:
            # The event line says what a responses event is (the glance trusts it too); only
            # an upstream whose data contradicts it gets another kind from the parse, or an
            # empty delta: no content to commit on, and on the lane, which is open only after
            # the commit, one more chunk counted.
            data = json.loads(read.split(b"\ndata: ", 1)[1])
            assert data.get("type") != "response.output_text.delta" or data.get("delta") == "", read
            continue
        assert read.count(b"\n\n") == 1 and read.endswith(b"\n\n"), read
        assert dialect.glance(read) == CONTENT, read
        assert kind == CONTENT, read
    assert fitted > 500 and 0 < bad < fitted // 4


# The drivers, end to end: the real SDK over an in-memory body, one read per item of `reads`.


def _reads(padding: str | None) -> list[bytes]:
    role = chat_chunk({"role": "assistant", "content": ""}, padding=padding)
    contents = [text(t, padding=padding) for t in ALL]
    return [
        role,
        *contents,
        contents[0] + contents[1],  # coalesced: through feed, counted twice
        contents[2][:30],  # split: through feed, then the lane again
        contents[2][30:],
        *contents,
        chat_chunk({}, finish="stop", padding=padding),
        b"data: [DONE]\n\n",
    ]


class _Body(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads

    def __iter__(self) -> Iterator[bytes]:
        yield from self._reads

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for read in self._reads:
            yield read


def _transport(reads: list[bytes]) -> httpx2.MockTransport:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=_Body(reads))

    return httpx2.MockTransport(answer)


def _run(reads: list[bytes], mode: str) -> tuple[list[str], CallFinished]:
    recorder = Finished()
    options: dict[str, Any] = {"api_key": "sk-x", "base_url": "http://upstream.test/v1"}
    kwargs: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    pieces: list[str] = []
    if mode == "sync":
        client = streamtap.instrument(
            openai.OpenAI(http_client=httpx2.Client(transport=_transport(reads)), **options),
            recorders=[recorder],
        )
        for chunk in client.chat.completions.create(**kwargs):
            pieces += [choice.delta.content or "" for choice in chunk.choices]
    else:
        import asyncio

        async def read() -> None:
            client = streamtap.instrument(
                openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=_transport(reads)), **options),
                recorders=[recorder],
            )
            async for chunk in await client.chat.completions.create(**kwargs):
                pieces.extend(choice.delta.content or "" for choice in chunk.choices)

        asyncio.run(read())
    (finished,) = recorder.calls
    return pieces, finished


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("padding", ["k3Rq", None])
def test_the_drivers_deliver_and_count_what_feed_alone_does(
    mode: str, padding: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _reads(padding)
    fitted: list[bytes] = []
    fits = Shape.fits

    def spy(self: Shape, read: bytes) -> bool:
        if fits(self, read):
            fitted.append(read)
            return True
        return False

    monkeypatch.setattr(Shape, "fits", spy)
    with_lane = _run(reads, mode)
    monkeypatch.setattr(Shape, "fits", lambda self, read: False)
    without = _run(reads, mode)
    assert with_lane[0] == without[0] == ["", *ALL, ALL[0], ALL[1], ALL[2], *ALL, ""]
    assert (
        (with_lane[1].outcome, with_lane[1].chunks) == (without[1].outcome, without[1].chunks) == ("ok", 19)
    )
    # The first content chunk commits, the second (through the glance) teaches the shape;
    # every later single, whole one without a quote in its text takes the lane.
    assert len(fitted) == 2 * len(TEXTS) - 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_error_riding_on_a_chunk_still_interrupts_the_stream(mode: str) -> None:
    reads = [text("a"), text("b"), text("c", error={"message": "overloaded", "type": "server_error"})]
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        _run(reads, mode)
    assert raised.value.error_type == "upstream_error_event"


MALFORMED = b'data: {"id":"chatcmpl-1","choices":[{"delta":\n\n'
ERROR_EVENT = b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("bad", "error_type"),
    [(MALFORMED, "bad_response"), (ERROR_EVENT, "upstream_error_event")],
    ids=["malformed", "error-event"],
)
def test_a_failure_in_the_read_that_commits_ends_the_stream_there(
    mode: str, bad: bytes, error_type: str
) -> None:
    # The first read can hold the preamble, the first contents, a failure and more content
    # after it (a busy proxy reads several events at once). The caller gets the text before
    # the failure, then the failure; nothing after it, and never a clean end.
    frames = [
        chat_chunk({"role": "assistant", "content": ""}),
        text("a"),
        text("b"),
        bad,
        text("c"),
        text("d"),
        chat_chunk({}, finish="stop"),
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(frames)
    for cut in range(1, len(stream), 5):
        with pytest.raises(streamtap.StreamInterrupted) as raised:
            _run([stream[:cut], stream[cut:]], mode)
        assert (raised.value.error_type, raised.value.text) == (error_type, "ab"), cut

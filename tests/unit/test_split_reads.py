"""However the network cuts a stream into reads, the caller gets the same answer.

Real streams, as the fake upstream writes them (chat completions and responses), are cut into
two reads at every few bytes and into three at a grid of pairs, and read by the real SDK
through both drivers. A whole stream reads as if it came in one read per event; a stream with a
failure after its first content (an error event, a malformed event) or without its end gives
exactly the text before it and the typed failure, never a clean end and nothing read after it.
Cuts land everywhere: in the preamble, across the commit point, inside the lane's content
frames, across the failure and in the terminal events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest

import streamtap
from streamtap import CallFinished
from streamtap.fake._content import Frame, chat_frames, sse_data, sse_event
from streamtap.fake._responses import ResponseSeed, response_frames

from .finished import Finished

MODEL = "gpt-4o-mini"
PROMPT = "Tell me a story."
CHUNKS = 4
TWO_READ_CUTS = 600  # cuts per stream: every 4th byte of chat's, every 7th of responses'
THREE_READ_POINTS = 18  # a grid of cut points, every pair of them: 153 three-read splits


def _frames(api: str) -> list[Frame]:
    if api == "chat":
        return chat_frames(
            completion_id="chatcmpl-1",
            created=1,
            model=MODEL,
            prompt=PROMPT,
            chunks=CHUNKS,
            include_usage=True,
        )
    return response_frames(
        ResponseSeed(
            response_id="resp_1", item_id="msg_1", created_at=1, model=MODEL, prompt=PROMPT, chunks=CHUNKS
        )
    )


def _failure(api: str, kind: str) -> bytes:
    if kind == "malformed":
        if api == "chat":
            return b'data: {"id":"chatcmpl-1","choices":[{"delta":\n\n'
        return b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":\n\n'
    if api == "chat":
        return sse_data({"error": {"message": "overloaded", "type": "server_error", "code": None}})
    return sse_event(
        "error",
        {
            "type": "error",
            "code": "server_error",
            "message": "overloaded",
            "param": None,
            "sequence_number": 9,
        },
    )


class _Upstream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """Answers every request with the reads set last, one per iteration step."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []

    def answer(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=self)

    def __iter__(self) -> Iterator[bytes]:
        yield from self.reads

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            yield read


def _texts(api: str, item: Any) -> list[str]:
    if api == "chat":
        return [choice.delta.content or "" for choice in item.choices]
    return [item.delta] if item.type == "response.output_text.delta" else []


def _create(client: Any, api: str) -> Any:
    if api == "chat":
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
    return client.responses.create(model=MODEL, input=PROMPT, stream=True)


# One attempt (a failure before commit is the SDK's error, not a retry after a real backoff),
# and no breaker: thousands of failed calls in a row must not open it.
_POLICY = streamtap.Policy(max_attempts=1, breaker=streamtap.BreakerSettings(enabled=False))
_OPTIONS: dict[str, Any] = {"api_key": "sk-x", "base_url": "http://upstream.test/v1"}


class _Reader:
    """One instrumented client of `api` and `mode` over `_Upstream`, read like an app reads."""

    def __init__(self, api: str, mode: str) -> None:
        self.api, self.mode = api, mode
        self.upstream = _Upstream()
        self.recorder = Finished()
        transport = httpx2.MockTransport(self.upstream.answer)
        if mode == "sync":
            raw: Any = openai.OpenAI(http_client=httpx2.Client(transport=transport), **_OPTIONS)
        else:
            raw = openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=transport), **_OPTIONS)
        self.client = streamtap.instrument(raw, policy=_POLICY, recorders=[self.recorder])
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        if self.mode == "sync":
            self.client.close()
        else:
            self.loop.run_until_complete(self.client.close())
        self.loop.close()

    def read(
        self, reads: list[bytes], expected: tuple[type[BaseException], ...] = (openai.APIError,)
    ) -> tuple[str, CallFinished, BaseException | None]:
        """The text the caller read, how the call finished, and what (of `expected`) it raised."""
        self.upstream.reads = reads
        pieces: list[str] = []
        raised: BaseException | None = None
        try:
            if self.mode == "sync":
                for item in _create(self.client, self.api):
                    pieces += _texts(self.api, item)
            else:
                self.loop.run_until_complete(self._read_async(pieces))
        except expected as error:
            raised = error
        (finished,) = self.recorder.calls
        self.recorder.calls.clear()
        return "".join(pieces), finished, raised

    async def _read_async(self, pieces: list[str]) -> None:
        async for item in await _create(self.client, self.api):
            pieces.extend(_texts(self.api, item))


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reader(api: str, mode: str) -> Iterator[_Reader]:
    reader = _Reader(api, mode)
    yield reader
    reader.close()


def _facts(finished: CallFinished) -> tuple[Any, ...]:
    return (finished.input_tokens, finished.output_tokens, finished.finish_reasons, finished.response_id)


def _two_reads(stream: bytes) -> Iterator[list[bytes]]:
    for cut in range(1, len(stream), -(-len(stream) // TWO_READ_CUTS)):
        yield [stream[:cut], stream[cut:]]


def _three_reads(stream: bytes) -> Iterator[list[bytes]]:
    points = range(1, len(stream), -(-len(stream) // THREE_READ_POINTS))
    for first, second in itertools.combinations(points, 2):
        yield [stream[:first], stream[first:second], stream[second:]]


def _splits(stream: bytes) -> Iterator[list[bytes]]:
    yield [stream]
    yield from _two_reads(stream)
    yield from _three_reads(stream)


def test_a_whole_stream_reads_the_same_however_it_is_cut(reader: _Reader) -> None:
    frames = _frames(reader.api)
    text, expected, raised = reader.read([frame.data for frame in frames])
    assert raised is None and expected.outcome == "ok"
    assert expected.chunks == CHUNKS and len(text) > CHUNKS
    for reads in _splits(b"".join(frame.data for frame in frames)):
        got, finished, raised = reader.read(reads)
        cut = [len(read) for read in reads]
        assert (got, raised) == (text, None), cut
        assert (finished.outcome, finished.chunks, finished.attempts) == ("ok", CHUNKS, 1), cut
        assert _facts(finished) == _facts(expected), cut


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("malformed", "bad_response"),
        ("error-event", "upstream_error_event"),
        ("truncated", "stream_truncated"),
    ],
)
def test_a_failure_after_the_first_content_ends_the_stream_there_however_it_is_cut(
    reader: _Reader, kind: str, error_type: str
) -> None:
    frames = _frames(reader.api)
    contents = [i for i, frame in enumerate(frames) if frame.kind == "content"]
    after = contents[1] + 1  # the failure follows the second content frame
    data = [frame.data for frame in frames[:after]]
    before = reader.read(data)[0]
    assert 0 < len(before) < len(reader.read([frame.data for frame in frames])[0])
    if kind != "truncated":
        data += [_failure(reader.api, kind)] + [frame.data for frame in frames[after:]]
    for reads in _splits(b"".join(data)):
        got, finished, raised = reader.read(reads)
        cut = [len(read) for read in reads]
        assert isinstance(raised, streamtap.StreamInterrupted), cut
        assert (got, raised.text, raised.error_type) == (before, before, error_type), cut
        assert (finished.outcome, finished.error_type, finished.chunks) == ("error", error_type, 2), cut


@pytest.mark.parametrize(
    ("damage", "error"),
    [(b"\xff", UnicodeDecodeError), (b"\t", json.JSONDecodeError)],
    ids=["not-utf-8", "not-json"],
)
def test_a_content_event_the_sdk_cannot_decode_is_a_bad_response_not_a_cancel(
    reader: _Reader, damage: bytes, error: type[BaseException]
) -> None:
    # Past commit, a read shaped like the stream's content events goes to the SDK unparsed. If
    # it is not UTF-8, or not JSON (a raw tab in a string), the SDK's decoding raises in the
    # caller's loop; the call still counts as the upstream's error, never as a cancel.
    frames = [frame.data for frame in _frames(reader.api)]
    at = [i for i, frame in enumerate(_frames(reader.api)) if frame.kind == "content"][2]
    before = reader.read(frames[:at])[0]
    text = b'"content":"' if reader.api == "chat" else b'"delta":"'
    frames[at] = frames[at].replace(text, text + damage, 1)
    got, finished, raised = reader.read(frames, expected=(error,))
    assert (got, type(raised)) == (before, error)
    assert (finished.outcome, finished.error_type) == ("error", "bad_response")


def test_a_decode_error_in_the_callers_own_code_is_a_cancel(reader: _Reader) -> None:
    # Only the SDK's decoding failing is the upstream's fault: the caller's own JSON error,
    # leaving a `with stream:` block, closes the stream like any other exit.
    reader.upstream.reads = [frame.data for frame in _frames(reader.api)]

    def read_sync() -> None:
        with _create(reader.client, reader.api) as stream:
            for _ in stream:
                json.loads("{")

    async def read_async() -> None:
        async with await _create(reader.client, reader.api) as stream:
            async for _ in stream:
                json.loads("{")

    read = read_sync if reader.mode == "sync" else lambda: reader.loop.run_until_complete(read_async())
    with pytest.raises(json.JSONDecodeError):
        read()
    (finished,) = reader.recorder.calls
    assert (finished.outcome, finished.error_type) == ("cancelled", None)

"""The per-chunk hot path, made faster for the overhead benchmark, still does what it did.

After commit `StreamAttempt.feed` passes a read that `glance` recognises as one ordinary
content frame on without splitting or parsing it. These tests hold `glance` to the full parse
(it may only answer where the parse agrees) and `feed` to the straightforward frame-by-frame
release it shortcuts.
"""

from __future__ import annotations

import itertools
import threading

import pytest

from streamtap._attempt import StreamAttempt
from streamtap._chat import CHAT
from streamtap._dialect import CONTENT, UNKNOWN, StreamFacts
from streamtap._responses import RESPONSES

_HEAD = '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
CHAT_FRAMES = [
    f'data: {_HEAD}[{{"index":0,"delta":{{"content":"hi"}},"finish_reason":null}}],"usage":null}}',
    f'data: {_HEAD}[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}',
    f'data: {_HEAD}[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}',
    f'data: {_HEAD}[],"usage":{{"prompt_tokens":3,"completion_tokens":2}}}}',
    # The same chunks written with spaces after the colons.
    'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}',
    'data: {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}',
    'data: {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}',
    'data: {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": null}]}',
    # Content text that looks like the keys (escaped inside the JSON string).
    f'data: {_HEAD}[{{"index":0,"delta":{{"content":"\\"error\\": \\"role\\""}},"finish_reason":null}}]}}',
    f'data: {_HEAD}[{{"index":0,"delta":{{"content":"caf\u00e9 \u2603"}},"finish_reason":null}}]}}',
    'data: {"error":{"message":"overloaded","type":"server_error","code":null}}',
    # An error riding on a chunk, and usage on a content chunk (both seen from gateways).
    f'data: {_HEAD}[{{"index":0,"delta":{{"content":"x"}},"finish_reason":null}}],"error":{{"message":"m"}}}}',
    f'data: {_HEAD}[{{"index":0,"delta":{{"content":"x"}},"finish_reason":null}}],"usage":{{"prompt_tokens":1}}}}',
    "data: [DONE]",
    ": keep-alive",
    'data: {"id":"c1",\ndata: "choices":[]}',
    "data: {not json}",
    'data: {"choices":[{"delta":{"content":"x"}}]',
]
EXPECTED_CONTENT = {0, 8, 9}  # the frames glance recognises; every other one is parsed


@pytest.mark.parametrize("index", range(len(CHAT_FRAMES)))
def test_chat_glance_answers_only_where_the_parse_agrees(index: int) -> None:
    frame = CHAT_FRAMES[index].encode()
    facts = StreamFacts()
    kind = CHAT.inspect(frame, facts)
    glanced = CHAT.glance(frame + b"\n\n")
    assert glanced == (CONTENT if index in EXPECTED_CONTENT else UNKNOWN)
    if glanced == CONTENT:
        assert kind == CONTENT
        assert facts == StreamFacts(response_id=facts.response_id, response_model=facts.response_model)


def test_chat_glance_of_invalid_utf8_is_left_to_the_sdk() -> None:
    # After commit the bytes go through as they came, as the SDK would have got them.
    assert (
        CHAT.glance(b'data: {"choices":[{"delta":{"content":"\xff"},"finish_reason":null}]}\n\n') == CONTENT
    )


def _reference_output(frames: list[bytes]) -> bytes:
    return b"".join(frame + b"\n\n" for frame in frames)


def _feed_all(dialect: object, chunks: list[bytes]) -> tuple[bytes, StreamAttempt]:
    attempt = StreamAttempt(
        dialect,  # type: ignore[arg-type]
        sent_at=0.0,
        headers_at=0.0,
        first_token_timeout=None,
        idle_timeout=None,
        deadline=None,
    )
    out = [attempt.feed(chunk, 1.0) for chunk in chunks]
    return b"".join(out), attempt


CONTENT_A = CHAT_FRAMES[0].encode()
ROLE = CHAT_FRAMES[1].encode()
FINISH = CHAT_FRAMES[2].encode()
ERROR_FRAME = CHAT_FRAMES[10].encode()


@pytest.mark.parametrize(
    ("chunks", "expected", "failed"),
    [
        pytest.param(
            [ROLE + b"\n\n", CONTENT_A + b"\n\n", CONTENT_A + b"\n\n", b"data: [DONE]\n\n"],
            [ROLE, CONTENT_A, CONTENT_A, b"data: [DONE]"],
            None,
            id="one-frame-per-chunk",
        ),
        pytest.param(
            [ROLE + b"\n\n" + CONTENT_A + b"\n\n\n\n" + CONTENT_A + b"\n\n\n", FINISH + b"\n\n"],
            [ROLE, CONTENT_A, CONTENT_A, FINISH],
            None,
            id="blank-lines-between-and-after-frames-are-dropped",
        ),
        pytest.param(
            [
                ROLE + b"\n\n" + CONTENT_A + b"\n\n",
                CONTENT_A + b"\n\n" + ERROR_FRAME + b"\n\n" + CONTENT_A + b"\n\n",
            ],
            [ROLE, CONTENT_A, CONTENT_A],
            "upstream_error_event",
            id="frames-after-an-error-event-are-withheld",
        ),
        pytest.param(
            [ROLE + b"\n\n" + CONTENT_A + b"\n\n", CONTENT_A + b"\n\ndata: not json\n\n"],
            [ROLE, CONTENT_A, CONTENT_A],
            "bad_response",
            id="a-bad-frame-after-commit",
        ),
        pytest.param(
            [ROLE + b"\r\n\r\n" + CONTENT_A[:50], CONTENT_A[50:] + b"\r\n\r\n: ping\r\n\r\n"],
            [ROLE, CONTENT_A, b": ping"],
            None,
            id="crlf-split-frames-and-a-comment-after-commit",
        ),
    ],
)
def test_feed_releases_what_the_copying_version_did(
    chunks: list[bytes], expected: list[bytes], failed: str | None
) -> None:
    out, attempt = _feed_all(CHAT, chunks)
    assert out == _reference_output(expected)
    assert (attempt.failure.error_type if attempt.failure else None) == failed


def test_feed_ends_on_a_chunk_ending_with_three_newlines() -> None:
    # frames ending "\n\n\n" used to make feed loop forever
    result: list[bytes] = []
    worker = threading.Thread(
        target=lambda: result.append(_feed_all(CHAT, [ROLE + b"\n\n" + CONTENT_A + b"\n\n\n"])[0]),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "StreamAttempt.feed did not return"
    assert result == [_reference_output([ROLE, CONTENT_A])]


def test_every_split_of_a_responses_stream_releases_the_same_bytes() -> None:
    frames = [
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"r1"}}',
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,"delta":"a"}',
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":2,"delta":"b"}',
        b'event: response.completed\ndata: {"type":"response.completed","sequence_number":3,"response":{"id":"r1"}}',
    ]
    body = _reference_output(frames)
    for cut_a, cut_b in itertools.combinations(range(0, len(body), 37), 2):
        out, attempt = _feed_all(RESPONSES, [body[:cut_a], body[cut_a:cut_b], body[cut_b:]])
        assert out == body, (cut_a, cut_b)
        assert attempt.failure is None
        assert (attempt.terminal, attempt.chunks) == (True, 2)

"""Dialects: frame classification (cheap `glance` vs full `inspect`) and answer synthesis.

Synthesized streams are read back by the real openai SDK (its `Stream`, its chat accumulator
and its responses accumulator), so a caller served by a fallback sees ordinary SDK objects.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx2
import openai
import pydantic
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from streamtap._chat import CHAT
from streamtap._dialect import (
    BAD,
    COMMENT,
    CONTENT,
    ERROR,
    PREAMBLE,
    TERMINAL,
    UNKNOWN,
    Dialect,
    StreamFacts,
    dialect_for,
)
from streamtap._responses import RESPONSES
from streamtap._resume import last_sequence_number, retrieve_url
from streamtap._sse import encode_event, encode_json, parse_frame, split_frames

# -- real-shaped frames ------------------------------------------------------------------------

_HEAD = (
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06",'
    '"service_tier":"default","system_fingerprint":"fp_1","choices":['
)


def chat(choice: str, tail: str = ',"usage":null') -> bytes:
    return f"data: {_HEAD}{choice}]{tail}}}".encode()


def delta(body: str, finish: str = "null") -> str:
    return f'{{"index":0,"delta":{body},"logprobs":null,"finish_reason":{finish}}}'


C_ROLE = chat(delta('{"role":"assistant","content":"","refusal":null}'))
C_CONTENT = chat(delta('{"content":"Hello"}'))
C_TOOL = chat(delta('{"tool_calls":[{"index":0,"function":{"arguments":"{\\"a"}}]}'))
C_REFUSAL = chat(delta('{"refusal":"I cannot"}'))
C_REASONING = chat(delta('{"reasoning_content":"think"}'))
C_AUDIO = chat(delta('{"audio":{"id":"audio_1","transcript":"Hello"}}'))
C_FINISH = chat(delta("{}", '"stop"'))
# n=2 in one chunk: a content delta still streaming beside a choice that has finished.
C_ONE_OF_TWO_FINISHED = chat(
    delta('{"content":"a"}') + "," + delta('{"content":"b"}', '"stop"').replace('"index":0', '"index":1')
)
C_FILTER = chat(
    '{"index":0,"delta":{},"content_filter_results":{"hate":{"filtered":false}},"finish_reason":null}'
)
C_USAGE = chat(
    "",
    ',"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,'
    '"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}',
)
C_DONE = b"data: [DONE]"
C_ERROR = (
    b'data: {"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}'
)
C_SPACED = b'data: {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}'
C_SPACED_FINISH = b'data: {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}'
C_SPACED_USAGE = b'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
COMMENT_FRAME = b": keep-alive"


def resp(kind: str, **fields: Any) -> bytes:
    payload = {"type": kind, "sequence_number": fields.pop("seq", 0), **fields}
    return encode_event(json.dumps(payload, separators=(",", ":")), event=kind)[:-2]


_RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "in_progress",
    "model": "gpt-4o-2024-08-06",
    "output": [],
    "usage": None,
}
_USAGE = {
    "input_tokens": 9,
    "output_tokens": 2,
    "total_tokens": 11,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens_details": {"reasoning_tokens": 0},
}
R_CREATED = resp("response.created", response=_RESPONSE)
R_IN_PROGRESS = resp("response.in_progress", seq=1, response=_RESPONSE)
R_ITEM_ADDED = resp(
    "response.output_item.added",
    seq=2,
    output_index=0,
    item={"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []},
)
R_DELTA = resp(
    "response.output_text.delta",
    seq=3,
    item_id="msg_1",
    output_index=0,
    content_index=0,
    delta="Hello",
    logprobs=[],
)
R_ARGS_DELTA = resp(
    "response.function_call_arguments.delta", seq=3, item_id="fc_1", output_index=0, delta='{"a'
)
# Some servers open a text with an empty delta: no content yet, so no commit on it.
R_EMPTY_DELTA = resp(
    "response.output_text.delta",
    seq=3,
    item_id="msg_1",
    output_index=0,
    content_index=0,
    delta="",
    logprobs=[],
)
R_REASONING_DELTA = resp(
    "response.reasoning_summary_text.delta",
    seq=3,
    item_id="rs_1",
    output_index=0,
    summary_index=0,
    delta="hm",
)
R_PARTIAL_IMAGE = resp(
    "response.image_generation_call.partial_image",
    seq=3,
    item_id="ig_1",
    output_index=0,
    partial_image_index=0,
    partial_image_b64="iVBORw0KGgo",
)
R_TEXT_DONE = resp(
    "response.output_text.done", seq=4, item_id="msg_1", output_index=0, content_index=0, text="Hello"
)
R_COMPLETED = resp(
    "response.completed", seq=5, response={**_RESPONSE, "status": "completed", "usage": _USAGE}
)
R_INCOMPLETE = resp(
    "response.incomplete",
    seq=5,
    response={
        **_RESPONSE,
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "usage": _USAGE,
    },
)
R_FAILED = resp(
    "response.failed",
    seq=5,
    response={**_RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "boom"}},
)
R_ERROR = resp("error", seq=5, code="rate_limit_exceeded", message="slow down", param=None)


def fresh(dialect: Dialect, method: str, frame: bytes) -> tuple[int, StreamFacts]:
    facts = StreamFacts()
    kind = getattr(dialect, method)(frame, facts)
    return kind, facts


# -- chat classification ------------------------------------------------------------------------

CHAT_KINDS = [
    pytest.param(C_ROLE, PREAMBLE, id="role"),
    pytest.param(C_CONTENT, CONTENT, id="content"),
    pytest.param(C_TOOL, CONTENT, id="tool_call"),
    pytest.param(C_REFUSAL, CONTENT, id="refusal"),
    pytest.param(C_REASONING, CONTENT, id="reasoning"),
    pytest.param(C_AUDIO, CONTENT, id="audio"),
    pytest.param(C_FINISH, PREAMBLE, id="finish"),
    pytest.param(C_ONE_OF_TWO_FINISHED, CONTENT, id="one_of_two_choices_finished"),
    pytest.param(C_FILTER, PREAMBLE, id="azure_filter"),
    pytest.param(C_USAGE, PREAMBLE, id="usage"),
    pytest.param(C_DONE, TERMINAL, id="done"),
    pytest.param(C_ERROR, ERROR, id="error"),
    pytest.param(C_SPACED, CONTENT, id="spaced_content"),
    pytest.param(C_SPACED_FINISH, PREAMBLE, id="spaced_finish"),
    pytest.param(C_SPACED_USAGE, PREAMBLE, id="spaced_usage"),
    pytest.param(COMMENT_FRAME, COMMENT, id="comment"),
    pytest.param(b'data: {"id":', BAD, id="truncated_json"),
    pytest.param(b"data: [1, 2]", BAD, id="not_an_object"),
    pytest.param(b"data: nope", BAD, id="not_json"),
]


def assert_glance_is_sound(dialect: Dialect, frame: bytes, kind: int) -> int:
    """`glance` answers only for frames whose full parse agrees and tells nothing more."""
    inspected, facts = fresh(dialect, "inspect", frame)
    assert inspected == kind
    glanced = dialect.glance(frame + b"\n\n")
    if glanced != UNKNOWN:
        assert glanced == kind
        assert facts.finish_reasons == [] and facts.input_tokens is None and facts.output_tokens is None
        assert facts.error is None and facts.bad is None
    return glanced


# What glance answers for each frame: the ordinary content and preamble events, nothing else.
CHAT_GLANCES = {
    C_CONTENT: CONTENT,
    C_TOOL: CONTENT,
    C_REFUSAL: CONTENT,
    C_REASONING: CONTENT,
    C_AUDIO: CONTENT,
}


@pytest.mark.parametrize(("frame", "kind"), CHAT_KINDS)
def test_chat_glance_is_sound(frame: bytes, kind: int) -> None:
    assert assert_glance_is_sound(CHAT, frame, kind) == CHAT_GLANCES.get(frame, UNKNOWN)


@pytest.mark.parametrize(
    "read",
    [
        C_CONTENT,
        C_CONTENT + b"\n\n" + C_CONTENT + b"\n\n",
        C_CONTENT.replace(b'{"content"', b'{\r"content"') + b"\n\n",
        C_CONTENT + b"\r\n\r\n",
        C_CONTENT[:-1] + b"\n\n",
        C_CONTENT + b"\n\n\n",
        b": keep-alive\n\n",
    ],
    ids=["unterminated", "two_frames", "cr_inside", "crlf", "cut_json", "three_newlines", "comment"],
)
def test_chat_glance_leaves_unusual_reads_to_the_parser(read: bytes) -> None:
    assert CHAT.glance(read) == UNKNOWN


def test_chat_facts() -> None:
    facts = StreamFacts()
    kinds = [CHAT.inspect(f, facts) for f in (C_ROLE, C_CONTENT, C_FINISH, C_USAGE, C_DONE)]
    assert kinds == [PREAMBLE, CONTENT, PREAMBLE, PREAMBLE, TERMINAL]
    assert facts.response_id == "chatcmpl-1"
    assert facts.response_model == "gpt-4o-2024-08-06"
    assert (facts.input_tokens, facts.output_tokens) == (9, 2)
    assert facts.finish_reasons == ["stop"]
    assert facts.error is None and facts.bad is None


def test_chat_service_tier_fingerprint_and_usage_details() -> None:
    # For openai.response.service_tier / system_fingerprint and gen_ai.usage.cache_read.input_tokens /
    # reasoning.output_tokens: the first chunk's tier and fingerprint, the usage chunk's details.
    facts = StreamFacts()
    usage = chat(
        "",
        ',"usage":{"prompt_tokens":90,"completion_tokens":20,"total_tokens":110,'
        '"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":12}}',
    )
    for frame in (C_ROLE, C_CONTENT, C_FINISH, usage, C_DONE):
        CHAT.inspect(frame, facts)
    assert (facts.service_tier, facts.system_fingerprint) == ("default", "fp_1")
    assert (facts.cached_input_tokens, facts.reasoning_output_tokens) == (64, 12)
    bare = StreamFacts()
    CHAT.inspect(C_SPACED_USAGE, bare)  # no details, no tier: nothing made up
    assert (bare.service_tier, bare.system_fingerprint) == (None, None)
    assert (bare.cached_input_tokens, bare.reasoning_output_tokens) == (None, None)
    body = StreamFacts()
    CHAT.body_facts({**CHAT_BODY, "service_tier": "flex", "system_fingerprint": "fp_2"}, body)
    assert (body.service_tier, body.system_fingerprint) == ("flex", "fp_2")


def test_chat_error_payload_is_kept() -> None:
    kind, facts = fresh(CHAT, "inspect", C_ERROR)
    assert kind == ERROR
    assert facts.error == {
        "error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}
    }


def test_chat_malformed_json_is_bad() -> None:
    assert CHAT.glance(b'data: {"choices":[\n\n') == UNKNOWN
    kind, facts = fresh(CHAT, "inspect", b'data: {"choices":[')
    assert kind == BAD
    assert facts.bad is not None and facts.bad.startswith("an event is not valid JSON (")
    kind, facts = fresh(CHAT, "inspect", b"data: 42")
    assert (kind, facts.bad) == (BAD, "an event is not a JSON object")


def test_chat_invalid_utf8_is_bad() -> None:
    kind, facts = fresh(CHAT, "inspect", b'data: {"choices":[{"delta":{"content":"\xff"}}]}')
    assert kind == BAD
    assert facts.bad is not None and facts.bad.startswith("an event is not valid UTF-8 (")


@pytest.mark.parametrize(
    "text",
    [
        'the "error" was mine',
        'a "usage": {"prompt_tokens": 1} table',
        'set "finish_reason": "stop" here',
        'the "role": "assistant" key and "delta":{} too',
        "error usage finish_reason",
    ],
)
def test_chat_fast_path_never_misreads_content_text(text: str) -> None:
    for ensure_ascii in (True, False):
        chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        frame = b"data: " + json.dumps(chunk, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
        assert CHAT.glance(frame + b"\n\n") == CONTENT, text
        kind, facts = fresh(CHAT, "inspect", frame)
        assert kind == CONTENT, text
        assert (facts.error, facts.finish_reasons, facts.input_tokens) == (None, [], None)
        assert CHAT.text(frame + b"\n\n") == text


def test_chat_text_of_frames() -> None:
    frames = b"\n\n".join([C_ROLE, C_CONTENT, COMMENT_FRAME, C_TOOL, C_CONTENT, C_DONE]) + b"\n\n"
    assert CHAT.text(frames) == "HelloHello"


def test_chat_text_of_several_choices_is_the_first_ones() -> None:
    # n=2 streams both choices' deltas interleaved; joined, they would be neither answer (and a
    # cached answer would replay that). The non-streamed answer's text is its first choice too.
    def delta(index: int, content: str) -> bytes:
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": {"content": content}}],
        }
        return b"data: " + json.dumps(chunk).encode()

    frames = (
        b"\n\n".join([delta(0, "Hel"), delta(1, "Bon"), delta(0, "lo"), delta(1, "jour"), C_DONE]) + b"\n\n"
    )
    assert CHAT.text(frames) == "Hello"
    body = {
        "choices": [
            {"index": 0, "message": {"content": "Hello"}},
            {"index": 1, "message": {"content": "Bonjour"}},
        ]
    }
    assert [m["parts"] for m in CHAT.answer_messages(body, "error")] == [
        [{"type": "text", "content": "Hello"}],
        [{"type": "text", "content": "Bonjour"}],
    ]


# -- responses classification ---------------------------------------------------------------------

RESPONSES_KINDS = [
    pytest.param(R_CREATED, PREAMBLE, id="created"),
    pytest.param(R_IN_PROGRESS, PREAMBLE, id="in_progress"),
    pytest.param(R_ITEM_ADDED, PREAMBLE, id="item_added"),
    pytest.param(R_DELTA, CONTENT, id="text_delta"),
    pytest.param(R_ARGS_DELTA, CONTENT, id="arguments_delta"),
    pytest.param(R_EMPTY_DELTA, PREAMBLE, id="empty_delta"),
    pytest.param(R_REASONING_DELTA, CONTENT, id="reasoning_delta"),
    pytest.param(R_PARTIAL_IMAGE, CONTENT, id="partial_image"),
    pytest.param(R_TEXT_DONE, PREAMBLE, id="text_done"),
    pytest.param(R_COMPLETED, TERMINAL, id="completed"),
    pytest.param(R_INCOMPLETE, TERMINAL, id="incomplete"),
    pytest.param(R_FAILED, ERROR, id="failed"),
    pytest.param(R_ERROR, ERROR, id="error"),
    pytest.param(COMMENT_FRAME, COMMENT, id="comment"),
    pytest.param(b'event: response.output_text.delta\ndata: {"type":', BAD, id="truncated_json"),
    pytest.param(b'data: {"type":"response.output_text.delta","delta":"x"}', CONTENT, id="no_event_line"),
]


RESPONSES_GLANCES = {
    R_CREATED: PREAMBLE,
    R_IN_PROGRESS: PREAMBLE,
    R_ITEM_ADDED: PREAMBLE,
    R_DELTA: CONTENT,
    R_ARGS_DELTA: CONTENT,
    R_REASONING_DELTA: CONTENT,
    R_PARTIAL_IMAGE: CONTENT,
    R_TEXT_DONE: PREAMBLE,
}


@pytest.mark.parametrize(("frame", "kind"), RESPONSES_KINDS)
def test_responses_glance_is_sound(frame: bytes, kind: int) -> None:
    assert assert_glance_is_sound(RESPONSES, frame, kind) == RESPONSES_GLANCES.get(frame, UNKNOWN)


def test_responses_created_fills_id_and_model() -> None:
    kind, facts = fresh(RESPONSES, "inspect", R_CREATED)
    assert kind == PREAMBLE
    assert (facts.response_id, facts.response_model) == ("resp_1", "gpt-4o-2024-08-06")
    assert (facts.input_tokens, facts.output_tokens, facts.finish_reasons) == (None, None, [])


def test_responses_completed_fills_usage_and_finish() -> None:
    facts = StreamFacts()
    kinds = [RESPONSES.inspect(f, facts) for f in (R_CREATED, R_DELTA, R_TEXT_DONE, R_COMPLETED)]
    assert kinds == [PREAMBLE, CONTENT, PREAMBLE, TERMINAL]
    assert (facts.input_tokens, facts.output_tokens) == (9, 2)
    assert facts.finish_reasons == ["stop"]


def test_responses_service_tier_and_usage_details_come_from_the_terminal_response() -> None:
    facts = StreamFacts()
    created = resp("response.created", response={**_RESPONSE, "service_tier": "auto"})
    usage = {
        **_USAGE,
        "input_tokens_details": {"cached_tokens": 5},
        "output_tokens_details": {"reasoning_tokens": 1},
    }
    completed = resp(
        "response.completed",
        seq=5,
        response={**_RESPONSE, "status": "completed", "service_tier": "default", "usage": usage},
    )
    for frame in (created, R_DELTA, completed):
        RESPONSES.inspect(frame, facts)
    assert facts.service_tier == "default"  # the tier that served it, not the one asked for
    assert (facts.cached_input_tokens, facts.reasoning_output_tokens) == (5, 1)
    assert facts.system_fingerprint is None


def test_responses_incomplete_reason() -> None:
    kind, facts = fresh(RESPONSES, "inspect", R_INCOMPLETE)
    assert kind == TERMINAL
    assert facts.finish_reasons == ["length"]  # in chat's words, as the official instrumentation


@pytest.mark.parametrize("frame", [R_FAILED, R_ERROR], ids=["failed", "error"])
def test_responses_errors_keep_the_payload(frame: bytes) -> None:
    assert RESPONSES.glance(frame + b"\n\n") == UNKNOWN
    kind, facts = fresh(RESPONSES, "inspect", frame)
    assert kind == ERROR
    assert facts.error == json.loads(parse_frame(frame).data)


def test_chat_finish_reasons_one_per_choice_in_the_choices_order() -> None:
    facts = StreamFacts()
    second_ends_first = delta("{}", '"length"').replace('"index":0', '"index":1')
    frames = (C_ROLE, C_CONTENT, C_FINISH, chat(second_ends_first), C_FINISH, C_USAGE, C_DONE)
    for frame in frames:  # the first choice's reason is repeated by a closing chunk
        CHAT.inspect(frame, facts)
    assert facts.finish_reasons == ["stop", "length"]
    assert facts.finished_choices == {0, 1}
    facts = StreamFacts()
    for frame in (chat(second_ends_first), C_FINISH, chat(second_ends_first)):
        CHAT.inspect(frame, facts)
    assert facts.finish_reasons == ["stop", "length"]  # index 0 first, though it ended second


@pytest.mark.parametrize(
    "frame",
    [
        b'data: {"error":{"message":"gateway timeout","type":"server_error","code":"timeout"}}',
        b'event: response.output_text.delta\ndata: {"error":{"message":"m","code":"x"}}',
    ],
    ids=["bare", "under_another_event"],
)
def test_responses_event_with_a_top_level_error_is_an_error(frame: bytes) -> None:
    # The SDK raises APIError at any event whose data holds a truthy `error`, typed or not.
    kind, facts = fresh(RESPONSES, "inspect", frame)
    assert kind == ERROR
    assert facts.error == json.loads(parse_frame(frame).data)
    assert fresh(RESPONSES, "inspect", b'data: {"type":"response.in_progress","error":null}')[0] == PREAMBLE
    # After commit the glance comes first: it leaves such a frame to the parse, whatever its line.
    assert RESPONSES.glance(frame + b"\n\n") == UNKNOWN


def test_responses_invalid_utf8_is_bad() -> None:
    kind, facts = fresh(RESPONSES, "inspect", b'event: response.output_text.delta\ndata: {"delta":"\xff"}')
    assert kind == BAD
    assert facts.bad is not None and facts.bad.startswith("an event is not valid UTF-8 (")


def test_responses_text_and_sequence_number() -> None:
    frames = b"\n\n".join([R_CREATED, R_DELTA, R_ARGS_DELTA, R_DELTA, R_COMPLETED]) + b"\n\n"
    assert RESPONSES.text(frames) == "HelloHello"
    delivered = [R_CREATED + b"\n\n" + R_IN_PROGRESS + b"\n\n", R_DELTA + b"\n\n"]
    assert last_sequence_number(delivered) == 3
    # A comment (or any frame without one) is skipped: the resume starts after the last numbered.
    assert last_sequence_number([*delivered, COMMENT_FRAME + b"\n\n" + C_DONE + b"\n\n"]) == 3
    assert last_sequence_number([R_COMPLETED + b"\n\n" + COMMENT_FRAME + b"\n\n"]) == 5
    assert last_sequence_number([C_CONTENT + b"\n\n", b'data: {"sequence_number":"3"}\n\n']) is None
    assert last_sequence_number([]) is None


@pytest.mark.parametrize(
    ("url", "after", "expected"),
    [
        ("http://up/v1/responses", None, "http://up/v1/responses/resp_1?stream=true"),
        ("http://up/v1/responses", 7, "http://up/v1/responses/resp_1?stream=true&starting_after=7"),
        (
            "https://az/openai/responses?api-version=2025-04-01-preview",
            7,
            "https://az/openai/responses/resp_1?api-version=2025-04-01-preview&stream=true&starting_after=7",
        ),
        # The caller's own stream and starting_after are replaced, never sent twice; the rest
        # stays as the caller encoded it.
        (
            "http://up/v1/responses?stream=false&a=x%20y&starting%5Fafter=1&&b",
            None,
            "http://up/v1/responses/resp_1?a=x%20y&b&stream=true",
        ),
        ("http://up/v1/responses?", 0, "http://up/v1/responses/resp_1?stream=true&starting_after=0"),
    ],
    ids=["plain", "resume", "api-version-kept", "own-params-replaced", "empty-query"],
)
def test_retrieve_url_keeps_the_query_of_the_create(url: str, after: int | None, expected: str) -> None:
    assert retrieve_url(url, "resp_1", after) == expected


def test_dialect_for() -> None:
    assert dialect_for("responses") is RESPONSES
    assert dialect_for("chat_completions") is CHAT
    assert (CHAT.api, RESPONSES.api) == ("chat_completions", "responses")


# -- synthesis read back by the real SDK ----------------------------------------------------------

CLIENT = openai.OpenAI(api_key="sk-x", base_url="http://x/v1")


def sdk_stream(content: bytes, cast_to: Any, path: str) -> openai.Stream[Any]:
    response = httpx2.Response(
        200,
        content=content,
        headers={"content-type": "text/event-stream"},
        request=httpx2.Request("POST", f"http://x/v1{path}"),
    )
    return openai.Stream(cast_to=cast_to, response=response, client=CLIENT)


def chat_chunks(content: bytes) -> list[ChatCompletionChunk]:
    # Strict validation too: the SDK itself builds objects leniently.
    for frame in split_frames(content):
        data = parse_frame(frame).data
        if data != "[DONE]":
            ChatCompletionChunk.model_validate_json(data)
    return list(sdk_stream(content, ChatCompletionChunk, "/chat/completions"))


def response_events(content: bytes, *, strict: bool = True) -> list[Any]:
    # Strict validation only where streamtap wrote every field (from_json passes the body through).
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
    for frame in split_frames(content) if strict else ():
        adapter.validate_json(parse_frame(frame).data)
    return list(sdk_stream(content, ResponseStreamEvent, "/responses"))


TEXT = "h\u00e9llo \U0001f30d\nline two"


def test_chat_from_text_reads_back() -> None:
    content = CHAT.from_text(TEXT, "gpt-x")
    assert content.endswith(b"data: [DONE]\n\n")
    chunks = chat_chunks(content)
    assert [type(c) for c in chunks] == [ChatCompletionChunk] * 3
    assert {c.model for c in chunks} == {"gpt-x"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, "stop"]
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    assert final.choices[0].message.content == TEXT
    assert final.choices[0].finish_reason == "stop"


def test_chat_from_text_classifies_like_a_real_stream() -> None:
    facts = StreamFacts()
    frames = split_frames(CHAT.from_text(TEXT, "gpt-x"))
    assert [CHAT.inspect(f, facts) for f in frames] == [PREAMBLE, CONTENT, PREAMBLE, TERMINAL]
    assert facts.finish_reasons == ["stop"]
    assert (facts.response_id, facts.response_model) == ("chatcmpl-streamtap-cache", "gpt-x")
    assert CHAT.text(CHAT.from_text(TEXT, "gpt-x")) == TEXT


CHAT_BODY: dict[str, Any] = {
    "id": "chatcmpl-9",
    "object": "chat.completion",
    "created": 5,
    "model": "gpt-4o-2024",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "second", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        },
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}


def test_chat_from_json_tool_calls_choices_and_usage() -> None:
    chunks = chat_chunks(CHAT.from_json(CHAT_BODY, {"stream_options": {"include_usage": True}}))
    assert {c.id for c in chunks} == {"chatcmpl-9"}
    assert {c.created for c in chunks} == {5}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 10
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    first, second = final.choices
    assert first.finish_reason == "tool_calls"
    calls = first.message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("call_1", "f", '{"a":1}'),
        ("call_2", "g", "{}"),
    ]
    assert (second.message.content, second.finish_reason) == ("second", "stop")
    assert first.message.content is None  # as the answer said, and a streamed tool call's role chunk
    assert final.usage is not None and (final.usage.prompt_tokens, final.usage.completion_tokens) == (7, 3)
    facts = StreamFacts()
    CHAT.body_facts(CHAT_BODY, facts)
    assert (facts.response_id, facts.response_model) == ("chatcmpl-9", "gpt-4o-2024")
    assert (facts.input_tokens, facts.output_tokens, facts.finish_reasons) == (
        7,
        3,
        ["tool_calls", "stop"],
    )


@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}])
def test_chat_from_json_carries_usage_only_when_asked(options: dict[str, Any] | None) -> None:
    """As a stream does: its usage chunk, which has no choices, only with include_usage."""
    request = {} if options is None else {"stream_options": options}
    chunks = chat_chunks(CHAT.from_json(CHAT_BODY, request))
    assert all(c.choices and c.usage is None for c in chunks)
    facts = StreamFacts()
    CHAT.body_facts(CHAT_BODY, facts)  # the call's tokens come from the answer all the same
    assert (facts.input_tokens, facts.output_tokens) == (7, 3)


_LOGPROBS = {
    "content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}],
    "refusal": None,
}
_CITED = {
    "id": "chatcmpl-cited",
    "object": "chat.completion",
    "created": 5,
    "model": "gpt-4o-search",
    "service_tier": "default",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hi",
                "refusal": None,
                "annotations": [
                    {
                        "type": "url_citation",
                        "url_citation": {
                            "url": "https://a.example",
                            "title": "A",
                            "start_index": 0,
                            "end_index": 2,
                        },
                    }
                ],
            },
            "logprobs": _LOGPROBS,
            "finish_reason": "stop",
        }
    ],
}


def test_chat_from_json_keeps_logprobs_citations_audio_and_the_serving_facts() -> None:
    """What the answer says beside its text reaches a streaming caller as a stream says it."""
    chunks = chat_chunks(CHAT.from_json(_CITED, {}))
    assert {(c.service_tier, c.system_fingerprint) for c in chunks} == {("default", "fp_1")}
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    choice = state.get_final_completion().choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert [t.token for t in choice.logprobs.content] == ["Hi"]
    assert choice.message.annotations is not None
    assert choice.message.annotations[0].url_citation.url == "https://a.example"
    audio = {"id": "audio_1", "data": "UklGRg==", "expires_at": 9, "transcript": "Hello"}
    spoken = {**_CITED, "choices": [{"index": 0, "message": {"role": "assistant", "audio": audio}}]}
    (said,) = [
        c.choices[0].delta.audio for c in chat_chunks(CHAT.from_json(spoken, {})) if c.choices[0].delta.audio
    ]
    assert (said.transcript, said.data, said.id) == ("Hello", "UklGRg==", "audio_1")


def test_chat_answers_a_text_replay_would_change_are_not_cached() -> None:
    """Logprobs and citations are lost in a replay of the text: such answers are not kept."""
    assert CHAT.cacheable_answer(_CITED) is None
    assert CHAT.cacheable_text(CHAT.from_json(_CITED, {})) is None
    choice = {**_CITED["choices"][0], "message": {"role": "assistant", "content": "Hi"}}
    with_logprobs = {**_CITED, "choices": [choice]}
    assert CHAT.cacheable_answer(with_logprobs) is None
    assert CHAT.cacheable_text(CHAT.from_json(with_logprobs, {})) is None
    plain = {**_CITED, "choices": [{**choice, "logprobs": None}]}
    assert CHAT.cacheable_answer(plain) == "Hi"
    assert CHAT.cacheable_text(CHAT.from_json(plain, {})) == "Hi"


def test_chat_from_json_refusal() -> None:
    body = {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": "no"}}],
    }
    chunks = chat_chunks(CHAT.from_json(body, {}))
    assert [c.choices[0].delta.refusal for c in chunks] == [None, "no", None]
    assert chunks[0].choices[0].delta.content is None
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_answer_json_is_a_valid_completion() -> None:
    body = CHAT.answer_json(TEXT, "gpt-x")
    completion = ChatCompletion.model_validate(body)
    assert completion.choices[0].message.content == TEXT
    assert completion.model == "gpt-x"
    said = [{"role": "assistant", "parts": [{"type": "text", "content": TEXT}], "finish_reason": "stop"}]
    assert CHAT.answer_messages(body, "error") == said
    assert CHAT.answer_messages({"choices": []}, "error") == []


def test_chat_error_frame_makes_the_sdk_raise() -> None:
    content = CHAT.from_text("partial", "m").split(b"data: [DONE]")[0] + CHAT.error_frame("stall", "no event")
    stream = sdk_stream(content, ChatCompletionChunk, "/chat/completions")
    seen: list[str] = []
    with pytest.raises(openai.APIError, match=r"^no event$") as raised:
        seen.extend(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "".join(seen) == "partial"
    assert raised.value.body == {
        "message": "no event",
        "type": "streamtap_error",
        "param": None,
        "code": "stall",
    }
    assert CHAT.glance(CHAT.error_frame("stall", "x")) == UNKNOWN
    assert fresh(CHAT, "inspect", CHAT.error_frame("stall", "x")[:-2])[0] == ERROR


UPSTREAM_ERROR = {
    "message": "Invalid prompt.",
    "type": "invalid_request_error",
    "param": None,
    "code": "invalid_prompt",
}


@pytest.mark.parametrize("dialect", [CHAT, RESPONSES], ids=["chat", "responses"])
def test_an_error_frame_carries_the_upstreams_own_error_for_the_client_to_branch_on(dialect: Any) -> None:
    """The proxy ends a stream that the upstream's error event ended with that event's error:
    its code, type and param, as the client's SDK would have raised them without the proxy."""
    cast, path = (
        (ChatCompletionChunk, "/chat/completions") if dialect is CHAT else (ResponseStreamEvent, "/responses")
    )
    upstream = {**UPSTREAM_ERROR, "sequence_number": 7}  # a responses error event's own fields too
    frame = dialect.error_frame("upstream_error_event", "streamtap: ...", upstream)
    with pytest.raises(openai.APIError) as raised:
        list(sdk_stream(frame, cast, path))
    assert (raised.value.code, raised.value.type, raised.value.message) == (
        "invalid_prompt",
        "invalid_request_error",
        "Invalid prompt.",
    )
    assert raised.value.body == UPSTREAM_ERROR


RESPONSES_TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_responses_from_text_reads_back() -> None:
    content = RESPONSES.from_text(TEXT, "gpt-x")
    events = response_events(content)
    assert [e.type for e in events] == RESPONSES_TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # The SDK's responses accumulator builds the final Response from them.
    raw = sdk_stream(content, ResponseStreamEvent, "/responses")
    accumulated = ResponseStream(
        raw_stream=raw, text_format=openai.omit, input_tools=openai.omit, starting_after=None
    )
    final = accumulated.get_final_response()
    assert final.output_text == TEXT
    assert (final.model, final.status, final.id) == ("gpt-x", "completed", "resp_streamtap_cache")
    facts = StreamFacts()
    kinds = [RESPONSES.inspect(f, facts) for f in split_frames(content)]
    assert kinds == [PREAMBLE] * 4 + [CONTENT] + [PREAMBLE] * 3 + [TERMINAL]
    assert facts.finish_reasons == ["stop"]
    assert RESPONSES.text(content) == TEXT


RESPONSES_BODY: dict[str, Any] = {
    "id": "resp_9",
    "object": "response",
    "created_at": 5,
    "model": "gpt-4o",
    "status": "completed",
    "output": [
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "f",
            "arguments": '{"a":1}',
            "status": "completed",
        },
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "hi", "annotations": []}],
        },
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": _USAGE,
}


def test_responses_from_json_function_call_reasoning_and_usage() -> None:
    content = RESPONSES.from_json(RESPONSES_BODY, {})
    events = response_events(content, strict=False)
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        *RESPONSES_TEXT_EVENTS[2:],
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    raw = sdk_stream(content, ResponseStreamEvent, "/responses")
    final = ResponseStream(
        raw_stream=raw, text_format=openai.omit, input_tools=openai.omit, starting_after=None
    ).get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "function_call", "message"]
    assert final.output[1].arguments == '{"a":1}'  # type: ignore[union-attr]
    assert final.output_text == "hi"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (9, 2)
    facts = StreamFacts()
    for frame in split_frames(content):
        RESPONSES.inspect(frame, facts)
    assert (facts.response_id, facts.input_tokens, facts.output_tokens) == ("resp_9", 9, 2)
    assert facts.finish_reasons == ["tool_calls"]  # it calls the caller's function, as chat says


def test_responses_from_json_streams_a_reasoning_summary_and_text_as_their_events() -> None:
    """A reasoning item's summary and reasoning text stream as the API's events, each one
    valid, so a caller reading reasoning deltas gets them from a non-streaming fallback too."""
    reasoning = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Weighing"}, {"type": "summary_text", "text": "Done"}],
        "content": [{"type": "reasoning_text", "text": "step one"}],
    }
    body = {**RESPONSES_BODY, "output": [reasoning, RESPONSES_BODY["output"][2]]}
    content = RESPONSES.from_json(body, {})
    frames = split_frames(content)
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
    reasoning_events = [
        adapter.validate_json(parse_frame(frame).data) for frame in frames if b'"response.reasoning' in frame
    ]
    assert [(e.type, getattr(e, "summary_index", None)) for e in reasoning_events] == [
        ("response.reasoning_summary_part.added", 0),
        ("response.reasoning_summary_text.delta", 0),
        ("response.reasoning_summary_text.done", 0),
        ("response.reasoning_summary_part.done", 0),
        ("response.reasoning_summary_part.added", 1),
        ("response.reasoning_summary_text.delta", 1),
        ("response.reasoning_summary_text.done", 1),
        ("response.reasoning_summary_part.done", 1),
        ("response.reasoning_text.delta", None),
        ("response.reasoning_text.done", None),
    ]
    deltas = [e.delta for e in reasoning_events if e.type.endswith(".delta")]
    assert deltas == ["Weighing", "Done", "step one"]
    events = response_events(content, strict=False)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[2].item.summary == []  # added empty, as the API streams it
    facts = StreamFacts()
    kinds = [RESPONSES.inspect(frame, facts) for frame in frames]
    assert kinds[kinds.index(CONTENT) - 1] == PREAMBLE  # the first summary delta commits
    raw = sdk_stream(content, ResponseStreamEvent, "/responses")
    final = ResponseStream(
        raw_stream=raw, text_format=openai.omit, input_tools=openai.omit, starting_after=None
    ).get_final_response()
    assert [s.text for s in final.output[0].summary] == ["Weighing", "Done"]  # type: ignore[union-attr]
    assert final.output_text == "hi"


def test_responses_from_json_streams_a_texts_logprobs_with_it() -> None:
    logprobs = [{"token": "hi", "logprob": -0.2, "bytes": [104, 105], "top_logprobs": []}]
    message = RESPONSES_BODY["output"][2]
    part = {**message["content"][0], "logprobs": logprobs}
    body = {**RESPONSES_BODY, "output": [{**message, "content": [part]}]}
    events = response_events(RESPONSES.from_json(body, {}), strict=False)
    texts = [e for e in events if e.type in ("response.output_text.delta", "response.output_text.done")]
    assert [[t.token for t in e.logprobs] for e in texts] == [["hi"], ["hi"]]


def test_responses_from_json_streams_a_refusal_as_refusal_events() -> None:
    refusal = {"type": "refusal", "refusal": "I can't help with that."}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed"}
    body = {**RESPONSES_BODY, "output": [{**message, "content": [refusal]}]}
    content = RESPONSES.from_json(body, {})
    events = response_events(content, strict=False)
    assert [e.type for e in events][3:7] == [
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
    ]
    assert (events[4].delta, events[5].refusal) == (refusal["refusal"], refusal["refusal"])
    # The SDK's stream helper takes them (an output_text event naming this part fails its assert).
    raw = sdk_stream(content, ResponseStreamEvent, "/responses")
    final = ResponseStream(
        raw_stream=raw, text_format=openai.omit, input_tools=openai.omit, starting_after=None
    ).get_final_response()
    assert final.output[0].content[0].refusal == refusal["refusal"]  # type: ignore[union-attr]


def test_responses_from_json_ends_an_incomplete_answer_as_its_stream_would() -> None:
    body = {**RESPONSES_BODY, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    events = response_events(RESPONSES.from_json(body, {}), strict=False)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert "response.completed" not in [e.type for e in events]


def test_responses_answer_json_is_a_valid_response() -> None:
    body = RESPONSES.answer_json(TEXT, "gpt-x")
    assert Response.model_validate(body).output_text == TEXT
    said = [{"role": "assistant", "parts": [{"type": "text", "content": TEXT}], "finish_reason": "stop"}]
    assert RESPONSES.answer_messages(body, "error") == said
    assert RESPONSES.answer_messages(RESPONSES_BODY, "error") == [  # one generation, one message
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "f", "arguments": {"a": 1}},
                                        {"type": "text", "content": "hi"}],
         "finish_reason": "tool_call"},
    ]  # fmt: skip


def test_responses_body_facts() -> None:
    facts = StreamFacts()
    RESPONSES.body_facts({**RESPONSES_BODY, "incomplete_details": {"reason": "content_filter"}}, facts)
    assert (facts.response_id, facts.response_model) == ("resp_9", "gpt-4o")
    assert (facts.input_tokens, facts.output_tokens, facts.finish_reasons) == (9, 2, ["content_filter"])


@pytest.mark.parametrize("status", ["queued", "in_progress", "failed", "cancelled"])
def test_responses_body_facts_of_an_unfinished_response_have_no_finish_reason(status: str) -> None:
    """E.g. `responses.create(background=True)`, answered at once with a queued response."""
    facts = StreamFacts()
    RESPONSES.body_facts({**RESPONSES_BODY, "status": status, "usage": None}, facts)
    assert (facts.response_id, facts.finish_reasons, facts.output_tokens) == ("resp_9", [], None)


@pytest.mark.parametrize("status", ["queued", "in_progress", "cancelled"])
def test_responses_unfinished_answer_is_named(status: str) -> None:
    """Written as a stream it would end with an empty response.completed."""
    body = {**RESPONSES_BODY, "status": status, "output": []}
    assert RESPONSES.unfinished(body) == f"the answer is a response that has not finished (status {status!r})"


@pytest.mark.parametrize("status", ["completed", "incomplete", "failed", None])
def test_responses_finished_answer_is_not_unfinished(status: str | None) -> None:
    body = {k: v for k, v in RESPONSES_BODY.items() if k != "status"}
    assert RESPONSES.unfinished(body if status is None else {**body, "status": status}) is None
    assert CHAT.unfinished({"choices": []}) is None


def test_responses_error_frame_makes_the_sdk_raise() -> None:
    content = RESPONSES.from_text("partial", "m").split(b"event: response.completed")[0]
    content += RESPONSES.error_frame("stream_truncated", "cut")
    stream = sdk_stream(content, ResponseStreamEvent, "/responses")
    seen: list[str] = []
    with pytest.raises(openai.APIError, match=r"^cut$") as raised:
        seen.extend(e.delta for e in stream if e.type == "response.output_text.delta")
    assert "".join(seen) == "partial"
    assert raised.value.body == {
        "message": "cut",
        "type": "streamtap_error",
        "param": None,
        "code": "stream_truncated",
    }
    frame = RESPONSES.error_frame("stream_truncated", "cut")[:-2]
    kind, facts = fresh(RESPONSES, "inspect", frame)
    assert kind == ERROR
    assert facts.error is not None
    assert (facts.error["type"], facts.error["code"], facts.error["message"]) == (
        "error",
        "stream_truncated",
        "cut",
    )


# -- what a cached replay may keep --------------------------------------------------------------


def _chat_stream(*choices: dict[str, Any]) -> bytes:
    return b"".join(encode_json({"id": "c", "choices": [choice]}) for choice in choices) + encode_event(
        "[DONE]"
    )


_TOOL_CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_chat_cacheable_text_is_a_stopped_single_text_answer() -> None:
    assert CHAT.cacheable_text(CHAT.from_text(TEXT, "gpt-x")) == TEXT
    stopped = _chat_stream(
        {"index": 0, "delta": {"content": "a"}, "finish_reason": ""},  # "" is no finish reason
        {"index": 0, "delta": {}, "finish_reason": "stop"},
    )
    assert CHAT.cacheable_text(stopped) == "a"


@pytest.mark.parametrize(
    "choices",
    [
        pytest.param(
            [
                {"index": 0, "delta": {"content": "cut sho"}},
                {"index": 0, "delta": {}, "finish_reason": "length"},
            ],
            id="length",
        ),
        pytest.param(
            [
                {"index": 0, "delta": {"content": "Let me call f"}},
                {"index": 0, "delta": {"tool_calls": [_TOOL_CALL]}},
                {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
            ],
            id="tool-call",
        ),
        pytest.param(
            [
                {"index": 0, "delta": {"content": "x"}},
                {"index": 0, "delta": {"tool_calls": [_TOOL_CALL]}},
                {"index": 0, "delta": {}, "finish_reason": "stop"},
            ],
            id="tool-call-stopped",
        ),
        pytest.param(
            [
                {"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"},
                {"index": 1, "delta": {"content": "b"}, "finish_reason": "stop"},
            ],
            id="two-choices",
        ),
        pytest.param([{"index": 0, "delta": {"content": "a"}}], id="no-finish-reason"),
        pytest.param([{"index": 0, "delta": {}, "finish_reason": "stop"}], id="no-text"),
    ],
)
def test_chat_cacheable_text_refuses_what_a_replay_would_change(choices: list[dict[str, Any]]) -> None:
    assert CHAT.cacheable_text(_chat_stream(*choices)) is None


def test_chat_cacheable_answer() -> None:
    choice = {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"}
    assert CHAT.cacheable_answer({"choices": [choice]}) == "a"
    assert CHAT.cacheable_answer({"choices": [{**choice, "finish_reason": "length"}]}) is None
    assert CHAT.cacheable_answer({"choices": [choice, {**choice, "index": 1}]}) is None
    with_tool = {**choice, "message": {"role": "assistant", "content": "a", "tool_calls": [_TOOL_CALL]}}
    assert CHAT.cacheable_answer({"choices": [with_tool]}) is None
    assert CHAT.cacheable_answer({"choices": []}) is None


def test_responses_cacheable_text_and_answer() -> None:
    assert RESPONSES.cacheable_text(RESPONSES.from_text(TEXT, "gpt-x")) == TEXT
    assert RESPONSES.cacheable_answer(RESPONSES.answer_json(TEXT, "gpt-x")) == TEXT
    # The terminal event names a function call: the caller's to run, which a replay would drop.
    assert RESPONSES.cacheable_text(RESPONSES.from_json(RESPONSES_BODY, {})) is None
    assert RESPONSES.cacheable_answer(RESPONSES_BODY) is None
    cut = {**RESPONSES.answer_json(TEXT, "gpt-x"), "status": "incomplete"}
    cut["incomplete_details"] = {"reason": "max_output_tokens"}
    assert RESPONSES.cacheable_text(RESPONSES.from_json(cut, {})) is None
    assert RESPONSES.cacheable_answer(cut) is None
    reasoned = RESPONSES.answer_json(TEXT, "gpt-x")
    reasoned["output"] = [{"id": "rs_1", "type": "reasoning", "summary": []}, *reasoned["output"]]
    assert RESPONSES.cacheable_answer(reasoned) == TEXT
    # Without its terminal event, a stream is no answer to keep.
    assert (
        RESPONSES.cacheable_text(RESPONSES.from_text(TEXT, "gpt-x").split(b"event: response.completed")[0])
        is None
    )


@pytest.mark.parametrize(
    "body",
    [{"choices": 5}, {"choices": [1]}, {"choices": [{"message": "hi"}]},
     {"choices": [{"message": {"tool_calls": [3]}}]}, {"choices": [{"message": {"tool_calls": [{"function": 1}]}}]}],
)  # fmt: skip
def test_a_chat_answer_not_in_the_apis_shape_is_refused(body: dict[str, Any]) -> None:
    """A non-streaming fallback's answer the engine could not make a stream of: bad_response."""
    assert (
        CHAT.unfinished(body)
        == "the answer's choices are not the API's: a list of objects, each message an object"
    )


@pytest.mark.parametrize(
    "output", [5, [1], [{"type": "message", "content": "hi"}], [{"type": "message", "content": [2]}]]
)
def test_a_response_not_in_the_apis_shape_is_refused(output: object) -> None:
    body = {**RESPONSES_BODY, "output": output}
    assert (
        RESPONSES.unfinished(body)
        == "the answer's output is not the API's: a list of objects, a message's content too"
    )


@pytest.mark.parametrize("choices", ["true", "5", '{"a": 1}'])
def test_a_chunk_whose_choices_are_no_list_is_bad(choices: str) -> None:
    facts = StreamFacts()
    assert CHAT.inspect(f'data: {{"choices": {choices}}}\n\n'.encode(), facts) == BAD
    assert facts.bad == "an event's choices are not a list"


# -- whatever an upstream sends ---------------------------------------------------------------

_ODD = [None, 0, 1, -1, True, "", "x", "stop", [], {}, [1], ["x"], [{}], {"a": 1}, [None], 1.5]
_KEYS = ["id", "model", "choices", "index", "delta", "message", "finish_reason", "content", "usage",
         "prompt_tokens", "completion_tokens", "prompt_tokens_details", "error", "type", "response",
         "output", "status", "incomplete_details", "reason", "input_tokens", "output_tokens",
         "input_tokens_details", "sequence_number", "service_tier", "system_fingerprint", "item"]  # fmt: skip
_TYPES = ["response.created", "response.output_text.delta", "response.completed", "response.incomplete",
          "response.failed", "error", "message", "output_text"]  # fmt: skip


def _odd(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.35:
        return rng.choice(_ODD + _TYPES)
    if roll < 0.55:
        return [_odd(rng, depth + 1) for _ in range(rng.randrange(3))]
    value = {key: _odd(rng, depth + 1) for key in rng.sample(_KEYS, rng.randrange(1, 6))}
    if rng.random() < 0.4:
        value["type"] = rng.choice(_TYPES)
    return value


KINDS = {BAD, COMMENT, CONTENT, ERROR, PREAMBLE, TERMINAL, UNKNOWN}


def test_no_event_or_answer_makes_the_classifiers_raise() -> None:
    """Every frame an upstream sends goes through `glance` or `inspect`, every whole answer
    through `body_facts`: odd JSON must classify (BAD at worst), never raise to the caller."""
    rng = random.Random(20261126)
    for _ in range(4000):
        payload = _odd(rng)
        data = json.dumps(payload).encode()
        for frame in (b"data: " + data + b"\n\n", b"event: x\ndata: " + data + b"\n\n"):
            for dialect in (CHAT, RESPONSES):
                assert dialect.inspect(frame, StreamFacts()) in KINDS
                assert dialect.glance(frame) in KINDS
        if isinstance(payload, dict):
            CHAT.body_facts(payload, StreamFacts())
            RESPONSES.body_facts(payload, StreamFacts())


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": "hi"},
        {"role": "assistant", "content": None, "refusal": "no"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "assistant", "content": "42", "reasoning_content": "Six times seven."},
    ],
    ids=["text", "refusal", "tool_calls", "function_call", "reasoning"],
)  # fmt: skip
def test_a_chat_answer_made_a_stream_says_what_the_answer_said(message: dict[str, Any]) -> None:
    """A non-streaming fallback serving a streaming caller: the stream carries the whole answer."""
    body = {"id": "c", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"},
                        {"index": 1, "message": {"role": "assistant", "content": "other"}, "finish_reason": "stop"}]}  # fmt: skip
    assert CHAT.output_messages(CHAT.from_json(body, {}), "error") == CHAT.answer_messages(body, "error")


def test_a_response_id_is_quoted_whole_into_the_rejoin_url() -> None:
    # The upstream's to send: one holding a line break made building the URL raise, and the
    # proxy answer 500; a lone surrogate (a JSON escape) could not be encoded.
    url = retrieve_url("https://api.example/v1/responses", "resp_\ud800\r\n/..", None)
    assert url == "https://api.example/v1/responses/resp_%3F%0D%0A%2F..?stream=true"

"""OpenAI-compatible servers (vLLM, Ollama, OpenRouter, Groq, llama.cpp, ...) as they stream.

A loopback upstream replays each provider's habits, chosen by the request's `x-case` header:
SSE comments, usage in every chunk, extra fields, CRLF line ends, a final chunk with both
finish reason and usage, and no `[DONE]` at all. A complete answer is complete: the caller
gets what the plain SDK gives, the call is `ok` in one attempt, and the tokens are counted
once. A server that ignores `stream` and answers with one JSON body gives the plain SDK an
empty stream; through streamtap the caller streams the answer; an event stream a gateway
labels JSON is read as the stream it is, as the SDK reads it; a bare JSON error (no
`data:`, as an event stream or as JSON) is raised as the upstream's error, and a web page (a base URL that is no API) is
raised as what it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest

import streamtap
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer

from . import loopback
from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, Recording

BASE = {"id": "chatcmpl-c1", "object": "chat.completion.chunk", "created": 1, "model": "llama-3.1-8b"}


def _usage(completion: int) -> dict[str, int]:
    return {"prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion}


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {**BASE, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def _sse(*events: dict[str, Any] | str, done: bool = True, end: str = "\n") -> bytes:
    lines = [e if isinstance(e, str) else f"data: {json.dumps(e)}" for e in events]
    lines += ["data: [DONE]"] if done else []
    return "".join(line + end + end for line in lines).encode()


ROLE = {"role": "assistant", "content": ""}
CASES = {
    "openrouter-comments": _sse(
        ": OPENROUTER PROCESSING",
        _chunk(ROLE),
        _chunk({"content": "Hi"}),
        ": OPENROUTER PROCESSING",
        _chunk({"content": " there"}),
        _chunk({}, "stop"),
        {**BASE, "choices": [], "usage": _usage(2)},
    ),
    "vllm-usage-in-every-chunk": _sse(
        _chunk(ROLE, usage=_usage(0)),
        _chunk({"content": "Hi"}, usage=_usage(1)),
        _chunk({"content": " there"}, usage=_usage(2)),
        _chunk({}, "stop", usage=_usage(2)),
        {**BASE, "choices": [], "usage": _usage(2)},
    ),
    "groq-extra-fields": _sse(
        _chunk(ROLE, x_groq={"id": "req_1"}),
        _chunk({"content": "Hi"}),
        _chunk({"content": " there"}),
        _chunk({}, "stop", x_groq={"id": "req_1"}, usage=_usage(2)),
    ),
    "crlf": _sse(
        _chunk(ROLE),
        _chunk({"content": "Hi"}),
        _chunk({"content": " there"}),
        _chunk({}, "stop"),
        {**BASE, "choices": [], "usage": _usage(2)},
        end="\r\n",
    ),
    "no-done": _sse(
        _chunk(ROLE),
        _chunk({"content": "Hi"}),
        _chunk({"content": " there"}, "stop", usage=_usage(2)),
        done=False,
    ),
    "empty-finish-reasons": _sse(  # "" on every chunk until the real one
        _chunk(ROLE, ""),
        _chunk({"content": "Hi"}, ""),
        _chunk({"content": " there"}, ""),
        _chunk({}, "stop", usage=_usage(2)),
    ),
}
# A whole answer where a stream was asked for: the plain SDK yields nothing from it.
WHOLE = json.dumps(
    {
        **BASE,
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}
        ],
        "usage": _usage(2),
    }
).encode()
# An error as a bare JSON body, no `data:`, under an event stream's content type, and as JSON.
ERRORS = ("bare-error", "bare-error-json")
BARE_ERROR = json.dumps(
    {
        "error": {
            "message": "This model's maximum context length is 8192 tokens",
            "code": "context_length_exceeded",
        }
    }
).encode()
# Event streams a gateway labels `application/json`: the plain SDK reads them as streams.
LABELLED_JSON = {
    "events-labelled-json": CASES["openrouter-comments"],  # starts with a comment
    "events-labelled-json-data": CASES["groq-extra-fields"],  # starts with `data:`
}
LABELLED_JSON_FAULTS = (
    "events-labelled-json-cut",
    "events-labelled-json-stall",
    "events-labelled-json-late",
    "events-labelled-json-silent",
)
STALL = 2.0  # seconds the stalling case waits after its first content
# A web page, as a front end's dev server sends on every path: a base URL that is no API.
PAGE = b"<!doctype html><html><head><title>My app</title></head><body><div id=root></div></body></html>"
# Streams cut short, which the plain SDK takes for whole answers.
TRUNCATED = {
    "empty-finish-reasons-cut": _sse(
        _chunk(ROLE, ""), _chunk({"content": "Hi"}, ""), _chunk({"content": " the"}, ""), done=False
    ),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    class Handler(loopback.Handler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            case = self.headers["x-case"]
            body = {
                **LABELLED_JSON,
                "events-labelled-json-cut": TRUNCATED["empty-finish-reasons-cut"],
                "events-labelled-json-stall": CASES["openrouter-comments"],
                "events-labelled-json-late": b"\n" * int(STALL * 10) + CASES["groq-extra-fields"],
                "events-labelled-json-silent": CASES["groq-extra-fields"],
                "whole-json": WHOLE,
                "page": PAGE,
                **dict.fromkeys(ERRORS, BARE_ERROR),
                **CASES,
                **TRUNCATED,
            }[case]
            kind = {
                **dict.fromkeys([*LABELLED_JSON, *LABELLED_JSON_FAULTS], "application/json"),
                "whole-json": "application/json",
                "bare-error-json": "application/json",
                "page": "text/html; charset=utf-8",
            }.get(case)
            self.send_response(200)
            self.send_header("content-type", kind or "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if case == "events-labelled-json-late":  # blank lines, one a tenth of a second, for STALL s
                for _ in range(int(STALL * 10)):
                    self.wfile.write(b"\n")
                    self.wfile.flush()
                    time.sleep(0.1)
                body = body[int(STALL * 10) :]
            if case == "events-labelled-json-silent":  # nothing for STALL s
                time.sleep(STALL)
            if case == "events-labelled-json-stall":  # its first events, then a stall
                cut = body.index(b"data:", body.index(b'"Hi"'))
                self.wfile.write(body[:cut])
                self.wfile.flush()
                time.sleep(STALL)
                body = body[cut:]
            self.wfile.write(body)

    with loopback.serve(Handler) as url:
        yield f"{url}/v1"


def _request(case: str) -> dict[str, Any]:
    return {
        "model": "llama-3.1-8b",
        "messages": CHAT_MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "extra_headers": {"x-case": case},
    }


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _read(
    upstream: str,
    case: str,
    *,
    is_async: bool,
    recording: Recording,
    received: list[str],
    policy: streamtap.Policy = TEST_POLICY,
    timeout: float | None = None,
) -> None:
    """Read the case's stream through streamtap (a sync or an async client), each chunk's text
    kept in `received` as it comes: a stream that then raises leaves what it gave. `timeout`:
    the SDK's own, when given."""
    request = _request(case) | ({"timeout": timeout} if timeout is not None else {})

    async def read_async() -> None:
        client = openai.AsyncOpenAI(base_url=upstream, api_key="sk-test")
        async with streamtap.instrument(client, policy=policy, recorders=[recording]) as routed:
            async for chunk in await routed.chat.completions.create(**request):
                received.append(_text([chunk]))  # noqa: PERF401 (kept as they come: the stream may raise)

    if is_async:
        anyio.run(read_async)
        return
    client = openai.OpenAI(base_url=upstream, api_key="sk-test")
    with streamtap.instrument(client, policy=policy, recorders=[recording]) as routed:
        received.extend(_text([chunk]) for chunk in routed.chat.completions.create(**request))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_complete_stream_is_complete(upstream: str, case: str, is_async: bool) -> None:
    recording = Recording()
    plain = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    with plain:
        assert _text(list(plain.chat.completions.create(**_request(case)))) == "Hi there"
    received: list[str] = []
    _read(upstream, case, is_async=is_async, recording=recording, received=received)
    assert "".join(received) == "Hi there"
    finished = recording.finished
    assert (finished.outcome, finished.error_type, finished.attempts) == ("ok", None, 1)
    assert (finished.input_tokens, finished.output_tokens, finished.finish_reasons) == (5, 2, ("stop",))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", list(LABELLED_JSON))
def test_an_event_stream_labelled_json_is_read_as_a_stream(upstream: str, case: str, is_async: bool) -> None:
    """As the plain SDK reads it (it reads a stream's answer as events whatever its label); it
    was taken for a JSON answer that did not parse, and failed as bad_response."""
    recording = Recording()
    plain = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    with plain:
        assert _text(list(plain.chat.completions.create(**_request(case)))) == "Hi there"
    received: list[str] = []
    _read(upstream, case, is_async=is_async, recording=recording, received=received)
    assert received[0] == ""  # the role chunk first: streamed chunk by chunk, not one answer
    assert "".join(received) == "Hi there"
    finished = recording.finished
    assert (finished.outcome, finished.error_type, finished.attempts) == ("ok", None, 1)
    assert (finished.input_tokens, finished.output_tokens, finished.finish_reasons) == (5, 2, ("stop",))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("case", "error_type", "text"),
    [
        ("events-labelled-json-cut", "stream_truncated", "Hi the"),
        ("events-labelled-json-stall", "stall", "Hi"),
    ],
)
def test_an_event_stream_labelled_json_has_a_streams_checks(
    upstream: str, case: str, error_type: str, text: str, is_async: bool
) -> None:
    """Read as it comes, not whole: a stream cut short is caught, and a stall after the first
    content is one within the idle timeout, not a wait for the whole body."""
    recording = Recording()
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        _read(
            upstream,
            case,
            is_async=is_async,
            recording=recording,
            received=received,
            policy=streamtap.Policy(max_attempts=1, idle_timeout=0.3),
        )
    assert (raised.value.error_type, raised.value.text, "".join(received)) == (error_type, text, text)
    assert time.monotonic() - started < STALL


_FIRST_TOKEN = streamtap.Policy(max_attempts=1, first_token_timeout=0.5)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("case", "policy", "timeout", "raised", "error_type"),
    [
        ("late", _FIRST_TOKEN, None, streamtap.StreamInterrupted, "first_token_timeout"),
        (
            "late",
            streamtap.Policy(max_attempts=1, total_timeout=0.5),
            None,
            streamtap.StreamInterrupted,
            "timeout",
        ),
        ("silent", _FIRST_TOKEN, None, streamtap.StreamInterrupted, "first_token_timeout"),
        ("silent", streamtap.Policy(max_attempts=1), 0.5, streamtap.StreamTimedOut, "timeout"),
    ],
    ids=["first-token-timeout", "total-timeout", "silent-first-token-timeout", "callers-timeout"],
)
def test_telling_a_stream_labelled_json_keeps_the_streams_deadlines(
    upstream: str,
    case: str,
    policy: streamtap.Policy,
    timeout: float | None,
    raised: type[Exception],
    error_type: str,
    is_async: bool,
) -> None:
    """Its first bytes are read under the stream's deadlines: a body that sends blank lines, or
    nothing, for STALL seconds before its first event was waited for, past every one of them,
    or failed as a whole answer's timeout, which the SDK's APITimeoutError did not catch."""
    recording = Recording()
    started = time.monotonic()
    with pytest.raises(raised) as caught:
        _read(
            upstream,
            f"events-labelled-json-{case}",
            is_async=is_async,
            recording=recording,
            received=[],
            policy=policy,
            timeout=timeout,
        )
    assert getattr(caught.value, "error_type", None) == error_type
    assert time.monotonic() - started < STALL - 0.5


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_whole_json_answer_to_a_stream_is_streamed_to_the_caller(upstream: str, is_async: bool) -> None:
    recording = Recording()
    plain = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    with plain:
        assert list(plain.chat.completions.create(**_request("whole-json"))) == []  # silently empty
    received: list[str] = []
    _read(upstream, "whole-json", is_async=is_async, recording=recording, received=received)
    assert "".join(received) == "Hi there"
    finished = recording.finished
    assert (finished.outcome, finished.error_type, finished.attempts, finished.fallback) == (
        "ok",
        None,
        1,
        None,
    )
    assert (finished.input_tokens, finished.output_tokens, finished.finish_reasons) == (5, 2, ("stop",))
    assert finished.time_to_first_token is not None


# Answers that are no stream, and what the caller is told: the upstream's own error (the
# caller's mistake, not retried, not a cut stream), or what the base URL reached.
NOT_A_STREAM = {
    "bare-error": ("maximum context length is 8192 tokens", "upstream_error_event"),
    "bare-error-json": ("maximum context length is 8192 tokens", "upstream_error_event"),
    "page": (r"a web page \(text/html\).*is the base URL an OpenAI-compatible API", "bad_response"),
}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", list(NOT_A_STREAM))
def test_an_answer_that_is_no_stream_is_raised_as_what_it_is(
    upstream: str, case: str, is_async: bool
) -> None:
    message, error_type = NOT_A_STREAM[case]
    recording = Recording()
    plain = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    with plain:
        assert list(plain.chat.completions.create(**_request(case))) == []  # silently empty
    with pytest.raises(openai.APIError, match=message):
        _read(upstream, case, is_async=is_async, recording=recording, received=[])
    finished = recording.finished
    assert (finished.outcome, finished.error_type, finished.attempts) == ("error", error_type, 1)


@pytest.mark.parametrize("case", ["no-done", "whole-json", "events-labelled-json"])
def test_a_complete_answer_is_a_complete_stream_through_the_proxy(upstream: str, case: str) -> None:
    recording = Recording()
    config = ProxyConfig(upstream=upstream, listen="127.0.0.1:0", policy=TEST_POLICY)
    with ProxyServer(config, recorders=[recording]) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0)
        with client:
            raw = client.chat.completions.with_raw_response.create(**_request(case))
            assert raw.headers["content-type"].startswith("text/event-stream")
            assert _text(list(raw.parse())) == "Hi there"
    assert (recording.finished.outcome, recording.finished.output_tokens) == ("ok", 2)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_empty_finish_reasons_do_not_make_a_cut_stream_whole(upstream: str, is_async: bool) -> None:
    """A server that writes `"finish_reason": ""` on every chunk and never `[DONE]`: a stream
    cut short has no finished choice, and is `stream_truncated`, not a complete answer."""
    recording = Recording()
    received: list[str] = []
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        _read(
            upstream,
            "empty-finish-reasons-cut",
            is_async=is_async,
            recording=recording,
            received=received,
            policy=streamtap.Policy(max_attempts=1),
        )
    assert (raised.value.error_type, raised.value.text) == ("stream_truncated", "Hi the")
    assert "".join(received) == "Hi the"
    finished = recording.finished
    assert (finished.outcome, finished.error_type, finished.finish_reasons) == (
        "error",
        "stream_truncated",
        (),
    )


# A whole response whose status is failed, where a stream was asked for and where none was.
FAILED_RESPONSE = json.dumps(
    {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "llama-3.1-8b",
        "status": "failed",
        "error": {"code": "server_error", "message": "The model failed to generate a response."},
        "output": [],
    }
).encode()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_a_failed_response_answered_whole_is_an_error(stream: bool) -> None:
    """As a `response.failed` event is: retried, as its code is transient, and counted as an
    error. A stream's caller gets the typed error; a caller who asked for no stream gets the
    response as it came, which the SDK gives too."""

    class Handler(loopback.Handler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(FAILED_RESPONSE)))
            self.end_headers()
            self.wfile.write(FAILED_RESPONSE)

    recording = Recording()
    with loopback.serve(Handler) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
        with streamtap.instrument(client, policy=TEST_POLICY, recorders=[recording]) as routed:
            if stream:
                with pytest.raises(streamtap.StreamInterrupted, match="failed to generate") as raised:
                    list(routed.responses.create(model="llama-3.1-8b", input="hi", stream=True))
                assert raised.value.error_type == "upstream_error_event"
            else:
                response = routed.responses.with_raw_response.create(model="llama-3.1-8b", input="hi")
                assert response.parse().status == "failed"
                assert response.headers["x-streamtap-attempts"] == str(TEST_POLICY.max_attempts)
    finished = recording.finished
    assert (finished.outcome, finished.error_type) == ("error", "upstream_error_event")
    assert finished.attempts == TEST_POLICY.max_attempts > 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_bare_error_answered_to_no_stream_is_an_error_given_as_it_came(
    upstream: str, is_async: bool
) -> None:
    """A caller who asked for no stream gets the body as the SDK would (a completion with no
    choices), and the call is the upstream's error, not `ok`: not retried, as its code is the
    caller's (context_length_exceeded)."""
    recording = Recording()
    request: dict[str, Any] = {
        "model": "llama-3.1-8b",
        "messages": CHAT_MESSAGES,
        "extra_headers": {"x-case": "bare-error-json"},
    }

    async def create_async() -> Any:
        client = openai.AsyncOpenAI(base_url=upstream, api_key="sk-test")
        async with streamtap.instrument(client, policy=TEST_POLICY, recorders=[recording]) as routed:
            return await routed.chat.completions.create(**request)

    if is_async:
        completion = anyio.run(create_async)
    else:
        client = openai.OpenAI(base_url=upstream, api_key="sk-test")
        with streamtap.instrument(client, policy=TEST_POLICY, recorders=[recording]) as routed:
            completion = routed.chat.completions.create(**request)
    assert completion.error == json.loads(BARE_ERROR)["error"]  # the body as it came
    finished = recording.finished
    assert (finished.outcome, finished.error_type, finished.attempts) == ("error", "upstream_error_event", 1)

"""The pure rules the call machine decides by: recovery after a failed attempt, the answer caches
and the texts of a finished call. `test_call.py` drives them through `Call`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamtap._call_cache import cached_answer, cached_text, keep_answer
from streamtap._call_finish import answer_messages, cacheable
from streamtap._call_recovery import give_up_type, next_fallback, resume_after, retry_wait, still_running
from streamtap._chat import CHAT
from streamtap._errors import failure
from streamtap._fallback import Fallback, MemoryCache, Route
from streamtap._policy import Policy

URL = "http://up:8080/v1/chat/completions"
PRIMARY = Route(URL, "http://up:8080", "gpt-x", {"model": "gpt-x", "stream": True}, True)
BROKE = failure("stream_interrupted", "first_token", "gone")
STOP = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


def chunk(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


def wait(policy: Policy, *, retries: int = 0, waited: float = 0.0, deadline: float | None = None) -> Any:
    return retry_wait(policy, retries, waited, deadline, {}, 100.0, 0.0, lambda: 0.5)


def test_retry_wait_is_the_backoff_or_what_stops_it() -> None:
    policy = Policy(max_attempts=3, backoff_base=1.0, max_retry_wait=5.0)
    assert wait(policy) == 0.5  # full jitter: half of base * 2**0
    assert wait(policy, retries=2) == "attempts"
    assert wait(policy, waited=4.9) == "deadline"  # over max_retry_wait
    assert wait(policy, deadline=100.4) == "deadline"  # the wait reaches the call's deadline
    asked = retry_wait(policy, 0, 0.0, None, {"retry-after": "120"}, 100.0, 0.0, lambda: 0.5)
    assert asked == "deadline"  # over max_retry_after


def test_only_the_budget_and_the_breaker_name_a_give_up() -> None:
    assert give_up_type("budget") == "budget_exhausted"
    assert give_up_type("breaker") == "circuit_open"
    assert give_up_type("attempts") is None
    assert give_up_type("deadline") is None


def test_rejoin_and_resume_only_a_background_response_with_an_id() -> None:
    assert still_running(BROKE, "resp_1") == "resp_1"
    assert still_running(failure("server_error", "headers", "x"), "resp_1") == "resp_1"
    assert still_running(BROKE, None) is None
    # Its own failure, or gone: a retry or a fallback may create another.
    assert still_running(failure("upstream_error_event", "first_token", "x"), "resp_1") is None
    assert still_running(failure("not_found", "headers", "x", retryable=False), "resp_1") is None
    delivered = [b'data: {"type":"response.output_text.delta","sequence_number":7}\n\n']
    broke_after_commit = failure("stream_interrupted", "streaming", "gone")
    assert resume_after(broke_after_commit, True, "resp_1", delivered) == 7
    assert resume_after(broke_after_commit, False, "resp_1", delivered) is None
    assert resume_after(broke_after_commit, True, None, delivered) is None
    assert resume_after(failure("bad_response", "streaming", "x"), True, "resp_1", delivered) is None


def test_next_fallback_takes_each_once_and_skips_those_that_cannot_serve() -> None:
    cache = Fallback.cached()
    fallbacks = [Fallback.model("gpt-y"), cache]
    chosen = next_fallback(fallbacks, PRIMARY, "/chat/completions", cache_allowed=True, cache_only=False)
    assert chosen is not None
    assert chosen[0].kind == "model"
    assert chosen[1].model == "gpt-y"
    assert fallbacks == [cache]
    assert (
        next_fallback(fallbacks, PRIMARY, "/chat/completions", cache_allowed=False, cache_only=False) is None
    )
    assert fallbacks == []

    late = [Fallback.model("gpt-y"), cache]
    chosen = next_fallback(late, PRIMARY, "/chat/completions", cache_allowed=True, cache_only=True)
    assert chosen is not None and chosen[0] is cache


class BrokenCache:
    def __init__(self, answer: Any = None) -> None:
        self.answer = answer

    def get(self, key: str) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def set(self, key: str, text: str) -> None:
        raise ConnectionError("down")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param("hi", "hi", id="text"),
        pytest.param(b"hi", "hi", id="bytes"),
        pytest.param(b"\xff", None, id="not-utf8"),
        pytest.param(7, None, id="not-text"),
        pytest.param(None, None, id="miss"),
        pytest.param(ConnectionError("down"), None, id="down"),
    ],
)
def test_cached_text_is_a_miss_unless_the_cache_gives_text(answer: Any, expected: str | None) -> None:
    assert cached_text(BrokenCache(answer), "k") == expected


def test_keep_answer_keeps_in_every_cache_a_failing_one_aside() -> None:
    kept = MemoryCache()
    keep_answer([BrokenCache(), kept], "k", "hi")
    assert kept.get("k") == "hi"


def test_cached_answer_is_what_the_request_asked_for() -> None:
    streamed = cached_answer(CHAT, PRIMARY, "hi")
    assert streamed.stream and streamed.body.endswith(b"data: [DONE]\n\n")
    whole = cached_answer(CHAT, Route(URL, "http://up:8080", "gpt-x", {"model": "gpt-x"}, False), "hi")
    assert not whole.stream
    assert json.loads(whole.body)["choices"][0]["message"]["content"] == "hi"


def test_the_answer_is_read_from_the_body_when_there_is_one_else_from_the_frames() -> None:
    delivered = [chunk("Hi"), chunk(" there"), STOP]
    said = {"role": "assistant", "parts": [{"type": "text", "content": "Hi there"}], "finish_reason": "stop"}
    assert answer_messages(CHAT, delivered, None, "ok", stream=True) == [said]
    assert cacheable(CHAT, delivered, None) == "Hi there"
    body = {"choices": [{"index": 0, "message": {"content": "Hi there"}, "finish_reason": "stop"}]}
    assert answer_messages(CHAT, [], body, "ok", stream=False) == [said]
    served_whole = [json.dumps(body).encode()]  # a cached answer given to a caller that did not stream
    assert answer_messages(CHAT, served_whole, None, "ok", stream=False) == [said]
    assert answer_messages(CHAT, [b"not json"], None, "ok", stream=False) == []
    assert answer_messages(CHAT, [], None, "error", stream=False) == []
    assert cacheable(CHAT, [], body) == "Hi there"


def test_a_message_cut_short_ends_with_the_calls_outcome() -> None:
    delivered = [chunk("Hi")]
    for outcome in ("error", "cancelled", "abandoned"):
        (said,) = answer_messages(CHAT, delivered, None, outcome, stream=True)
        assert said["finish_reason"] == outcome
        assert said["parts"] == [{"type": "text", "content": "Hi"}]

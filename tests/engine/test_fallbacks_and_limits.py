"""Fallbacks, background resume, the retry budget and the circuit breaker, over real sockets."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import openai
import pytest

import streamtap
from streamtap import CallFinished, FallbackUsed, RetrySuppressed
from streamtap.fake import FakeUpstream

from .conftest import TEST_POLICY
from .support import (
    CHAT_MESSAGES,
    RESPONSES_INPUT,
    Recording,
    collect,
    create,
    expected,
    read_async,
    read_sync,
)


def _chat_text(client: Any, **kwargs: Any) -> tuple[str, Any]:
    stream = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True, **kwargs)
    with stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    return text, stream.response.headers


def test_model_fallback_serves_after_retries_fail(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    client = make_client(False, fallbacks=[streamtap.Fallback.model("gpt-4o-mini")])
    fake.enqueue("status=503", "status=503", "status=503", "")
    text, headers = _chat_text(client)
    assert text == fake.expected_text(model="gpt-4o-mini", messages=CHAT_MESSAGES)
    assert [r.model for r in fake.requests] == ["gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert headers["x-streamtap-fallback"] == "model"
    assert recording.of(FallbackUsed) == [
        FallbackUsed(recording.finished.call_id, "model", "gpt-4o-mini", True)
    ]
    assert recording.of(RetrySuppressed)[0].cause == "attempts"
    assert (recording.finished.outcome, recording.finished.fallback) == ("ok", "model")


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_non_streaming_fallback_is_delivered_as_a_stream(
    api: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    client = make_client(False, fallbacks=[streamtap.Fallback.non_streaming()])
    fake.enqueue("drop_after=0", "drop_after=0", "drop_after=0", "")
    received: list[str] = []
    read_sync(client, api, received)
    assert "".join(received) == "".join(expected(fake, api))
    assert [r.stream for r in fake.requests] == [True, True, True, False]
    assert recording.finished.fallback == "non_streaming"
    # The answer's own headers come with it (its request id, rate limits), relabelled a stream.
    fake.enqueue("drop_after=0", "drop_after=0", "drop_after=0", "")
    stream = create(client, api, stream=True)
    with stream:
        assert stream.response.headers["x-streamtap-fallback"] == "non_streaming"
        assert stream.response.headers["x-request-id"] == fake.requests[-1].request_id
        assert stream.response.headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize("include_usage", [False, True])
def test_non_streaming_fallback_carries_usage_as_the_stream_would(
    include_usage: bool, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """The usage chunk (no choices) only when asked for: the SDK's own loop indexes choices[0]."""
    client = make_client(False, fallbacks=[streamtap.Fallback.non_streaming()])
    fake.enqueue("status=503;should_retry=false", "")
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True, **options)
    with stream:
        chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "".join(expected(fake, "chat"))
    assert [chunk.usage is not None for chunk in chunks if not chunk.choices] == [True] * include_usage
    assert recording.finished.fallback == "non_streaming"
    assert recording.finished.output_tokens == len(expected(fake, "chat"))


def test_upstream_fallback_uses_its_own_base_url_and_key(recording: Recording, make_client: Any) -> None:
    from streamtap.fake import FakeConfig

    with (
        FakeUpstream(FakeConfig(chunks=3, api_key="sk-second")) as second,
        FakeUpstream(FakeConfig(chunks=3)) as first,
    ):
        first.enqueue("status=401")
        client = streamtap.instrument(
            # A gateway's own credential is the caller's identity too: never sent to another host.
            openai.OpenAI(base_url=first.base_url, api_key="sk-first", default_headers={"x-api-key": "gw-1"}),
            policy=TEST_POLICY,
            recorders=[recording],
            fallbacks=[streamtap.Fallback.upstream(second.base_url, api_key="sk-second")],
        )
        with pytest.raises(openai.AuthenticationError):  # auth errors are not fallen back from
            _chat_text(client)
        first.enqueue("status=503;should_retry=false")
        text, headers = _chat_text(client)
        client.close()
    assert text == second.expected_text(model="gpt-4o", messages=CHAT_MESSAGES)
    assert headers["x-streamtap-fallback"] == "upstream"
    assert len(second.requests) == 1
    assert first.requests[0].header("x-api-key") is not None
    assert second.requests[0].header("x-api-key") is None


def test_an_upstream_fallback_to_the_same_gateway_keeps_its_headers(
    fake: FakeUpstream, recording: Recording
) -> None:
    # The same gateway, another provider's key: the gateway's own credential still goes, and
    # only the caller's OpenAI identity is replaced.
    raw = openai.OpenAI(
        base_url=fake.base_url,
        api_key="sk-first",
        default_headers={"x-api-key": "gw-1"},
        organization="org-a",
    )
    client = streamtap.instrument(
        raw,
        policy=TEST_POLICY,
        recorders=[recording],
        fallbacks=[streamtap.Fallback.upstream(fake.base_url, api_key="sk-other-provider")],
    )
    fake.enqueue("status=503;should_retry=false")
    _, headers = _chat_text(client)
    client.close()
    assert headers["x-streamtap-fallback"] == "upstream"
    fallback = fake.requests[-1]
    assert fallback.header("x-api-key") is not None and fallback.header("openai-organization") is None


def test_cached_answer_serves_when_everything_fails(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    cache = streamtap.MemoryCache(max_entries=10, ttl=60)
    client = make_client(False, fallbacks=[streamtap.Fallback.cached(cache)])
    good, _ = _chat_text(client)
    assert len(cache) == 1
    fake.enqueue("status=500", "status=500", "status=500")
    text, headers = _chat_text(client)
    assert text == good
    assert headers["x-streamtap-fallback"] == "cache"
    misses = recording.of(FallbackUsed)
    assert misses == [FallbackUsed(recording.of(CallFinished)[1].call_id, "cache", "gpt-4o", True)]


def test_cached_answers_are_not_shared_between_keys_or_upstreams(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """`with_options` shares the engine, and its cache: a key out of quota, or another upstream,
    never gets an answer made with another key or by another upstream."""
    from streamtap.fake import FakeConfig

    cache = streamtap.MemoryCache(max_entries=10, ttl=60)
    client = make_client(False, fallbacks=[streamtap.Fallback.cached(cache)])
    good, _ = _chat_text(client)
    assert len(cache) == 1
    fake.enqueue("status=429;should_retry=false")
    with pytest.raises(openai.RateLimitError):
        _chat_text(client.with_options(api_key="sk-another-key-out-of-quota"))
    with FakeUpstream(FakeConfig(chunks=3)) as other:
        other.enqueue("status=503;should_retry=false")
        with pytest.raises(openai.InternalServerError):
            _chat_text(client.with_options(base_url=other.base_url))
    assert [e.ok for e in recording.of(FallbackUsed)] == [False, False]
    # The key that made the answer still has it.
    fake.enqueue("status=429;should_retry=false")
    text, headers = _chat_text(client)
    assert (text, headers["x-streamtap-fallback"]) == (good, "cache")


def test_a_model_not_found_is_not_served_from_the_cache(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    cache = streamtap.MemoryCache(max_entries=10, ttl=60)
    client = make_client(False, fallbacks=[streamtap.Fallback.cached(cache)])
    _chat_text(client)
    fake.enqueue("status=404")
    with pytest.raises(openai.NotFoundError):
        _chat_text(client)
    assert recording.of(FallbackUsed) == []
    last = recording.of(CallFinished)[-1]
    assert (last.outcome, last.error_type) == ("error", "not_found")


def test_cache_miss_gives_the_sdk_error(fake: FakeUpstream, recording: Recording, make_client: Any) -> None:
    client = make_client(False, fallbacks=[streamtap.Fallback.cached()])
    fake.enqueue("status=429;retry_after=0", "status=429;retry_after=0", "status=429;retry_after=0")
    with pytest.raises(openai.RateLimitError):
        _chat_text(client)
    assert recording.finished.error_type == "rate_limited"
    assert recording.of(FallbackUsed)[0].ok is False


def test_a_fallback_model_that_refuses_the_request_leaves_the_caller_the_primarys_error(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    # The fallback model's 400 (a parameter only the primary takes) is no fault of the caller's:
    # the SDK raises the primary's 503, not a BadRequestError about a model it did not ask for.
    client = make_client(False, fallbacks=[streamtap.Fallback.model("gpt-4o-mini")])
    fake.enqueue("status=503", "status=503", "status=503", "status=400")
    with pytest.raises(openai.InternalServerError):
        _chat_text(client)
    assert [r.model for r in fake.requests] == ["gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert recording.finished.error_type == "server_error"
    assert recording.of(FallbackUsed)[0].ok is False


class _DownCache:
    """A Redis-style AnswerCache whose server is down."""

    def get(self, key: str) -> str | None:
        raise ConnectionError("the cache server refused the connection")

    def set(self, key: str, text: str) -> None:
        raise ConnectionError("the cache server refused the connection")


def test_a_cache_that_is_down_never_takes_the_callers_answer(
    fake: FakeUpstream, recording: Recording, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Storing fails after a complete answer: the caller keeps it, and the call is recorded.
    client = make_client(False, fallbacks=[streamtap.Fallback.cached(_DownCache())])
    text, _ = _chat_text(client)
    assert text == fake.expected_text(model="gpt-4o", messages=CHAT_MESSAGES)
    assert recording.finished.outcome == "ok"
    assert "failed to keep an answer: ConnectionError" in caplog.text
    # Looking up fails when it is needed: a miss, and the caller gets the upstream's error.
    fake.enqueue("status=429;retry_after=0", "status=429;retry_after=0", "status=429;retry_after=0")
    with pytest.raises(openai.RateLimitError):
        _chat_text(client)
    assert recording.of(CallFinished)[-1].error_type == "rate_limited"
    assert recording.of(FallbackUsed)[-1].ok is False
    assert "failed to look up an answer (a miss): ConnectionError" in caplog.text


class _BytesCache(streamtap.MemoryCache):
    """A cache that gives back bytes, as a Redis client does without decode_responses."""

    def get(self, key: str) -> str | None:
        text = super().get(key)
        return text.encode() if text is not None else None  # type: ignore[return-value]


def test_a_cache_that_gives_bytes_serves_their_text(fake: FakeUpstream, make_client: Any) -> None:
    client = make_client(False, fallbacks=[streamtap.Fallback.cached(_BytesCache())])
    good, _ = _chat_text(client)
    fake.enqueue("status=500", "status=500", "status=500")
    text, headers = _chat_text(client)
    assert (text, headers["x-streamtap-fallback"]) == (good, "cache")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_background_response_resumes_after_commit(
    mode: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    client = make_client(mode == "async")
    fake.enqueue("drop_after=3")
    received: list[str] = []
    if mode == "sync":
        read_sync(client, "responses", received, background=True)
    else:
        anyio.run(lambda: read_async(client, "responses", received, background=True))
    assert received == expected(fake, "responses")  # every piece once, in order
    resume = fake.requests[1]
    assert (resume.method, resume.stream) == ("GET", True)
    assert resume.query.startswith("stream=true&starting_after=")
    assert recording.finished.outcome == "ok"
    assert recording.finished.attempts == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_resume_that_the_server_replays_from_the_start_gives_each_event_once(mode: str) -> None:
    # Some OpenAI-compatible servers ignore starting_after and stream the response again from
    # its first event: those the caller has are dropped, so no text comes twice.
    from streamtap.fake import FakeConfig

    recording = Recording()
    with FakeUpstream(FakeConfig(chunks=6, replay_on_resume=True)) as fake:
        client = streamtap.instrument(
            (openai.AsyncOpenAI if mode == "async" else openai.OpenAI)(
                base_url=fake.base_url, api_key="sk-test-secret-key-0000"
            ),
            policy=TEST_POLICY,
            recorders=[recording],
        )
        fake.enqueue("drop_after=3")
        received: list[str] = []
        if mode == "sync":
            read_sync(client, "responses", received, background=True)
            client.close()
        else:
            anyio.run(lambda: read_async(client, "responses", received, background=True))
        assert [r.method for r in fake.requests] == ["POST", "GET"]
        assert received == expected(fake, "responses")
    assert (recording.finished.outcome, recording.finished.attempts) == ("ok", 2)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", ["drop_after=0", "truncate_after=0"])
def test_background_response_is_rejoined_before_commit(
    mode: str, fault: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    # The stream broke after response.created, before content: the response goes on upstream,
    # so the retry reads it again from its start instead of creating (and paying for) another.
    client = make_client(mode == "async")
    fake.enqueue(fault)
    received: list[str] = []
    if mode == "sync":
        read_sync(client, "responses", received, background=True)
    else:
        anyio.run(lambda: read_async(client, "responses", received, background=True))
    assert received == expected(fake, "responses")
    created, rejoin = fake.requests
    assert (created.method, rejoin.method, rejoin.stream, rejoin.query) == (
        "POST",
        "GET",
        True,
        "stream=true",
    )
    assert rejoin.path.endswith(recording.finished.response_id or "?")
    assert (recording.finished.outcome, recording.finished.attempts) == ("ok", 2)


def test_a_failed_background_response_is_created_again(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    # An error event is the response's own failure: reading it again would replay it.
    client = make_client(False)
    fake.enqueue("error_after=0;error_kind=failed")
    received: list[str] = []
    read_sync(client, "responses", received, background=True)
    assert [r.method for r in fake.requests] == ["POST", "POST"]
    assert recording.finished.outcome == "ok"


def test_retry_budget_exhaustion_is_reported(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    policy = streamtap.Policy(
        max_attempts=3,
        backoff_base=0.001,
        backoff_cap=0.001,
        budget=streamtap.BudgetSettings(ratio=0.0, min_per_second=0.1, ttl=10.0),
    )
    client = make_client(False, policy=policy)
    fake.enqueue(*["status=503"] * 4)
    with pytest.raises(openai.InternalServerError):
        _chat_text(client)  # the floor allows one retry in 10 s ...
    with pytest.raises(openai.InternalServerError):
        _chat_text(client)  # ... and then none
    finished = recording.of(CallFinished)
    assert [f.attempts for f in finished] == [2, 1]
    assert finished[1].error_type == "budget_exhausted"
    assert [s.cause for s in recording.of(RetrySuppressed)] == ["budget", "budget"]


def test_open_circuit_fails_fast_then_probes(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    policy = streamtap.Policy(
        max_attempts=1,
        breaker=streamtap.BreakerSettings(window=30, min_requests=3, failure_ratio=0.5, open_for=0.2),
    )
    client = make_client(False, policy=policy)
    fake.enqueue(*["status=502"] * 3)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            _chat_text(client)
    with pytest.raises(streamtap.CircuitOpenError) as raised:
        _chat_text(client)
    assert raised.value.error_type == "circuit_open"
    assert len(fake.requests) == 3  # the open circuit sent nothing
    assert recording.of(CallFinished)[-1].error_type == "circuit_open"
    anyio.run(anyio.sleep, 0.25)
    text, _ = _chat_text(client)  # half-open probe succeeds and closes it
    assert text == "".join(expected(fake, "chat"))
    states = [
        (e.old, e.new) for e in recording.events if type(e).__name__ == "BreakerTransition" and e.call_id
    ]
    assert states[0] == ("closed", "open")
    assert states[-1] == ("half_open", "closed")


def test_open_circuit_goes_to_fallbacks(fake: FakeUpstream, recording: Recording, make_client: Any) -> None:
    policy = streamtap.Policy(
        max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=2, failure_ratio=0.5, open_for=60)
    )
    client = make_client(False, policy=policy, fallbacks=[streamtap.Fallback.model("gpt-4o-mini")])
    fake.enqueue("status=500;model=gpt-4o", "status=500;model=gpt-4o")
    for _ in range(2):
        _chat_text(client)  # each served by the fallback model
    fake.clear()
    text, headers = _chat_text(client)
    assert [r.model for r in fake.requests] == ["gpt-4o-mini"]
    assert headers["x-streamtap-fallback"] == "model"
    assert text == fake.expected_text(model="gpt-4o-mini", messages=CHAT_MESSAGES)


def test_an_open_circuit_whose_fallbacks_fail_says_what_was_sent_and_the_primarys_request_id(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    policy = streamtap.Policy(
        max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=1, failure_ratio=0.5, open_for=60)
    )
    client = make_client(False, policy=policy, fallbacks=[streamtap.Fallback.model("gpt-4o-mini")])
    # The primary's 503 opens its breaker; the fallback's 404 is its own: the caller gets the 503
    # with the primary's x-request-id, not the fallback's.
    fake.enqueue("status=503", "status=404")
    with pytest.raises(openai.InternalServerError) as primary:
        _chat_text(client)
    assert primary.value.request_id == fake.requests[0].request_id != fake.requests[1].request_id
    # Now the breaker refuses the primary; the fallback goes, and fails.
    fake.enqueue("status=404")
    with pytest.raises(streamtap.CircuitOpenError) as refused:
        _chat_text(client)
    assert refused.value.attempts == 1  # the fallback's: the primary's breaker let none go
    assert [r.model for r in fake.requests[2:]] == ["gpt-4o-mini"]


def test_total_timeout_bounds_the_call(fake: FakeUpstream, recording: Recording, make_client: Any) -> None:
    policy = streamtap.Policy(
        max_attempts=5, backoff_base=0.05, first_token_timeout=5, idle_timeout=5, total_timeout=0.5
    )
    client = make_client(False, policy=policy)
    fake.enqueue(*["stall_first=2"] * 5)
    received: list[str] = []
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        read_sync(client, "chat", received)
    assert raised.value.error_type == "timeout"
    assert received == []
    assert recording.finished.duration < 2.0  # the stall itself would have taken 2 s


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_no_fallback_goes_upstream_after_the_total_timeout(
    fake: FakeUpstream, recording: Recording, make_client: Any, is_async: bool
) -> None:
    """The fallbacks would be sent with no time left and fail with their own connect timeouts."""
    policy = streamtap.Policy(max_attempts=2, first_token_timeout=5, idle_timeout=5, total_timeout=0.5)
    fallbacks = [
        streamtap.Fallback.model("gpt-4o-mini"),
        streamtap.Fallback.upstream(fake.base_url, model="gpt-4.1"),
        streamtap.Fallback.non_streaming(),
    ]
    client = make_client(is_async, policy=policy, fallbacks=fallbacks)
    fake.enqueue("stall_first=2")
    received: list[str] = []

    def read() -> None:
        if is_async:
            anyio.run(lambda: read_async(client, "chat", received))
        else:
            read_sync(client, "chat", received)

    with pytest.raises(streamtap.StreamInterrupted) as raised:
        read()
    assert raised.value.error_type == "timeout"
    assert "total_timeout" in str(raised.value)
    assert (recording.finished.error_type, recording.finished.attempts) == ("timeout", 1)
    assert recording.of(FallbackUsed) == []
    assert [r.model for r in fake.requests] == ["gpt-4o"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_sdk_read_timeout_still_bounds_each_read(
    fake: FakeUpstream, recording: Recording, make_client: Any, is_async: bool
) -> None:
    """`timeout=` of the SDK applies as without streamtap, under the longer idle_timeout."""
    policy = streamtap.Policy(max_attempts=1, first_token_timeout=10, idle_timeout=10)
    client = make_client(is_async, policy=policy)
    fake.enqueue("stall_after=2;stall=3")
    received: list[str] = []
    started = time.monotonic()

    def read() -> None:
        if is_async:
            anyio.run(lambda: read_async(client, "chat", received, timeout=0.5))
        else:
            read_sync(client, "chat", received, timeout=0.5)

    with pytest.raises(streamtap.StreamInterrupted) as raised:
        read()
    assert raised.value.error_type == "timeout"
    assert "read timeout" in str(raised.value)
    assert len(received) == 2
    assert time.monotonic() - started < 2.5  # the stall itself lasts 3 s
    assert recording.finished.outcome == "error"


@pytest.mark.parametrize(
    ("limit", "error_type"),
    [pytest.param("total_timeout", "timeout", id="total"), pytest.param("idle_timeout", "stall", id="idle")],
)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_deadline_passed_while_the_caller_worked_is_reported_as_such(
    fake: FakeUpstream, recording: Recording, limit: str, error_type: str, is_async: bool
) -> None:
    """The caller takes longer over a chunk than the deadline leaves: the next read's deadline
    has passed before it starts, and no bytes are waiting (the upstream is slow)."""
    limits: dict[str, Any] = {"first_token_timeout": None, "idle_timeout": None, limit: 0.5}
    policy = streamtap.Policy(max_attempts=1, **limits)
    options: dict[str, Any] = {
        "base_url": fake.base_url,
        "api_key": "sk-test-secret-key-0000",
        "default_headers": {"x-fake-gap": "3"},
    }

    def read_sync() -> None:
        client = streamtap.instrument(openai.OpenAI(**options), policy=policy, recorders=[recording])
        with (
            client,
            client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True) as stream,
        ):
            for _ in stream:
                time.sleep(0.8)

    async def read_async() -> None:
        client = streamtap.instrument(openai.AsyncOpenAI(**options), policy=policy, recorders=[recording])
        async with client:
            stream = await client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
            async with stream:
                async for _ in stream:
                    await anyio.sleep(0.8)

    with pytest.raises(streamtap.StreamInterrupted) as raised:
        anyio.run(read_async) if is_async else read_sync()
    assert (raised.value.error_type, raised.value.phase) == (error_type, "streaming")
    assert (recording.finished.outcome, recording.finished.error_type) == ("error", error_type)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_a_callers_own_short_read_timeout_does_not_open_the_circuit(
    fake: FakeUpstream, recording: Recording, stream: bool
) -> None:
    """One impatient caller (`with_options(timeout=0.1)`) times out, again and again; the
    circuit every caller of the upstream shares stays closed for the patient ones."""
    policy = streamtap.Policy(max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=3))
    raw = openai.OpenAI(
        base_url=fake.base_url, api_key="sk-test-secret-key-0000", default_headers={"x-fake-ttft": "0.5"}
    )
    with streamtap.instrument(raw, policy=policy, recorders=[recording]) as client:

        def ask(who: Any) -> str:
            if stream:
                return _chat_text(who)[0]
            answer = who.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
            return str(answer.choices[0].message.content)

        impatient = client.with_options(timeout=0.1)
        for _ in range(4):
            with pytest.raises((streamtap.StreamInterrupted, openai.APITimeoutError)):
                ask(impatient)
        assert ask(client) == fake.expected_text(model="gpt-4o", messages=CHAT_MESSAGES)
    assert [e.error_type for e in recording.of(CallFinished)] == ["timeout"] * 4 + [None]
    assert recording.of(streamtap.BreakerTransition) == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_callers_own_read_timeout_mid_stream_is_the_sdks_timeout_error(
    mode: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """`except openai.APITimeoutError` catches it, as it catches the plain SDK's; it is also a
    StreamInterrupted, with the text the caller has."""
    client = make_client(mode == "async").with_options(timeout=0.3)
    fake.enqueue("stall_after=2;stall=3")
    received: list[str] = []

    def read() -> None:
        if mode == "sync":
            read_sync(client, "chat", received)
        else:
            anyio.run(lambda: read_async(client, "chat", received))

    with pytest.raises(openai.APITimeoutError) as raised:
        read()
    assert isinstance(raised.value, streamtap.StreamTimedOut)
    assert (raised.value.error_type, raised.value.text) == ("timeout", "".join(received))
    assert received == expected(fake, "chat")[:2]
    assert recording.finished.error_type == "timeout"


def test_a_full_connection_pool_of_the_callers_own_does_not_open_the_circuit(
    fake: FakeUpstream, recording: Recording
) -> None:
    """Callers that wait in vain for a connection of their client's own pool (its limits, its
    pool timeout) sent nothing: the healthy upstream is not to blame."""
    import httpx2

    policy = streamtap.Policy(
        max_attempts=2,
        backoff_base=0.01,
        breaker=streamtap.BreakerSettings(min_requests=1, failure_ratio=0.5),
    )
    http = openai.DefaultHttpxClient(
        limits=httpx2.Limits(max_connections=1), timeout=httpx2.Timeout(30.0, pool=0.1)
    )
    raw = openai.OpenAI(base_url=fake.base_url, api_key="sk-test-secret-key-0000", http_client=http)
    with streamtap.instrument(raw, policy=policy, recorders=[recording]) as client:
        held = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
        with pytest.raises(openai.APITimeoutError):  # the one connection is the held stream's
            client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
        held.close()
        assert _chat_text(client)[0] == fake.expected_text(model="gpt-4o", messages=CHAT_MESSAGES)
    assert [e.error_type for e in recording.of(CallFinished)] == ["timeout", None, None]
    assert recording.of(streamtap.BreakerTransition) == []


def test_error_events_that_blame_the_request_do_not_open_the_circuit(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """A prompt too long for the model, again and again, is no upstream outage."""
    policy = streamtap.Policy(max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=3))
    client = make_client(False, policy=policy)
    fake.enqueue(*["error_after=0;error_code=context_length_exceeded"] * 4)
    for _ in range(4):
        with pytest.raises(openai.APIError):
            _chat_text(client)
    text, _ = _chat_text(client)
    assert text == fake.expected_text(model="gpt-4o", messages=CHAT_MESSAGES)
    assert [e.error_type for e in recording.of(CallFinished)] == ["upstream_error_event"] * 4 + [None]
    assert recording.of(streamtap.BreakerTransition) == []


def test_input_is_validated_with_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"Fallback\.model needs a non-empty model name"):
        streamtap.Fallback.model("")
    with pytest.raises(ValueError, match=r"base_url must start with http:// or https://"):
        streamtap.Fallback.upstream("ftp://x")
    with pytest.raises(
        ValueError, match=r"base_url must not carry a query or fragment, got 'https://x/v1\?\.\.\.'"
    ):
        streamtap.Fallback.upstream("https://x/v1?v=1")
    with pytest.raises(TypeError, match=r"fallbacks must be streamtap\.Fallback values"):
        streamtap.instrument(openai.OpenAI(api_key="sk-x"), fallbacks=["gpt-4o-mini"], recorders=[])  # type: ignore[list-item]
    assert "sk-secret" not in repr(streamtap.Fallback.upstream("https://x", api_key="sk-secret"))
    assert RESPONSES_INPUT


def test_a_probes_first_content_closes_the_circuit_for_the_calls_beside_it(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """A half-open breaker closes when its probe's answer begins, not when that answer ends:
    a call beside a long probe is served, not refused as circuit_open."""
    policy = streamtap.Policy(
        max_attempts=1,
        breaker=streamtap.BreakerSettings(
            min_requests=2, failure_ratio=0.5, open_for=0.2, half_open_probes=1
        ),
    )
    client = make_client(False, policy=policy)
    fake.enqueue("status=502", "status=502")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            _chat_text(client)
    anyio.run(anyio.sleep, 0.25)
    fake.enqueue("stall_after=1;stall=1.0")  # the probe: its first content, then a long pause
    probe = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    with probe:
        next(iter(probe))  # the probe committed and is still streaming
        text, _ = _chat_text(client)  # beside it: served, not circuit_open
        assert text == "".join(expected(fake, "chat"))
        list(probe)
    moves = [(e.old, e.new) for e in recording.of(streamtap.BreakerTransition) if e.call_id]
    assert moves[-1] == ("half_open", "closed")
    assert [e.error_type for e in recording.of(CallFinished)][2:] == [None, None]


def test_a_fallback_the_breaker_refuses_leaves_the_calls_own_error(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """The caller gets the primary route's error, so that is the call's error type, and the
    fallback that could not be tried failed: circuit_open says no request was sent."""
    policy = streamtap.Policy(
        max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=2, failure_ratio=1.0, open_for=60)
    )
    client = make_client(False, policy=policy, fallbacks=[streamtap.Fallback.model("gpt-4o-mini")])
    fake.enqueue("status=500;model=gpt-4o-mini", "status=500;model=gpt-4o-mini")
    with pytest.raises(openai.InternalServerError):  # gpt-4o-mini fails twice: its breaker opens
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES, stream=True)
    fake.clear()
    fake.enqueue("status=503")
    with pytest.raises(openai.InternalServerError):
        _chat_text(client)
    assert [r.model for r in fake.requests] == ["gpt-4o"]
    finished = recording.of(CallFinished)[-1]
    assert (finished.error_type, finished.fallback) == ("server_error", None)
    assert recording.of(FallbackUsed)[-1] == FallbackUsed(finished.call_id, "model", "gpt-4o-mini", False)


def test_a_proxy_client_whose_retry_the_budget_refused_after_a_reset_is_told_so(fake: FakeUpstream) -> None:
    """502 `budget_exhausted`, the code the proxy's metrics count, not `connection`."""
    from streamtap._proxy_config import ProxyConfig
    from streamtap._proxy_server import ProxyServer

    policy = streamtap.Policy(max_attempts=3, budget=streamtap.BudgetSettings(ratio=0, min_per_second=0))
    recording = Recording()
    with ProxyServer(
        ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", policy=policy), recorders=[recording]
    ) as proxy:
        fake.clear()
        fake.enqueue("reset")
        client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0)
        with client, pytest.raises(openai.InternalServerError) as refused:
            client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    assert refused.value.status_code == 502 and refused.value.code == "budget_exhausted"
    assert recording.finished.error_type == "budget_exhausted"


def test_a_retry_the_breaker_refuses_when_due_is_counted_once(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """The breaker opened while the retry waited: it was counted as scheduled, so it is not
    counted as suppressed too. The caller gets the last error; the call gives up as
    circuit_open, as one whose retry the open breaker suppressed at once does."""
    policy = streamtap.Policy(
        max_attempts=2, breaker=streamtap.BreakerSettings(min_requests=2, failure_ratio=1.0, open_for=60)
    )
    client = make_client(False, policy=policy)
    fake.enqueue("status=503;retry_after=0.5")

    def opener() -> None:  # while the retry waits, one more failure opens the breaker
        time.sleep(0.1)
        fake.enqueue("status=500;should_retry=false")
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)

    thread = threading.Thread(target=opener)
    thread.start()
    with pytest.raises(openai.InternalServerError):
        _chat_text(client)
    thread.join()
    assert len(fake.requests) == 2  # the retry never went
    call_id = next(e.call_id for e in recording.of(CallFinished) if e.error_type == "circuit_open")
    assert [e for e in recording.of(RetrySuppressed) if e.call_id == call_id] == []
    assert len([e for e in recording.of(streamtap.RetryScheduled) if e.call_id == call_id]) == 1


@pytest.mark.parametrize("key", ["sk-second\n", " sk-second \r\n"], ids=["newline", "spaces"])
def test_an_upstream_fallback_key_from_a_file_loses_the_whitespace_around_it(
    recording: Recording, key: str
) -> None:
    """A key read from a secret file ends in its newline: it was sent as is, and every attempt
    of the fallback failed in h11 ("Illegal header value"), counted as a connection error."""
    from streamtap.fake import FakeConfig

    with (
        FakeUpstream(FakeConfig(chunks=3, api_key="sk-second")) as second,
        FakeUpstream(FakeConfig(chunks=3)) as first,
    ):
        first.enqueue("status=503;should_retry=false")
        client = streamtap.instrument(
            openai.OpenAI(base_url=first.base_url, api_key="sk-first"),
            policy=TEST_POLICY,
            recorders=[recording],
            fallbacks=[streamtap.Fallback.upstream(second.base_url, api_key=key)],
        )
        text, headers = _chat_text(client)
        client.close()
    assert text == second.expected_text(model="gpt-4o", messages=CHAT_MESSAGES)
    assert headers["x-streamtap-fallback"] == "upstream"
    assert [r.status for r in second.requests] == [200]  # the fake required, and got, its key


def test_an_upstream_fallback_with_its_own_key_sends_none_of_the_callers_identity(
    recording: Recording,
) -> None:
    """Another account's key goes without the caller's organization and project, which that
    account is refused with (401 mismatched_organization) and another upstream must not see."""
    from streamtap.fake import FakeConfig

    with (
        FakeUpstream(FakeConfig(chunks=3, api_key="sk-second")) as second,
        FakeUpstream(FakeConfig(chunks=3)) as first,
    ):
        first.enqueue("status=503;should_retry=false")
        raw = openai.OpenAI(
            base_url=first.base_url, api_key="sk-first", organization="org-first", project="proj_first"
        )
        client = streamtap.instrument(
            raw,
            policy=TEST_POLICY,
            recorders=[recording],
            fallbacks=[streamtap.Fallback.upstream(second.base_url, api_key="sk-second")],
        )
        _chat_text(client)
        client.close()
    assert first.requests[0].header("openai-organization") == "org-first"
    sent = second.requests[0]
    assert (sent.header("openai-organization"), sent.header("openai-project")) == (None, None)
    assert sent.header("authorization") is not None  # the fake answered: its own key came


@pytest.mark.parametrize("code", ["context_length_exceeded", "content_filter"])
def test_an_error_event_that_blames_the_request_is_not_fallen_back_from(
    code: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """As its twin, a 400, is not: another model or a non-streaming call meets the same prompt,
    and a cached answer would hide that the prompt was refused."""
    cache = streamtap.MemoryCache()
    fallbacks = [
        streamtap.Fallback.model("gpt-4o-mini"),
        streamtap.Fallback.non_streaming(),
        streamtap.Fallback.cached(cache),
    ]
    client = make_client(False, fallbacks=fallbacks)
    _chat_text(client)  # an answer in the cache
    fake.clear()
    fake.enqueue(f"error_after=0;error_code={code}")
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        _chat_text(client)
    assert raised.value.error_type == "upstream_error_event"
    assert len(fake.requests) == 1
    assert recording.of(FallbackUsed) == []


def test_two_clients_breakers_share_one_gauge_and_a_gone_clients_leaves_it(fake: FakeUpstream) -> None:
    """Each instrumented client has its own breakers; one recorder (as `default_recorders()`
    gives every client) shows the worst of them, so one client's breaker closing does not hide
    the other's that is open, and a client that is gone no longer holds the gauge up."""

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    recorder = streamtap.PrometheusRecorder(registry)
    policy = streamtap.Policy(
        max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=2, failure_ratio=1.0, open_for=1.0)
    )

    def client() -> Any:
        return streamtap.instrument(
            openai.OpenAI(base_url=fake.base_url, api_key="sk-test"), policy=policy, recorders=[recorder]
        )

    def open_breaker(routed: Any) -> None:
        fake.enqueue("status=500", "status=500")
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                _chat_text(routed)

    def state() -> float | None:
        labels = {"upstream": f"127.0.0.1:{fake.port}", "model": "gpt-4o"}
        return registry.get_sample_value("streamtap_circuit_state", labels)

    first, second = client(), client()
    open_breaker(second)
    time.sleep(1.05)  # the second's breaker is half-open now
    open_breaker(first)  # and the first's opens, for a second
    _chat_text(second)  # the second's probe closes its breaker
    assert state() == 2  # the first's is open still
    with pytest.raises(streamtap.CircuitOpenError):
        _chat_text(first)
    first.close()
    del first
    collect()
    assert state() == 0
    second.close()


@pytest.mark.parametrize("turn", [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"}])
def test_a_turn_of_a_conversation_the_upstream_keeps_is_not_cached(
    turn: dict[str, str], fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """Another turn's answer would be wrong for this one, and its made-up id is no turn the
    upstream knows: such answers are neither kept nor served."""
    cache = streamtap.MemoryCache()
    client = make_client(False, fallbacks=[streamtap.Fallback.cached(cache)])
    request = {"model": "gpt-4o", "input": RESPONSES_INPUT, "stream": True, **turn}
    with client.responses.create(**request) as stream:
        list(stream)
    assert len(cache) == 0
    fake.enqueue("status=503;should_retry=false")
    with pytest.raises(openai.InternalServerError), client.responses.create(**request) as stream:
        list(stream)
    assert recording.of(FallbackUsed) == []

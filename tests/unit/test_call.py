"""The Call state machine, driven by hand: retries, suppression, breaker, fallbacks, resume, finish."""

from __future__ import annotations

import itertools
import json
from typing import Any

import openai
import pytest

import streamtap
from streamtap import _engine
from streamtap._attempt import StreamAttempt
from streamtap._call import Call
from streamtap._chat import CHAT
from streamtap._driver import new_stream_attempt
from streamtap._engine import Engine, engine_api
from streamtap._errors import Failure, classify_exception, classify_status, failure
from streamtap._events import (
    AttemptFinished,
    AttemptStarted,
    BreakerTransition,
    CallEvent,
    CallFinished,
    CallStarted,
    FallbackUsed,
    FirstToken,
    RetryScheduled,
    RetrySuppressed,
)
from streamtap._fallback import Fallback, MemoryCache, cache_key, cache_scope
from streamtap._policy import BreakerSettings, BudgetSettings, Policy
from streamtap._responses import RESPONSES
from streamtap._steps import ErrorResponse, GiveUp, Send, Serve, Wait

URL = "http://up:8080/v1/chat/completions"
RESPONSES_URL = "http://up:8080/v1/responses"
BODY: dict[str, Any] = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
WALL = 1_700_000_000.0
NO_BREAKER = BreakerSettings(enabled=False)


@pytest.fixture(autouse=True)
def _call_ids_from_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Call ids are process-wide: each test here counts its calls from 1 again."""
    monkeypatch.setattr(_engine, "_CALL_IDS", itertools.count(1))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recording:
    """A recorder that keeps every event; it is also the observer of every call."""

    def __init__(self) -> None:
        self.started: list[CallStarted] = []
        self.events: list[CallEvent] = []
        self.breakers: list[BreakerTransition] = []

    def start_call(self, event: CallStarted) -> Recording:
        self.started.append(event)
        return self

    def on_event(self, event: CallEvent) -> None:
        self.events.append(event)

    def breaker_changed(self, event: BreakerTransition) -> None:
        self.breakers.append(event)

    def telemetry_failed(self, error: BaseException) -> None:
        raise AssertionError(f"telemetry failed: {error!r}")

    def finished(self) -> list[CallFinished]:
        return [e for e in self.events if isinstance(e, CallFinished)]


class Rig:
    def __init__(
        self, policy: Policy | None = None, fallbacks: tuple[Fallback, ...] = (), capture: bool = False
    ) -> None:
        self.clock = Clock()
        self.rec = Recording()
        self.engine = Engine(
            policy if policy is not None else Policy(breaker=NO_BREAKER),
            fallbacks,
            recorders=[self.rec],
            capture_content=capture,
            clock=self.clock,
            wall=lambda: WALL,
            rng=lambda: 0.5,
        )

    def start(self, body: dict[str, Any] | None = None, api: str = "chat_completions") -> Call:
        self.rec.events.clear()
        if api == "responses":
            return self.engine.start_call("responses", "/responses", RESPONSES_URL, body or BODY)
        return self.engine.start_call("chat_completions", "/chat/completions", URL, body or BODY)

    def send(self, call: Call) -> Send:
        step = call.next()
        assert isinstance(step, Send), step
        call.sending(step, self.clock.now)
        return step

    def fail_status(self, call: Call, send: Send, status: int, headers: dict[str, str] | None = None) -> None:
        self.clock.now += 0.1
        headers = headers or {}
        call.attempt_failed(
            send,
            classify_status(status, headers, None),
            now=self.clock.now,
            wall=WALL,
            headers=headers,
            error_response=ErrorResponse(status, list(headers.items()), b'{"error":{}}'),
        )

    def fail(self, call: Call, send: Send, failure: Failure) -> None:
        self.clock.now += 0.1
        call.attempt_failed(send, failure, now=self.clock.now, wall=WALL)

    def stream(self, call: Call, send: Send, frames: list[bytes], *, end: bool = True) -> StreamAttempt:
        """Feed frames 0.1 s apart; commit the call as a driver would."""
        self.clock.now += 0.1
        attempt = new_stream_attempt(call, send, call.sent_at(send, self.clock.now), self.clock.now)
        for frame in frames:
            self.clock.now += 0.1
            was = attempt.committed
            out = attempt.feed(frame, self.clock.now)
            if attempt.committed and not was and not send.resume:
                call.committed_at(send, attempt, attempt.first_content_at or self.clock.now, 200)
            if out:
                call.delivered.append(out)
        if end:
            attempt.end()
        return attempt

    def succeed(self, call: Call, send: Send, frames: list[bytes] | None = None) -> None:
        attempt = self.stream(call, send, frames or [ROLE, chunk("Hi"), chunk(" there"), USAGE, DONE])
        assert attempt.failure is None
        ttft = attempt.first_content_at - attempt.sent_at if attempt.first_content_at is not None else None
        call.attempt_ok(send, self.clock.now, 200, ttft)
        call.finish("ok", self.clock.now)


ROLE = b'data: {"id":"chatcmpl-1","model":"gpt-x-2024","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
USAGE = b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"


def chunk(text: str) -> bytes:
    return (
        b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'
    )


def started(attempt: int, model: str = "gpt-x", fallback: Any = None, url: str = URL) -> AttemptStarted:
    return AttemptStarted(1, attempt, "POST", url, model, fallback)


def of_type(events: list[CallEvent], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# -- routing and start ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/chat/completions", ("chat_completions", "/chat/completions")),
        ("POST", "/openai/deployments/d/chat/completions", ("chat_completions", "/chat/completions")),
        ("POST", "/v1/responses", ("responses", "/responses")),
        ("GET", "/v1/responses", None),
        ("GET", "/v1/chat/completions", None),
        ("POST", "/v1/embeddings", None),
        ("POST", "/v1/responses/resp_1/cancel", None),
    ],
)
def test_engine_api(method: str, path: str, expected: Any) -> None:
    assert engine_api(method, path) == expected


@pytest.mark.parametrize(
    ("url", "address", "port"),
    [
        ("http://up:8080/v1/chat/completions", "up", 8080),
        ("https://api.openai.com/v1/chat/completions", "api.openai.com", 443),
        ("http://localhost/v1/chat/completions", "localhost", 80),
        ("http://[::1]:9000/v1/chat/completions", "::1", 9000),
        ("https://[2001:db8::1]/v1/chat/completions", "2001:db8::1", 443),
    ],
)
def test_start_call_emits_call_started(url: str, address: str, port: int) -> None:
    rig = Rig()
    call = rig.engine.start_call("chat_completions", "/chat/completions", url, BODY)
    assert rig.rec.started == [CallStarted(1, "chat_completions", "gpt-x", True, address, port, BODY, False)]
    assert (call.call_id, call.api, call.dialect, call.started_at) == (1, "chat_completions", CHAT, 100.0)
    assert call.primary.upstream == url.split("/v1")[0]
    assert rig.engine.start_call("responses", "/responses", url, {"model": 3}).call_id == 2
    assert rig.rec.started[1].model == ""
    assert rig.rec.started[1].stream is False


def test_engine_rejects_wrong_types() -> None:
    with pytest.raises(TypeError, match=r"policy must be a streamtap\.Policy, got dict"):
        Engine({}, recorders=[])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"fallbacks must be streamtap\.Fallback values, got 'gpt-y'"):
        Engine(Policy(), ["gpt-y"], recorders=[])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"fallbacks": Fallback.non_streaming()},
            r"fallbacks must be a list of streamtap\.Fallback values, e\.g\. .*got Fallback\.non_streaming\(\)",
            id="one-fallback",
        ),
        pytest.param(
            {"fallbacks": "gpt-y"},
            r"fallbacks must be a list of streamtap\.Fallback values, e\.g\. .*got 'gpt-y'",
            id="model-name",
        ),
        pytest.param(
            {"recorders": [1]}, r"recorders\[0\] must be a streamtap Recorder .*got 1", id="not-a-recorder"
        ),
        pytest.param(
            {"recorders": Recording()}, r"recorders must be a list of recorders, .*got <", id="one-recorder"
        ),
        pytest.param({"recorders": "prometheus"}, r"recorders must be a list of recorders", id="text"),
        pytest.param(
            {"recorders": [], "capture_content": "false"},
            r"capture_content must be True, False or None .*got 'false'",
            id="capture-text",
        ),
    ],
)
def test_engine_names_the_argument_at_fault(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("recorders", [])
    with pytest.raises(TypeError, match=message):
        Engine(Policy(), **kwargs)
    with pytest.raises(TypeError, match=message):
        streamtap.instrument(openai.OpenAI(api_key="sk-x"), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"verify_events": "no"}, r"verify_events must be True or False, got 'no'", id="verify-text"
        ),
        pytest.param({"clock": 3}, r"clock must be a function taking no arguments, got 3", id="clock"),
        pytest.param({"wall": 0.0}, r"wall must be a function taking no arguments, got 0\.0", id="wall"),
        pytest.param({"rng": None}, r"rng must be a function taking no arguments, got None", id="rng"),
    ],
)
def test_engine_names_its_other_arguments_at_fault(kwargs: dict[str, Any], message: str) -> None:
    """Accepted before: a text `verify_events` counted as true; a clock failed at the first call."""
    with pytest.raises(TypeError, match=message):
        Engine(Policy(), recorders=[], **kwargs)


# -- retries ----------------------------------------------------------------------------------------


def test_two_429s_then_success() -> None:
    rig = Rig()
    call = rig.start()
    first = rig.send(call)
    assert first == Send("POST", URL, json.dumps(BODY, separators=(",", ":")).encode(), call.primary, 0, {})
    rig.fail_status(call, first, 429, {"retry-after": "2"})
    assert call.next() == Wait(2.0)  # the server asked for more than the 0.25 s backoff
    rig.clock.now += 2.0
    second = rig.send(call)
    rig.fail_status(call, second, 429, {"retry-after-ms": "100"})
    assert call.next() == Wait(0.5)  # backoff 0.5 * min(8, 0.5 * 2) beats the 0.1 s asked
    rig.clock.now += 0.5
    third = rig.send(call)
    assert third.attempt == 2
    rig.succeed(call, third)
    events = rig.rec.events
    assert events[:6] == [
        started(0),
        AttemptFinished(1, 0, 429, "rate_limited", "headers", pytest.approx(0.1), None, True),  # type: ignore[arg-type]
        RetryScheduled(1, 0, "rate_limited", 2.0),
        started(1),
        AttemptFinished(1, 1, 429, "rate_limited", "headers", pytest.approx(0.1), None, True),  # type: ignore[arg-type]
        RetryScheduled(1, 1, "rate_limited", 0.5),
    ]
    assert events[6] == started(2)
    first_token = events[7]
    assert isinstance(first_token, FirstToken)
    assert (first_token.attempt, first_token.time_to_first_token) == (2, pytest.approx(3.0))
    ok = events[8]
    assert isinstance(ok, AttemptFinished)
    assert (ok.attempt, ok.status_code, ok.error_type, ok.phase) == (2, 200, None, None)
    assert ok.time_to_first_token == pytest.approx(0.3)
    (finished,) = rig.rec.finished()
    assert events[9:] == [finished]
    assert finished == CallFinished(
        call_id=1,
        outcome="ok",
        error_type=None,
        duration=pytest.approx(3.3),  # type: ignore[arg-type]
        attempts=3,
        time_to_first_token=pytest.approx(3.0),  # type: ignore[arg-type]
        input_tokens=4,
        output_tokens=2,
        finish_reasons=("stop",),
        response_model="gpt-x-2024",
        response_id="chatcmpl-1",
        max_chunk_gap=pytest.approx(0.1),  # type: ignore[arg-type]
        chunks=2,
        fallback=None,
        output_messages=None,
    )


def test_non_retryable_400_gives_up_at_once_even_with_fallbacks() -> None:
    rig = Rig(fallbacks=(Fallback.model("gpt-y"), Fallback.non_streaming()))
    call = rig.start()
    send = rig.send(call)
    rig.fail_status(call, send, 400)
    assert call.next() == GiveUp()
    assert call.error_type == "bad_request"
    assert call.error_response == ErrorResponse(400, [], b'{"error":{}}')
    call.finish("error", rig.clock.now)
    assert [type(e) for e in rig.rec.events] == [AttemptStarted, AttemptFinished, CallFinished]
    finished = rig.rec.finished()[0]
    assert (finished.outcome, finished.error_type, finished.attempts) == ("error", "bad_request", 1)


def test_auth_skips_fallbacks() -> None:
    rig = Rig(fallbacks=(Fallback.model("gpt-y"),))
    call = rig.start()
    rig.fail_status(call, rig.send(call), 401)
    assert call.next() == GiveUp()
    assert call.error_type == "auth"


def test_max_attempts_suppresses() -> None:
    rig = Rig(Policy(max_attempts=2, breaker=NO_BREAKER))
    call = rig.start()
    rig.fail_status(call, rig.send(call), 500)
    assert call.next() == Wait(0.25)
    rig.fail_status(call, rig.send(call), 503)
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 1, "server_error", "attempts")]
    assert call.error_type == "server_error"
    call.finish("error", rig.clock.now)
    assert rig.rec.finished()[0].attempts == 2


def test_max_attempts_one_never_retries() -> None:
    rig = Rig(Policy(max_attempts=1, breaker=NO_BREAKER))
    call = rig.start()
    rig.fail(call, rig.send(call), classify_exception(ConnectionError("refused"), phase="connect"))
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 0, "connection", "attempts")]


def test_max_retry_wait_suppresses_with_cause_deadline() -> None:
    rig = Rig(Policy(max_retry_wait=1.0, breaker=NO_BREAKER))
    call = rig.start()
    rig.fail_status(call, rig.send(call), 503, {"retry-after": "0.8"})
    assert call.next() == Wait(0.8)
    rig.fail_status(call, rig.send(call), 503, {"retry-after": "0.3"})  # 0.8 + 0.5 > 1.0
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 1, "server_error", "deadline")]


def test_total_timeout_suppresses_with_cause_deadline() -> None:
    rig = Rig(Policy(total_timeout=5.0, breaker=NO_BREAKER))
    call = rig.start()
    assert call.deadline == 105.0
    send = rig.send(call)
    rig.clock.now = 102.9
    rig.fail_status(call, send, 429, {"retry-after": "2"})  # at 103.0: 103 + 2 reaches the deadline
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 0, "rate_limited", "deadline")]


def test_max_retry_after_suppresses_with_cause_deadline() -> None:
    rig = Rig(Policy(max_retry_after=10.0, max_retry_wait=100.0, breaker=NO_BREAKER))
    call = rig.start()
    rig.fail_status(call, rig.send(call), 429, {"retry-after": "30"})
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 0, "rate_limited", "deadline")]
    assert of_type(rig.rec.events, RetryScheduled) == []


def test_budget_exhaustion() -> None:
    rig = Rig(Policy(budget=BudgetSettings(ratio=0.0, min_per_second=0.0), breaker=NO_BREAKER))
    call = rig.start()
    rig.fail_status(call, rig.send(call), 500)
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 0, "server_error", "budget")]
    assert call.error_type == "budget_exhausted"
    call.finish("error", rig.clock.now)
    assert rig.rec.finished()[0].error_type == "budget_exhausted"


def test_budget_counts_calls_and_retries() -> None:
    # ratio 0.5, no floor: each call adds half a retry.
    rig = Rig(Policy(budget=BudgetSettings(ratio=0.5, min_per_second=0.0), breaker=NO_BREAKER))
    rig.start()
    call = rig.start()  # two deposits: one retry available
    rig.fail_status(call, rig.send(call), 500)
    assert isinstance(call.next(), Wait)
    rig.fail_status(call, rig.send(call), 500)
    assert call.next() == GiveUp()
    assert call.error_type == "budget_exhausted"


def test_timeouts_and_interruptions_before_commit_are_retried() -> None:
    rig = Rig()
    call = rig.start()
    send = rig.send(call)
    attempt = rig.stream(call, send, [ROLE], end=False)
    attempt.broke(classify_exception(ConnectionResetError("reset"), phase=attempt.phase))
    assert attempt.failure is not None
    rig.fail(call, send, attempt.failure)
    assert call.next() == Wait(0.25)
    assert call.delivered == []  # the caller never saw the failed attempt
    assert of_type(rig.rec.events, RetryScheduled) == [RetryScheduled(1, 0, "stream_interrupted", 0.25)]


# -- breaker ----------------------------------------------------------------------------------------

TRIPPY = BreakerSettings(window=10.0, min_requests=1, failure_ratio=0.5, open_for=30.0)


def test_breaker_opens_and_then_fails_fast_without_send() -> None:
    rig = Rig(Policy(max_attempts=1, breaker=TRIPPY))
    call = rig.start()
    rig.fail_status(call, rig.send(call), 500)
    engine_id = rig.engine.id
    transition = BreakerTransition("http://up:8080", "gpt-x", "closed", "open", engine_id=engine_id)
    assert rig.rec.breakers == [transition]
    assert BreakerTransition("http://up:8080", "gpt-x", "closed", "open", 1, engine_id) in rig.rec.events
    assert call.next() == GiveUp()
    call.finish("error", rig.clock.now)

    second = rig.start()
    assert second.next() == GiveUp()
    assert second.error_type == "circuit_open"
    second.finish("error", rig.clock.now)
    assert rig.rec.events == [
        CallFinished(2, "error", "circuit_open", 0.0, 0, None),
    ]


def test_breaker_neutral_4xx_does_not_open() -> None:
    rig = Rig(Policy(max_attempts=1, breaker=TRIPPY))
    for _ in range(3):
        call = rig.start()
        rig.fail_status(call, rig.send(call), 404)
        call.finish("error", rig.clock.now)
    assert rig.rec.breakers == []
    assert rig.engine.breakers.get("http://up:8080", "gpt-x").state == "closed"


def test_a_retry_the_open_breaker_would_refuse_is_not_waited_for() -> None:
    rig = Rig(Policy(breaker=TRIPPY))
    call = rig.start()
    rig.fail_status(
        call, rig.send(call), 500
    )  # opens the breaker for 30 s: the retry, due in 0.25 s, cannot go
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetryScheduled) == []  # never scheduled, so never counted as a retry
    assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 0, "server_error", "breaker")]
    assert call.error_type == "circuit_open"


def test_a_retry_the_breaker_opened_on_during_its_wait_gives_up_counted_once() -> None:
    rig = Rig(Policy(breaker=BreakerSettings(window=10.0, min_requests=2, failure_ratio=0.5, open_for=30.0)))
    call = rig.start()
    rig.fail_status(call, rig.send(call), 500)  # one outcome: the breaker stays closed
    assert call.next() == Wait(0.25)
    assert of_type(rig.rec.events, RetryScheduled) == [RetryScheduled(1, 0, "server_error", 0.25)]
    other = rig.start()
    rig.fail_status(other, rig.send(other), 500)  # another call's failure opens it during the wait
    assert call.next() == GiveUp()
    # Counted once, as scheduled: not as suppressed too (the other call's retry was suppressed).
    assert 1 not in [e.call_id for e in of_type(rig.rec.events, RetrySuppressed)]
    assert call.error_type == "circuit_open"


def test_breaker_open_falls_back_to_another_model() -> None:
    rig = Rig(Policy(max_attempts=1, breaker=TRIPPY), fallbacks=(Fallback.model("gpt-y"),))
    rig.engine.breakers.get("http://up:8080", "gpt-x").admit()
    rig.engine.breakers.get("http://up:8080", "gpt-x").record_failure()
    call = rig.start()
    send = rig.send(call)
    assert (send.route.model, send.route.fallback, send.attempt) == ("gpt-y", "model", 0)
    assert json.loads(send.body or b"")["model"] == "gpt-y"
    rig.succeed(call, send)
    assert rig.rec.events[0] == started(0, "gpt-y", "model")
    assert FallbackUsed(1, "model", "gpt-y", True) in rig.rec.events
    assert of_type(rig.rec.events, RetrySuppressed) == []
    assert rig.rec.finished()[0].fallback == "model"


def test_fallback_route_with_open_breaker_is_not_a_suppressed_retry() -> None:
    rig = Rig(Policy(breaker=TRIPPY), fallbacks=(Fallback.model("gpt-y"),))
    rig.engine.breakers.get("http://up:8080", "gpt-y").admit()
    rig.engine.breakers.get("http://up:8080", "gpt-y").record_failure()
    call = rig.start()
    rig.fail_status(call, rig.send(call), 404)  # not retryable: straight to the fallback
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetrySuppressed) == []
    assert FallbackUsed(1, "model", "gpt-y", False) in rig.rec.events  # refused: it failed
    assert call.error_type == "not_found"  # what the caller gets; circuit_open sent nothing


# -- fallbacks -------------------------------------------------------------------------------------


def test_fallbacks_in_order_then_cache_miss() -> None:
    cache = MemoryCache(clock=Clock())
    rig = Rig(
        Policy(max_attempts=1, breaker=NO_BREAKER),
        fallbacks=(
            Fallback.model("gpt-y"),
            Fallback.upstream("http://other:9/v1", api_key="sk-other"),
            Fallback.non_streaming(),
            Fallback.cached(cache),
        ),
    )
    call = rig.start()
    rig.fail_status(call, rig.send(call), 500)
    to_model = rig.send(call)
    assert (to_model.route.model, to_model.route.fallback, to_model.url) == ("gpt-y", "model", URL)
    rig.fail_status(call, to_model, 503)  # a fallback is tried once, never retried
    to_upstream = rig.send(call)
    assert to_upstream.url == "http://other:9/v1/chat/completions"
    assert (to_upstream.route.api_key, to_upstream.route.upstream) == ("sk-other", "http://other:9")
    rig.fail(call, to_upstream, classify_exception(ConnectionError("refused"), phase="connect"))
    non_streaming = rig.send(call)
    assert non_streaming.route.stream is False
    assert json.loads(non_streaming.body or b"") == {"model": "gpt-x", "messages": BODY["messages"]}
    rig.fail_status(call, non_streaming, 502)
    assert call.next() == GiveUp()
    assert call.error_type == "server_error"
    assert [e for e in rig.rec.events if isinstance(e, (AttemptStarted, FallbackUsed, RetrySuppressed))] == [
        started(0),
        RetrySuppressed(1, 0, "server_error", "attempts"),
        started(1, "gpt-y", "model"),
        FallbackUsed(1, "model", "gpt-y", False),
        started(2, "gpt-x", "upstream", "http://other:9/v1/chat/completions"),
        FallbackUsed(1, "upstream", "gpt-x", False),
        started(3, "gpt-x", "non_streaming"),
        FallbackUsed(1, "non_streaming", "gpt-x", False),
        FallbackUsed(1, "cache", "gpt-x", False),
    ]


def test_cache_hit_serves_a_synthesized_stream() -> None:
    cache = MemoryCache(clock=Clock())
    rig = Rig(Policy(max_attempts=1, breaker=NO_BREAKER), fallbacks=(Fallback.cached(cache),))
    ok = rig.start()
    rig.succeed(ok, rig.send(ok))
    assert len(cache) == 1
    # The same request (stream options do not matter) fails: the cached answer serves it.
    call = rig.start({**BODY, "stream_options": {"include_usage": True}})
    rig.fail_status(call, rig.send(call), 500)
    step = call.next()
    assert isinstance(step, Serve) and step.stream is True
    assert CHAT.text(step.body) == "Hi there"
    assert step.body.endswith(b"data: [DONE]\n\n")
    assert b'"model":"gpt-x"' in step.body
    call.finish("ok", rig.clock.now)
    assert FallbackUsed(2, "cache", "gpt-x", True) in rig.rec.events
    finished = rig.rec.finished()[0]
    assert (finished.outcome, finished.error_type, finished.fallback, finished.attempts) == (
        "ok",
        None,
        "cache",
        1,
    )


def test_cache_hit_for_a_non_streaming_caller_is_json() -> None:
    cache = MemoryCache(clock=Clock())
    cache.set(cache_key("chat_completions", BODY, cache_scope(URL, {})), "cached")
    rig = Rig(Policy(max_attempts=1, breaker=NO_BREAKER), fallbacks=(Fallback.cached(cache),))
    call = rig.start({**BODY, "stream": False})
    rig.fail_status(call, rig.send(call), 500)
    step = call.next()
    assert isinstance(step, Serve) and step.stream is False
    assert json.loads(step.body)["choices"][0]["message"]["content"] == "cached"


def test_cached_answers_are_kept_per_credential() -> None:
    """One engine serves every key of a client (`with_options`) and of the proxy: an answer
    made with one key never serves another's call."""
    cache = MemoryCache(clock=Clock())
    rig = Rig(Policy(max_attempts=1, breaker=NO_BREAKER), fallbacks=(Fallback.cached(cache),))
    ok = rig.start()
    ok.scope_cache({"authorization": "Bearer sk-a"})
    rig.succeed(ok, rig.send(ok))
    other = rig.start()
    other.scope_cache({"authorization": "Bearer sk-b"})
    rig.fail_status(other, rig.send(other), 429)
    assert other.next() == GiveUp()
    assert of_type(rig.rec.events, FallbackUsed) == [FallbackUsed(2, "cache", "gpt-x", False)]
    same = rig.start()
    same.scope_cache({"authorization": "Bearer sk-a"})
    rig.fail_status(same, rig.send(same), 429)
    step = same.next()
    assert isinstance(step, Serve) and CHAT.text(step.body) == "Hi there"


def test_a_model_the_key_cannot_reach_is_not_hidden_by_the_cache() -> None:
    cache = MemoryCache(clock=Clock())
    rig = Rig(
        Policy(max_attempts=1, breaker=NO_BREAKER),
        fallbacks=(Fallback.model("gpt-y"), Fallback.cached(cache)),
    )
    ok = rig.start()
    rig.succeed(ok, rig.send(ok))
    assert len(cache) == 1
    call = rig.start()
    rig.fail_status(call, rig.send(call), 404)
    to_model = rig.send(call)  # another model may still serve it
    rig.fail_status(call, to_model, 503)
    assert call.next() == GiveUp()
    assert call.error_type == "not_found"  # what its own route met, not the fallback's 503
    assert of_type(rig.rec.events, FallbackUsed) == [FallbackUsed(2, "model", "gpt-y", False)]
    # An outage of the primary whose model fallback is not found does go to the cache.
    call = rig.start()
    rig.fail_status(call, rig.send(call), 503)
    rig.fail_status(call, rig.send(call), 404)
    step = call.next()
    assert isinstance(step, Serve) and CHAT.text(step.body) == "Hi there"


def test_after_the_total_timeout_only_the_cache_is_tried() -> None:
    cache = MemoryCache(clock=Clock())
    fallbacks = (
        Fallback.model("gpt-y"),
        Fallback.upstream("http://other:9/v1"),
        Fallback.non_streaming(),
        Fallback.cached(cache),
    )
    rig = Rig(Policy(max_attempts=1, total_timeout=1.0, breaker=NO_BREAKER), fallbacks=fallbacks)
    ok = rig.start()
    rig.succeed(ok, rig.send(ok))
    call = rig.start()
    send = rig.send(call)
    rig.clock.now = call.started_at + 1.0
    call.attempt_failed(
        send,
        failure("timeout", "first_token", "the call's total_timeout ran out"),
        now=rig.clock.now,
        wall=WALL,
    )
    step = call.next()
    assert isinstance(step, Serve) and CHAT.text(step.body) == "Hi there"
    assert [e.fallback for e in of_type(rig.rec.events, AttemptStarted)] == [None]
    assert of_type(rig.rec.events, FallbackUsed) == [FallbackUsed(2, "cache", "gpt-x", True)]


def test_after_the_total_timeout_without_a_cache_the_call_times_out() -> None:
    fallbacks = (Fallback.model("gpt-y"), Fallback.non_streaming())
    rig = Rig(Policy(max_attempts=3, total_timeout=1.0, breaker=NO_BREAKER), fallbacks=fallbacks)
    call = rig.start()
    send = rig.send(call)
    rig.clock.now = call.started_at + 1.5
    call.attempt_failed(
        send,
        failure("timeout", "first_token", "the call's total_timeout ran out"),
        now=rig.clock.now,
        wall=WALL,
    )
    assert call.next() == GiveUp()
    assert call.error_type == "timeout"
    assert of_type(rig.rec.events, AttemptStarted) == [started(0)]
    assert of_type(rig.rec.events, FallbackUsed) == []


def test_before_the_total_timeout_fallbacks_are_tried() -> None:
    rig = Rig(
        Policy(max_attempts=1, total_timeout=1.0, breaker=NO_BREAKER), fallbacks=(Fallback.model("gpt-y"),)
    )
    call = rig.start()
    rig.fail_status(call, rig.send(call), 503)  # 0.1 s in
    assert rig.send(call).route.model == "gpt-y"


def test_open_breaker_served_from_cache_without_send() -> None:
    cache = MemoryCache(clock=Clock())
    rig = Rig(Policy(breaker=TRIPPY), fallbacks=(Fallback.cached(cache),))
    ok = rig.start()
    rig.succeed(ok, rig.send(ok))
    rig.engine.breakers.get("http://up:8080", "gpt-x").admit()
    rig.engine.breakers.get("http://up:8080", "gpt-x").record_failure()
    call = rig.start()
    step = call.next()
    assert isinstance(step, Serve)
    assert CHAT.text(step.body) == "Hi there"
    assert of_type(rig.rec.events, AttemptStarted) == []


def test_empty_answers_are_not_cached() -> None:
    cache = MemoryCache(clock=Clock())
    rig = Rig(fallbacks=(Fallback.cached(cache),))
    call = rig.start()
    tool = b'data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{}"}}]}}]}\n\n'
    rig.succeed(call, rig.send(call), [ROLE, tool, DONE])
    # A tool-call answer has no text: serving "" later would be a wrong answer.
    assert len(cache) == 0


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param(b'{"index":0,"delta":{},"finish_reason":"length"}', id="length"),
        pytest.param(b'{"index":0,"delta":{},"finish_reason":"content_filter"}', id="content-filter"),
        pytest.param(
            b'{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{}"}}]},'
            b'"finish_reason":"tool_calls"}',
            id="text-and-tool-call",
        ),
    ],
)
def test_answers_a_replay_would_change_are_not_cached(finish: bytes) -> None:
    """A cached answer is replayed as its text with finish reason `stop`: an answer cut short,
    filtered or with tool calls would come back as a different, complete text answer."""
    cache = MemoryCache(clock=Clock())
    rig = Rig(fallbacks=(Fallback.cached(cache),))
    call = rig.start()
    last = b'data: {"id":"chatcmpl-1","choices":[' + finish + b"]}\n\n"
    rig.succeed(call, rig.send(call), [ROLE, chunk("Hi"), last, DONE])
    assert rig.rec.finished()[0].outcome == "ok"
    assert len(cache) == 0


def test_non_streaming_fallback_success() -> None:
    rig = Rig(Policy(max_attempts=1, breaker=NO_BREAKER), fallbacks=(Fallback.non_streaming(),))
    call = rig.start()
    rig.fail_status(call, rig.send(call), 500)
    send = rig.send(call)
    assert send.route.fallback == "non_streaming"
    answer = CHAT.answer_json("whole", "gpt-x")
    CHAT.body_facts(answer, call.facts)
    call.attempt_ok(send, rig.clock.now, 200, None)
    call.finish("ok", rig.clock.now, body=answer)
    assert FallbackUsed(1, "non_streaming", "gpt-x", True) in rig.rec.events
    finished = rig.rec.finished()[0]
    assert (finished.fallback, finished.finish_reasons, finished.chunks) == ("non_streaming", ("stop",), 0)


# -- after commit ------------------------------------------------------------------------------------


def test_chat_failure_after_commit_gives_up() -> None:
    rig = Rig(fallbacks=(Fallback.model("gpt-y"),))
    call = rig.start()
    send = rig.send(call)
    attempt = rig.stream(call, send, [ROLE, chunk("Hel")])
    assert attempt.failure is not None and attempt.failure.error_type == "stream_truncated"
    rig.fail(call, send, attempt.failure)
    assert call.next() == GiveUp()
    assert call.delivered_text() == "Hel"
    assert of_type(rig.rec.events, RetryScheduled) == []
    call.finish("error", rig.clock.now)
    finished = rig.rec.finished()[0]
    assert (finished.error_type, finished.chunks, finished.attempts) == ("stream_truncated", 1, 1)


def created(seq: int) -> bytes:
    payload = {
        "type": "response.created",
        "sequence_number": seq,
        "response": {"id": "resp_1", "model": "gpt-x"},
    }
    return b"event: response.created\ndata: " + json.dumps(payload).encode() + b"\n\n"


def delta(seq: int, text: str) -> bytes:
    payload = {"type": "response.output_text.delta", "sequence_number": seq, "delta": text}
    return b"event: response.output_text.delta\ndata: " + json.dumps(payload).encode() + b"\n\n"


def completed(seq: int) -> bytes:
    payload = {
        "type": "response.completed",
        "sequence_number": seq,
        "response": {"id": "resp_1", "model": "gpt-x", "usage": {"input_tokens": 3, "output_tokens": 4}},
    }
    return b"event: response.completed\ndata: " + json.dumps(payload).encode() + b"\n\n"


BACKGROUND = {"model": "gpt-x", "stream": True, "background": True, "input": "hi"}


def test_background_response_resumes_after_commit() -> None:
    rig = Rig()
    call = rig.start(BACKGROUND, api="responses")
    assert call.dialect is RESPONSES
    send = rig.send(call)
    attempt = rig.stream(call, send, [created(0), delta(1, "a"), delta(2, "b")], end=False)
    attempt.broke(classify_exception(ConnectionResetError("reset"), phase=attempt.phase))
    assert attempt.failure is not None and attempt.failure.phase == "streaming"
    rig.fail(call, send, attempt.failure)
    assert call.next() == Wait(0.25)
    resume = call.next()
    assert resume == Send(
        "GET",
        "http://up:8080/v1/responses/resp_1?stream=true&starting_after=2",
        None,
        call.route,
        1,
        {},
        after=2,
    )
    call.sending(resume, rig.clock.now)
    rig.succeed(call, resume, [delta(3, "c"), completed(4)])
    assert call.delivered_text() == "abc"
    events = rig.rec.events
    assert of_type(events, AttemptStarted)[1] == AttemptStarted(
        1, 1, "GET", "http://up:8080/v1/responses/resp_1", "gpt-x", None
    )
    assert of_type(events, RetryScheduled) == [RetryScheduled(1, 0, "stream_interrupted", 0.25)]
    assert len(of_type(events, FirstToken)) == 1
    finished = rig.rec.finished()[0]
    assert (finished.outcome, finished.attempts, finished.chunks) == ("ok", 2, 3)
    assert (finished.input_tokens, finished.output_tokens, finished.response_id) == (3, 4, "resp_1")


def test_a_resume_goes_whatever_the_breaker_says() -> None:
    # The failure that broke the committed stream opens the breaker (min 1, ratio 0.5); the
    # resume still goes: it is the one way to save what the caller is reading.
    rig = Rig(Policy(breaker=TRIPPY))
    call = rig.start(BACKGROUND, api="responses")
    send = rig.send(call)
    attempt = rig.stream(call, send, [created(0), delta(1, "a")], end=False)
    attempt.broke(classify_exception(ConnectionResetError("reset"), phase=attempt.phase))
    assert attempt.failure is not None
    rig.fail(call, send, attempt.failure)
    assert rig.engine.breakers.get("http://up:8080", "gpt-x").state == "open"
    assert call.next() == Wait(0.25)
    assert call.next().method == "GET"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("5", Wait(5.0)), ("120", GiveUp())],
    ids=["waits_as_asked", "longer_than_max_retry_after"],
)
def test_a_resume_that_gets_an_error_status_honours_its_retry_after(retry_after: str, expected: Any) -> None:
    rig = Rig()
    call = rig.start(BACKGROUND, api="responses")
    send = rig.send(call)
    attempt = rig.stream(call, send, [created(0), delta(1, "a")], end=False)
    attempt.broke(classify_exception(ConnectionResetError("reset"), phase=attempt.phase))
    assert attempt.failure is not None
    rig.fail(call, send, attempt.failure)
    assert call.next() == Wait(0.25)
    resume = call.next()
    assert isinstance(resume, Send) and resume.resume
    call.sending(resume, rig.clock.now)
    rig.fail_status(call, resume, 429, {"retry-after": retry_after})
    assert call.next() == expected
    if expected == GiveUp():
        assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 1, "rate_limited", "deadline")]


def test_non_background_response_does_not_resume() -> None:
    rig = Rig()
    call = rig.start({**BACKGROUND, "background": False}, api="responses")
    send = rig.send(call)
    attempt = rig.stream(call, send, [created(0), delta(1, "a")])
    assert attempt.failure is not None
    rig.fail(call, send, attempt.failure)
    assert call.next() == GiveUp()


def test_resume_respects_max_attempts() -> None:
    rig = Rig(Policy(max_attempts=1, breaker=NO_BREAKER))
    call = rig.start(BACKGROUND, api="responses")
    send = rig.send(call)
    attempt = rig.stream(call, send, [created(0), delta(1, "a")])
    assert attempt.failure is not None
    rig.fail(call, send, attempt.failure)
    assert call.next() == GiveUp()
    assert of_type(rig.rec.events, RetrySuppressed) == [RetrySuppressed(1, 0, "stream_truncated", "attempts")]


# -- finish ------------------------------------------------------------------------------------------


def test_finish_exactly_once() -> None:
    rig = Rig()
    call = rig.start()
    rig.succeed(call, rig.send(call))
    call.finish("error", rig.clock.now + 5)
    call.finish("cancelled", rig.clock.now + 6)
    assert len(rig.rec.finished()) == 1
    assert rig.rec.finished()[0].outcome == "ok"


@pytest.mark.parametrize("outcome", ["cancelled", "abandoned"])
def test_cancelled_and_abandoned_have_no_error_type(outcome: Any) -> None:
    rig = Rig()
    call = rig.start()
    send = rig.send(call)
    rig.stream(call, send, [ROLE, chunk("a")], end=False)
    call.finish(outcome, rig.clock.now)
    finished = rig.rec.finished()[0]
    assert (finished.outcome, finished.error_type, finished.chunks, finished.max_chunk_gap) == (
        outcome,
        None,
        1,
        None,
    )


def test_finish_releases_an_unconcluded_half_open_probe() -> None:
    settings = BreakerSettings(window=10.0, min_requests=1, failure_ratio=0.5, open_for=1.0)
    rig = Rig(Policy(breaker=settings))
    breaker = rig.engine.breakers.get("http://up:8080", "gpt-x")
    breaker.admit()
    breaker.record_failure()
    rig.clock.now += 2.0
    call = rig.start()
    rig.send(call)  # the single half-open probe
    assert breaker.state == "half_open"
    call.finish("cancelled", rig.clock.now)
    assert breaker.admit() is not None  # the probe slot came back


def test_a_capture_that_fails_is_reported_and_the_call_still_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures: list[BaseException] = []
    rig = Rig(capture=True)
    monkeypatch.setattr(rig.rec, "telemetry_failed", failures.append)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("capture broke")

    monkeypatch.setattr("streamtap._call.answer_messages", broken)
    call = rig.start()
    rig.succeed(call, rig.send(call))
    (finished,) = rig.rec.finished()
    assert (finished.outcome, finished.output_messages) == ("ok", None)
    assert [str(error) for error in failures] == ["capture broke"]


def test_capture_content_records_the_answer() -> None:
    rig = Rig(capture=True)
    call = rig.start()
    rig.succeed(call, rig.send(call))
    (said,) = rig.rec.finished()[0].output_messages or ()
    assert said == {
        "role": "assistant",
        "parts": [{"type": "text", "content": "Hi there"}],
        "finish_reason": "stop",
    }


def test_half_open_probe_success_closes_the_breaker() -> None:
    settings = BreakerSettings(window=10.0, min_requests=1, failure_ratio=0.5, open_for=1.0)
    rig = Rig(Policy(breaker=settings))
    breaker = rig.engine.breakers.get("http://up:8080", "gpt-x")
    breaker.admit()
    breaker.record_failure()
    rig.clock.now += 2.0
    call = rig.start()
    rig.succeed(call, rig.send(call))
    assert of_type(rig.rec.events, BreakerTransition) == [
        BreakerTransition("http://up:8080", "gpt-x", "half_open", "closed", 1, rig.engine.id)
    ]
    assert rig.rec.breakers == [
        BreakerTransition("http://up:8080", "gpt-x", old, new, engine_id=rig.engine.id)
        for old, new in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    ]


def test_call_ids_are_unique_across_engines() -> None:
    """Recorders shared by several clients key a call in flight by its id: two clients' calls in
    flight at once must not share one, or an exemplar or event takes the other's trace id."""
    engines = [Engine(Policy(), (), recorders=[]) for _ in range(3)]
    body = {"model": "m", "stream": True, "messages": []}
    ids = [e.start_call("chat_completions", "/chat/completions", URL, body).call_id for e in engines * 2]
    assert len(set(ids)) == len(ids)


def test_a_call_keeps_all_it_delivered_only_where_something_reads_it() -> None:
    """The proxy's calls held every relayed byte until they ended (6 MB a 20,000-chunk stream,
    hundreds of MB under load) for a StreamInterrupted text its clients never get."""
    import collections

    from streamtap import Engine, Fallback, MemoryCache

    def delivered(engine: Engine, **body: Any) -> Any:
        call = engine.start_call("responses", "/responses", "http://x/v1/responses", {"model": "m", **body})
        return call.delivered

    assert isinstance(delivered(Engine(recorders=[])), list)  # door 1: the text of an error
    relay = Engine(recorders=[], keep_text=False)
    last = delivered(relay)
    assert isinstance(last, collections.deque) and last.maxlen == 1
    last.extend([b"data: 1\n\n", b"data: 2\n\n"])
    assert list(last) == [b"data: 2\n\n"] and last  # truthy: the caller got something
    relayed = relay.start_call(
        "chat_completions", "/chat/completions", "http://x/v1/chat/completions", {"model": "m"}
    )
    relayed.delivered.append(b'data: {"choices":[{"index":0,"delta":{"content":"last"}}]}\n\n')
    assert relayed.delivered_text() == ""  # not the last read's text passed off as the whole
    assert isinstance(delivered(relay, background=True), list)  # resumed after its last event
    cached = Engine(recorders=[], keep_text=False, fallbacks=[Fallback.cached(MemoryCache())])
    assert isinstance(delivered(cached), list)  # its answer is kept
    assert isinstance(delivered(Engine(recorders=[], keep_text=False, capture_content=True)), list)
    with pytest.raises(TypeError, match=r"^keep_text must be True or False, got 'no'$"):
        Engine(recorders=[], keep_text="no")  # type: ignore[arg-type]


def test_the_proxy_keeps_only_what_its_calls_need() -> None:
    from streamtap._proxy import Proxy
    from streamtap._proxy_config import ProxyConfig

    proxy = Proxy(ProxyConfig(upstream="http://127.0.0.1:9/v1"), recorders=[])
    assert proxy.engine.keeps_delivered is False


@pytest.mark.parametrize("status", [401, 400, 404, 429, 503])
def test_a_fallbacks_own_refusal_goes_on_to_the_next_and_keeps_the_callers_error(status: int) -> None:
    # A fallback's 401 is its own key's; its 400 a parameter its model does not take: neither is
    # the caller's fault, so the chain goes on, and the caller never gets an error about them.
    cache = MemoryCache(clock=Clock())
    cache.set(cache_key("chat_completions", BODY, cache_scope(URL, {})), "cached")
    rig = Rig(
        Policy(max_attempts=1, breaker=NO_BREAKER),
        fallbacks=(Fallback.upstream("http://other:9/v1", api_key="sk-other"), Fallback.cached(cache)),
    )
    call = rig.start()
    rig.fail_status(call, rig.send(call), 503)
    rig.fail_status(call, rig.send(call), status)
    step = call.next()
    assert isinstance(step, Serve) and CHAT.text(step.body) == "cached"
    assert FallbackUsed(1, "upstream", "gpt-x", False) in rig.rec.events

    alone = Rig(
        Policy(max_attempts=1, breaker=NO_BREAKER),
        fallbacks=(Fallback.upstream("http://other:9/v1", api_key="sk-other"),),
    )
    call = alone.start()
    alone.fail_status(call, alone.send(call), 503)
    alone.fail_status(call, alone.send(call), status)
    assert call.next() == GiveUp()
    assert call.error_type == "server_error"
    assert call.error_response is not None and call.error_response.status_code == 503

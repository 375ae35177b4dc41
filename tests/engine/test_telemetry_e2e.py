"""The engine and every recorder together: real SDK calls over loopback, exact telemetry.

Each test drives the real openai SDK through `streamtap.instrument` against the fake upstream
with the recorders `setup_telemetry` builds (OTel traces and metrics on in-memory SDK
providers, Prometheus on a private registry) and asserts the exact metric values, span shapes
and the W3C `traceparent` that reached the upstream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import streamtap
from streamtap._events import CallEvent, CallStarted
from streamtap.fake import FakeUpstream

from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, RESPONSES_INPUT, Recording, collect, expected
from .telemetry_support import Telemetry, stream

MODES = ["sync", "async"]
APIS = {"chat": "chat_completions", "responses": "responses"}


@pytest.fixture
def telemetry(fake: FakeUpstream) -> Iterator[Telemetry]:
    fake.clear()
    sinks = Telemetry()
    yield sinks
    sinks.shutdown()


@pytest.fixture
def instrument(fake: FakeUpstream, telemetry: Telemetry) -> Iterator[Any]:
    """instrument(mode, **kwargs): an instrumented client feeding `telemetry`."""
    made: list[Any] = []

    def make(mode: str, *, extra: tuple[Any, ...] = (), **kwargs: Any) -> Any:
        kwargs.setdefault("policy", TEST_POLICY)
        cls = openai.AsyncOpenAI if mode == "async" else openai.OpenAI
        client = streamtap.instrument(
            cls(base_url=fake.base_url, api_key="sk-test-e2e"),
            recorders=[*telemetry.recorders, *extra],
            **kwargs,
        )
        if mode == "sync":
            made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _total(telemetry: Telemetry, sample: str) -> float:
    """The sum of every series of `sample` (0 when none exists)."""
    return sum(s.value for family in telemetry.registry.collect() for s in family.samples if s.name == sample)


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _base_attrs(fake: FakeUpstream) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "server.address": "127.0.0.1",
        "server.port": fake.port,
    }


def _response_attrs(fake: FakeUpstream) -> dict[str, Any]:
    """The GenAI metric attributes of a call the fake answered (it says tier `default`)."""
    return {
        **_base_attrs(fake),
        "gen_ai.response.model": "gpt-4o",
        # the OpenAI refinement of gen_ai.client.operation.duration and gen_ai.client.token.usage
        "openai.response.service_tier": "default",
    }


# -- the scenario ------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("mode", MODES)
def test_two_rate_limits_then_success(
    mode: str, api: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    fake.enqueue("status=429;retry_after=0", "status=429;retry_after=0", "")
    received, error = stream(instrument(mode), api, mode)

    assert error is None
    assert received == expected(fake, api)
    t, label = telemetry, APIS[api]
    assert t.value("streamtap_retries_total", label, reason="rate_limited") == 2
    assert _total(t, "streamtap_retries_total") == 2
    assert t.value("streamtap_attempts_total", label, result="error") == 2
    assert t.value("streamtap_attempts_total", label, result="ok") == 1
    assert t.value("streamtap_attempt_errors_total", label, error_type="rate_limited", phase="headers") == 2
    assert t.value("streamtap_requests_total", label, outcome="ok") == 1
    assert _total(t, "streamtap_requests_total") == 1
    assert _total(t, "streamtap_request_errors_total") == 0
    assert t.value("streamtap_time_to_first_token_seconds_count", label) == 1
    assert t.value("streamtap_attempt_time_to_first_token_seconds_count", label) == 1
    assert t.value("streamtap_request_duration_seconds_count", label, outcome="ok") == 1
    assert t.registry.get_sample_value("streamtap_active_streams", {"api": label}) == 0
    assert _total(t, "streamtap_telemetry_errors_total") == 0

    call = t.call_span()
    assert call.name == "chat gpt-4o"
    assert call.kind is SpanKind.CLIENT
    assert call.status.status_code is StatusCode.OK
    assert call.attributes is not None
    assert call.attributes["streamtap.attempts"] == 3
    assert call.attributes["openai.api.type"] == label
    retries = [dict(e.attributes or {}) for e in call.events]
    assert [e.name for e in call.events] == ["streamtap.retry", "streamtap.retry"]
    assert [(r["streamtap.retry.reason"], r["streamtap.retry.attempt"]) for r in retries] == [
        ("rate_limited", 0),
        ("rate_limited", 1),
    ]
    assert all(0 <= float(r["streamtap.retry.delay"]) <= TEST_POLICY.backoff_cap for r in retries)  # type: ignore[arg-type]
    attempts = t.attempt_spans()
    assert [s.attributes.get("http.request.resend_count") for s in attempts] == [None, 1, 2]  # type: ignore[union-attr]
    assert [s.attributes.get("http.response.status_code") for s in attempts] == [429, 429, 200]  # type: ignore[union-attr]
    assert [s.attributes.get("error.type") for s in attempts] == ["rate_limited", "rate_limited", None]  # type: ignore[union-attr]
    assert [s.kind for s in attempts] == [SpanKind.CLIENT] * 3

    # Each attempt carried its own span's context to the upstream.
    trace_id = _hex(call.context.trace_id, 32)
    sent = [r.traceparent for r in fake.requests]
    assert [tp.split("-")[1:3] if tp else None for tp in sent] == [
        [trace_id, _hex(s.context.span_id, 16)] for s in attempts
    ]

    # The OpenMetrics exposition carries the call's trace id as the TTFT exemplar.
    exemplars = [
        sample.exemplar.labels
        for family in text_string_to_metric_families(t.openmetrics_text())
        if family.name == "streamtap_time_to_first_token_seconds"
        for sample in family.samples
        if sample.exemplar is not None
    ]
    assert exemplars == [{"trace_id": trace_id}]


# -- more scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_drop_after_commit_is_a_stream_interrupted_error(
    mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    fake.enqueue("drop_after=2")
    received, error = stream(instrument(mode), "chat", mode)

    assert isinstance(error, streamtap.StreamInterrupted)
    assert received == expected(fake, "chat")[:2]
    t = telemetry
    assert t.value("streamtap_request_errors_total", error_type="stream_interrupted") == 1
    assert _total(t, "streamtap_request_errors_total") == 1
    assert t.value("streamtap_requests_total", outcome="error") == 1
    assert _total(t, "streamtap_requests_total") == 1
    assert t.value("streamtap_attempts_total", result="error") == 1
    assert t.value("streamtap_attempts_total", result="ok") == 0
    assert t.value("streamtap_attempt_errors_total", error_type="stream_interrupted", phase="streaming") == 1
    assert _total(t, "streamtap_retries_total") == 0
    assert t.value("streamtap_time_to_first_token_seconds_count") == 1
    assert t.value("streamtap_usage_missing_total") == 0
    assert t.registry.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}) == 0

    call = t.call_span()
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["error.type"] == "stream_interrupted"
    assert call.attributes["streamtap.outcome"] == "error"
    (attempt,) = t.attempt_spans()
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes is not None
    assert attempt.attributes["error.type"] == "stream_interrupted"
    assert attempt.attributes["streamtap.error.phase"] == "streaming"

    (duration,) = t.otel_points()["gen_ai.client.operation.duration"]
    assert duration.count == 1
    assert dict(duration.attributes) == {
        **_response_attrs(fake),
        "streamtap.outcome": "error",
        "error.type": "stream_interrupted",
    }


@pytest.mark.parametrize("mode", MODES)
def test_bad_request_is_not_retried(
    mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    fake.enqueue("status=400")
    received, error = stream(instrument(mode), "responses", mode)

    assert type(error) is openai.BadRequestError
    assert received == []
    t = telemetry
    assert t.value("streamtap_request_errors_total", "responses", error_type="bad_request") == 1
    assert _total(t, "streamtap_request_errors_total") == 1
    assert t.value("streamtap_requests_total", "responses", outcome="error") == 1
    assert t.value("streamtap_attempts_total", "responses", result="error") == 1
    assert _total(t, "streamtap_attempts_total") == 1
    assert (
        t.value("streamtap_attempt_errors_total", "responses", error_type="bad_request", phase="headers") == 1
    )
    assert _total(t, "streamtap_retries_total") == 0
    assert _total(t, "streamtap_retries_suppressed_total") == 0
    assert _total(t, "streamtap_time_to_first_token_seconds_count") == 0
    assert t.registry.get_sample_value("streamtap_active_streams", {"api": "responses"}) == 0

    call = t.call_span()
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["error.type"] == "bad_request"
    (attempt,) = t.attempt_spans()
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 400
    assert call.events == ()
    points = t.otel_points()
    assert "gen_ai.client.operation.time_to_first_chunk" not in points
    (duration,) = points["gen_ai.client.operation.duration"]
    assert duration.attributes is not None
    assert duration.attributes["error.type"] == "bad_request"


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("status=429;error_code=insufficient_quota", "insufficient_quota"),  # out of credit, not a rate
        ("error_after=0;error_code=context_length_exceeded", "context_length_exceeded"),  # an event's
        ("error_after=0;error_code=no such code, said freely", None),  # free text never reaches a span
    ],
)
def test_an_attempt_span_carries_the_upstreams_error_code(
    fault: str, code: str | None, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    fake.enqueue(fault)
    _, error = stream(instrument("sync"), "chat", "sync")

    assert error is not None
    (attempt, *_) = telemetry.attempt_spans()
    assert attempt.attributes is not None
    assert attempt.attributes.get("streamtap.error.code") == code


@pytest.mark.parametrize("mode", MODES)
def test_model_fallback_is_counted_and_traced(
    mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    fake.enqueue("status=503", "status=503", "status=503", "")
    client = instrument(mode, fallbacks=[streamtap.Fallback.model("gpt-4o-mini")])
    received, error = stream(client, "chat", mode)

    assert error is None
    assert "".join(received) == fake.expected_text(model="gpt-4o-mini", messages=CHAT_MESSAGES)
    t = telemetry
    assert t.value("streamtap_fallbacks_total", kind="model", result="ok") == 1
    assert _total(t, "streamtap_fallbacks_total") == 1
    assert t.value("streamtap_retries_total", reason="server_error") == 2
    assert t.value("streamtap_retries_suppressed_total", cause="attempts") == 1
    assert t.value("streamtap_attempts_total", result="error") == 3
    assert t.value("streamtap_attempts_total", result="ok") == 1
    assert t.value("streamtap_requests_total", outcome="ok") == 1
    assert _total(t, "streamtap_requests_total") == 1

    call = t.call_span()
    assert call.status.status_code is StatusCode.OK
    assert call.attributes is not None
    assert call.attributes["streamtap.fallback"] == "model"
    assert [e.name for e in call.events] == [
        "streamtap.retry",
        "streamtap.retry",
        "streamtap.retry_suppressed",
        "streamtap.fallback",
    ]
    assert dict(call.events[-1].attributes or {}) == {
        "streamtap.fallback.kind": "model",
        "streamtap.fallback.model": "gpt-4o-mini",
        "streamtap.fallback.ok": True,
    }
    attempts = t.attempt_spans()
    assert len(attempts) == 4
    last = attempts[-1].attributes
    assert last is not None
    assert (last["http.request.resend_count"], last["gen_ai.request.model"], last["streamtap.fallback"]) == (
        3,
        "gpt-4o-mini",
        "model",
    )
    assert all("gen_ai.request.model" not in (s.attributes or {}) for s in attempts[:3])


def test_breaking_out_early_is_cancelled(fake: FakeUpstream, telemetry: Telemetry, instrument: Any) -> None:
    client = instrument("sync")
    t = telemetry
    stream_ = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    assert t.registry.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}) == 1
    for chunk in stream_:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream_.close()

    assert t.value("streamtap_requests_total", outcome="cancelled") == 1
    assert _total(t, "streamtap_requests_total") == 1
    assert t.registry.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}) == 0
    assert t.value("streamtap_request_duration_seconds_count", outcome="cancelled") == 1
    assert _total(t, "streamtap_request_errors_total") == 0
    assert t.value("streamtap_usage_missing_total") == 0
    call = t.call_span()
    assert call.status.status_code is StatusCode.UNSET
    assert call.attributes is not None
    assert call.attributes["streamtap.outcome"] == "cancelled"
    (attempt,) = t.attempt_spans()  # still open when the caller stopped: ended with the call
    assert attempt.attributes is not None
    assert attempt.attributes["streamtap.outcome"] == "cancelled"
    assert attempt.attributes["http.response.status_code"] == 200  # its answer's, received


def test_async_cancel_returns_active_streams_to_zero(
    fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    t = telemetry
    active: list[float | None] = []

    async def main() -> None:
        client = instrument("async")
        try:
            events = await client.responses.create(model="gpt-4o", input=RESPONSES_INPUT, stream=True)
            active.append(t.registry.get_sample_value("streamtap_active_streams", {"api": "responses"}))
            async for event in events:
                if event.type == "response.output_text.delta":
                    break
            await events.close()
        finally:
            await client.close()

    anyio.run(main)
    assert active == [1]
    assert t.value("streamtap_requests_total", "responses", outcome="cancelled") == 1
    assert _total(t, "streamtap_requests_total") == 1
    assert t.registry.get_sample_value("streamtap_active_streams", {"api": "responses"}) == 0
    assert t.call_span().attributes["streamtap.outcome"] == "cancelled"  # type: ignore[index]


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_never_read_is_abandoned(
    mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    client = instrument(mode)
    t = telemetry
    active: list[float | None] = []

    async def main() -> None:
        try:
            stream_ = await client.chat.completions.create(
                model="gpt-4o", messages=CHAT_MESSAGES, stream=True
            )
            active.append(
                t.registry.get_sample_value("streamtap_active_streams", {"api": "chat_completions"})
            )
            del stream_
            collect()
        finally:
            await client.close()

    if mode == "sync":
        stream_ = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
        active.append(t.registry.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}))
        del stream_
        collect()
    else:
        anyio.run(main)

    assert active == [1]
    assert t.value("streamtap_requests_total", outcome="abandoned") == 1
    assert _total(t, "streamtap_requests_total") == 1
    assert t.registry.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}) == 0
    call = t.call_span()
    assert call.status.status_code is StatusCode.UNSET
    assert call.attributes is not None
    assert call.attributes["streamtap.outcome"] == "abandoned"
    assert len(t.attempt_spans()) == 1


def test_open_circuit_sets_the_gauge_and_fails_fast(
    fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    policy = streamtap.Policy(
        max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=2, failure_ratio=0.5, open_for=60)
    )
    client = instrument("sync", policy=policy)
    fake.enqueue("status=502", "status=502")
    errors = [stream(client, "chat", "sync")[1] for _ in range(3)]

    assert [type(e) for e in errors] == [
        openai.InternalServerError,
        openai.InternalServerError,
        streamtap.CircuitOpenError,
    ]
    assert len(fake.requests) == 2
    t = telemetry
    upstream = f"127.0.0.1:{fake.port}"
    assert (
        t.registry.get_sample_value("streamtap_circuit_state", {"upstream": upstream, "model": "gpt-4o"}) == 2
    )
    assert t.value("streamtap_request_errors_total", error_type="circuit_open") == 1
    assert t.value("streamtap_request_errors_total", error_type="server_error") == 2
    assert t.value("streamtap_requests_total", outcome="error") == 3
    assert t.value("streamtap_attempts_total", result="error") == 2
    assert _total(t, "streamtap_attempts_total") == 2

    spans = t.finished_spans()
    calls = [s for s in spans if s.parent is None]
    assert [s.attributes["error.type"] for s in calls] == ["server_error", "server_error", "circuit_open"]  # type: ignore[index]
    opened = [dict(e.attributes or {}) for s in calls for e in s.events if e.name == "streamtap.breaker"]
    assert opened == [
        {
            "streamtap.breaker.upstream": upstream,
            "streamtap.breaker.model": "gpt-4o",
            "streamtap.breaker.old": "closed",
            "streamtap.breaker.new": "open",
        }
    ]
    assert [s.parent.span_id for s in spans if s.parent is not None] == [  # type: ignore[union-attr]
        calls[0].context.span_id,
        calls[1].context.span_id,
    ]  # the refused call sent no attempt


def test_an_open_circuit_no_call_reaches_reads_half_open_once_its_time_is_up(
    fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    # A breaker only a fallback's calls reach gets none once the primary recovers: its gauge
    # must not read open (and page) for ever.
    policy = streamtap.Policy(
        max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=1, failure_ratio=0.5, open_for=0.3)
    )
    client = instrument("sync", policy=policy)
    fake.enqueue("status=502")
    assert isinstance(stream(client, "chat", "sync")[1], openai.InternalServerError)
    labels = {"upstream": f"127.0.0.1:{fake.port}", "model": "gpt-4o"}
    gauge = telemetry.registry.get_sample_value
    assert gauge("streamtap_circuit_state", labels) == 2

    deadline = time.monotonic() + 10
    while gauge("streamtap_circuit_state", labels) == 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gauge("streamtap_circuit_state", labels) == 1
    assert len(fake.requests) == 1  # no call moved it: the timer did

    text, error = stream(client, "chat", "sync")  # the probe succeeds and closes it
    assert error is None and text
    assert gauge("streamtap_circuit_state", labels) == 0


def _chat_usage(client: Any) -> Any:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=CHAT_MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    return usage.prompt_tokens, usage.completion_tokens


async def _responses_usage(client: Any) -> tuple[int, int]:
    try:
        events = await client.responses.create(model="gpt-4o", input=RESPONSES_INPUT, stream=True)
        async for event in events:
            if event.type == "response.completed":
                usage = event.response.usage
        return usage.input_tokens, usage.output_tokens
    finally:
        await client.close()


@pytest.mark.parametrize(("api", "mode"), [("chat", "sync"), ("responses", "async")])
def test_tokens_come_from_the_usage_the_caller_saw(
    api: str, mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    client = instrument(mode)
    if api == "chat":
        tokens_in, tokens_out = _chat_usage(client)
    else:
        tokens_in, tokens_out = anyio.run(_responses_usage, client)

    t, label = telemetry, APIS[api]
    assert tokens_in > 0
    assert tokens_out > 0
    assert t.value("streamtap_tokens_total", label, type="input") == tokens_in
    assert t.value("streamtap_tokens_total", label, type="output") == tokens_out
    assert t.value("streamtap_usage_missing_total", label) == 0
    call = t.call_span().attributes
    assert call is not None
    assert (call["gen_ai.usage.input_tokens"], call["gen_ai.usage.output_tokens"]) == (tokens_in, tokens_out)
    # What the fake reports beside the counts: the OpenAI span's conditionally required
    # openai.response.service_tier, its recommended system fingerprint (chat chunks carry one,
    # responses do not) and the recommended cache and reasoning details of the usage.
    assert call["openai.response.service_tier"] == "default"
    assert call.get("openai.response.system_fingerprint") == ("fp_fake0001" if api == "chat" else None)
    assert call["gen_ai.usage.cache_read.input_tokens"] == 0
    assert call["gen_ai.usage.reasoning.output_tokens"] == 0
    usage = t.otel_points()["gen_ai.client.token.usage"]
    attrs = _response_attrs(fake)
    by_type = {p.attributes["gen_ai.token.type"]: p for p in usage}  # type: ignore[index]
    assert len(usage) == 2
    assert {k: (dict(p.attributes or {}), p.count, p.sum) for k, p in by_type.items()} == {
        "input": ({**attrs, "gen_ai.token.type": "input"}, 1, tokens_in),
        "output": ({**attrs, "gen_ai.token.type": "output"}, 1, tokens_out),
    }


@pytest.mark.parametrize("mode", MODES)
def test_chat_stream_without_usage_is_counted_and_histograms_recorded_once(
    mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    received, error = stream(instrument(mode), "chat", mode)

    assert error is None
    assert received == expected(fake, "chat")
    t = telemetry
    assert t.value("streamtap_usage_missing_total") == 1
    assert t.value("streamtap_tokens_total", type="input") == 0
    assert t.value("streamtap_tokens_total", type="output") == 0
    points = t.otel_points()
    attrs = _response_attrs(fake)
    (duration,) = points["gen_ai.client.operation.duration"]
    assert (dict(duration.attributes or {}), duration.count) == ({**attrs, "streamtap.outcome": "ok"}, 1)
    (first,) = points["gen_ai.client.operation.time_to_first_chunk"]
    assert (dict(first.attributes or {}), first.count) == (attrs, 1)
    assert first.sum == t.call_span().attributes["gen_ai.response.time_to_first_chunk"]  # type: ignore[index]
    assert first.sum == t.value("streamtap_time_to_first_token_seconds_sum")
    (per_chunk,) = points["gen_ai.client.operation.time_per_output_chunk"]
    assert (dict(per_chunk.attributes or {}), per_chunk.count) == (attrs, 1)
    assert "gen_ai.client.token.usage" not in points  # no usage, no made-up zeros


class _Exploding:
    """A recorder that fails on every event it is given."""

    def start_call(self, event: CallStarted) -> _Exploding:
        return self

    def on_event(self, event: CallEvent) -> None:
        raise RuntimeError(f"recorder bug on {type(event).__name__}")

    def breaker_changed(self, event: Any) -> None:
        raise RuntimeError("recorder bug on a breaker change")

    def telemetry_failed(self, error: BaseException) -> None:
        raise RuntimeError("recorder bug while counting a failure")


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_recorder_never_reaches_the_caller(
    mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    seen = _Counting()
    fake.enqueue("status=500", "")
    received, error = stream(instrument(mode, extra=(_Exploding(), seen)), "chat", mode)

    assert error is None
    assert received == expected(fake, "chat")
    t = telemetry
    # Every event of the call failed once in the exploding recorder, and each failure was counted:
    # AttemptStarted, AttemptFinished, RetryScheduled, AttemptStarted, FirstToken,
    # AttemptFinished, CallFinished.
    events = [e for e in seen.events if not isinstance(e, CallStarted)]
    assert len(events) == 7
    assert t.registry.get_sample_value("streamtap_telemetry_errors_total") == 7
    assert t.value("streamtap_requests_total", outcome="ok") == 1
    assert t.value("streamtap_retries_total", reason="server_error") == 1
    assert t.call_span().status.status_code is StatusCode.OK


class _Counting(Recording):
    """Keeps every call event (not CallStarted) and tolerates the other recorders' failures."""

    def telemetry_failed(self, error: BaseException) -> None:
        pass


@pytest.mark.parametrize("mode", MODES)
def test_call_span_nests_under_the_callers_span(
    mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    client = instrument(mode)
    with tracer.start_as_current_span("handle request") as app:
        received, error = stream(client, "chat", mode)

    assert error is None
    assert received == expected(fake, "chat")
    spans = {s.name: s for s in telemetry.finished_spans()}
    call, attempt = spans["chat gpt-4o"], spans["POST"]
    assert call.parent is not None
    assert call.parent.span_id == app.get_span_context().span_id
    assert call.context.trace_id == app.get_span_context().trace_id
    assert attempt.parent is not None
    assert attempt.parent.span_id == call.context.span_id
    (sent,) = fake.requests
    assert sent.traceparent is not None
    assert sent.traceparent.split("-")[1:3] == [
        _hex(call.context.trace_id, 32),
        _hex(attempt.context.span_id, 16),
    ]


CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _content(telemetry: Telemetry) -> dict[str, Any]:
    attrs = dict(telemetry.call_span().attributes or {})
    keys = ("gen_ai.input.messages", "gen_ai.output.messages")
    return {k: json.loads(str(v)) for k, v in attrs.items() if k in keys}


def _said(received: list[str]) -> list[dict[str, Any]]:
    text = {"type": "text", "content": "".join(received)}
    return [{"role": "assistant", "parts": [text], "finish_reason": "stop"}]


HELLO = [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]


@pytest.mark.parametrize("mode", MODES)
def test_instrument_capture_content_reaches_the_spans(
    mode: str, fake: FakeUpstream, telemetry: Telemetry, instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`instrument(capture_content=True)` alone turns capture on: the recorders follow the engine."""
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    received, error = stream(instrument(mode, capture_content=True), "chat", mode)
    assert error is None
    assert _content(telemetry) == {"gen_ai.input.messages": HELLO, "gen_ai.output.messages": _said(received)}


def test_instrument_capture_content_false_beats_the_variable(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    sinks = Telemetry()  # its trace recorder is built while the variable says true
    client = streamtap.instrument(
        openai.OpenAI(base_url=fake.base_url, api_key="sk-test-e2e"),
        policy=TEST_POLICY,
        recorders=sinks.recorders,
        capture_content=False,
    )
    with client:
        assert stream(client, "chat", "sync")[1] is None
    sinks.shutdown()
    assert _content(sinks) == {}


def test_a_recorder_built_to_capture_gets_the_answer_too(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OtelTraceRecorder(capture_content=True) records the output, not only the input."""
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    sinks = Telemetry()
    recorder = streamtap.OtelTraceRecorder(sinks.tracer_provider, capture_content=True)
    client = streamtap.instrument(
        openai.OpenAI(base_url=fake.base_url, api_key="sk-test-e2e"), policy=TEST_POLICY, recorders=[recorder]
    )
    with client:
        received, error = stream(client, "chat", "sync")
    sinks.shutdown()
    assert error is None
    assert _content(sinks) == {"gen_ai.input.messages": HELLO, "gen_ai.output.messages": _said(received)}


@pytest.mark.parametrize("value", ["false", 1, "yes"])
def test_capture_content_must_be_a_bool(value: object) -> None:
    with pytest.raises(TypeError, match=r"capture_content must be True, False or None .*got"):
        streamtap.instrument(openai.OpenAI(api_key="sk-x"), recorders=[], capture_content=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"capture_content must be True, False or None"):
        streamtap.OtelTraceRecorder(capture_content=value)  # type: ignore[arg-type]

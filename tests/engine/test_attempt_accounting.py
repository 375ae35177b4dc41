"""Every attempt is accounted for as what it was: the telemetry an on-call engineer reads."""

from __future__ import annotations

from typing import Any

import anyio
import openai
import pytest
from prometheus_client import CollectorRegistry

import streamtap
from streamtap import AttemptFinished, CallStarted
from streamtap._fallback import upstream_of
from streamtap.fake import FakeUpstream

from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, Recording, read_sync

MODES = ["sync", "async"]


def _run(client: Any, is_async: bool, **kwargs: Any) -> Any:
    if not is_async:
        return client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, **kwargs)

    async def main() -> Any:
        try:
            return await client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, **kwargs)
        finally:
            await client.close()

    return anyio.run(main)


@pytest.mark.parametrize("mode", MODES)
def test_a_body_broken_after_its_headers_is_not_a_connect_failure(
    fake: FakeUpstream, recording: Recording, make_client: Any, mode: str
) -> None:
    """A non-streaming answer whose body breaks after a 200: the headers came, so the
    attempt failed in `first_token`, interrupted, not in `connect`."""
    fake.enqueue(*["drop_after=2"] * TEST_POLICY.max_attempts)
    client = make_client(mode == "async")
    with pytest.raises(openai.APIConnectionError):
        _run(client, mode == "async")
    attempts = [(e.status_code, e.error_type, e.phase) for e in recording.of(AttemptFinished)]
    assert attempts == [(200, "stream_interrupted", "first_token")] * TEST_POLICY.max_attempts
    assert recording.finished.error_type == "stream_interrupted"


@pytest.mark.parametrize("mode", MODES)
def test_an_event_the_sdk_cannot_decode_fails_its_attempt(
    fake: FakeUpstream, recording: Recording, make_client: Any, mode: str
) -> None:
    fake.enqueue("garbled_after=2")
    client = make_client(mode == "async")

    async def read_async() -> None:
        try:
            stream = await client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
            async for _ in stream:
                pass
        finally:
            await client.close()

    def read() -> None:
        if mode == "async":
            anyio.run(read_async)
        else:
            read_sync(client, "chat", [])

    with pytest.raises(UnicodeDecodeError):
        read()
    attempts = [(e.status_code, e.error_type, e.phase) for e in recording.of(AttemptFinished)]
    assert attempts == [(200, "bad_response", "streaming")]
    assert (recording.finished.outcome, recording.finished.error_type) == ("error", "bad_response")


def test_user_info_in_the_base_url_reaches_no_telemetry_and_no_error(fake: FakeUpstream) -> None:
    assert upstream_of("http://gw:s3cret@127.0.0.1:8080/v1/chat") == "http://127.0.0.1:8080"
    assert upstream_of("https://gw:s3cret@[::1]/v1") == "https://[::1]"
    recording = Recording()
    base_url = fake.base_url.replace("http://", "http://gw:s3cret@")
    policy = streamtap.Policy(
        max_attempts=1, breaker=streamtap.BreakerSettings(min_requests=1, failure_ratio=0.5, window=60)
    )
    client = streamtap.instrument(
        openai.OpenAI(base_url=base_url, api_key="sk-x"), policy=policy, recorders=[recording]
    )
    fake.enqueue("status=503")
    with client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
        with pytest.raises(streamtap.CircuitOpenError) as opened:
            client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
    started = recording.of(CallStarted)[0]
    assert (started.server_address, started.server_port) == ("127.0.0.1", fake.port)
    assert "s3cret" not in str(opened.value)


def test_a_cached_answer_is_not_usage_missing(fake: FakeUpstream) -> None:
    """The cache never holds usage: counting it would tell a user who asked for usage to ask."""
    registry = CollectorRegistry()
    client = streamtap.instrument(
        openai.OpenAI(base_url=fake.base_url, api_key="sk-x"),
        policy=TEST_POLICY,
        fallbacks=[streamtap.Fallback.cached()],
        recorders=[streamtap.PrometheusRecorder(registry)],
    )
    usage = {"stream_options": {"include_usage": True}}
    with client:
        read_sync(client, "chat", [], **usage)  # fills the cache, with usage
        fake.enqueue(*["status=503"] * TEST_POLICY.max_attempts)
        read_sync(client, "chat", [], **usage)  # served from it
    labels = {"api": "chat_completions", "model": "gpt-4o"}
    assert (
        registry.get_sample_value("streamtap_fallbacks_total", {**labels, "kind": "cache", "result": "ok"})
        == 1
    )
    assert registry.get_sample_value("streamtap_usage_missing_total", labels) == 0

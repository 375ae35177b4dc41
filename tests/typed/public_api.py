"""A typed application using streamtap's public API; `test_public_api_types.py` runs mypy --strict on it.

Never run, only type-checked: each `assert_type` is what a user's type checker must infer.
"""

from __future__ import annotations

from typing import assert_type

import openai
from openai.types.chat import ChatCompletionChunk
from prometheus_client import CollectorRegistry

import streamtap
from streamtap import ErrorType, Phase


def sync_client() -> None:
    client = streamtap.instrument(openai.OpenAI(), policy=streamtap.Policy(max_attempts=2))
    assert_type(client, openai.OpenAI)
    stream = client.chat.completions.create(model="m", messages=[], stream=True)
    assert_type(stream, openai.Stream[ChatCompletionChunk])
    assert_type(client.with_options(timeout=3.0), openai.OpenAI)


def async_client() -> None:
    assert_type(streamtap.instrument(openai.AsyncOpenAI()), openai.AsyncOpenAI)


def subclasses_keep_their_type() -> None:
    azure = openai.AzureOpenAI(api_version="2024-10-21", azure_endpoint="https://example.invalid")
    assert_type(streamtap.instrument(azure), openai.AzureOpenAI)
    assert_type(streamtap.instrument(openai.AsyncAzureOpenAI(api_version="v")), openai.AsyncAzureOpenAI)


def errors(
    error: streamtap.StreamInterrupted,
    broken: streamtap.StreamBroken,
    open_circuit: streamtap.CircuitOpenError,
) -> None:
    api_error: openai.APIError = error
    connection_error: openai.APIConnectionError = broken
    assert_type(broken.error_type, ErrorType)
    print(api_error)
    assert_type(error.error_type, ErrorType)
    assert_type(error.phase, Phase)
    assert_type(error.attempts, int)
    assert_type(error.text, str)
    connection_error = open_circuit
    assert_type(open_circuit.error_type, ErrorType)
    assert_type(open_circuit.attempts, int)
    print(connection_error)


def lazily_imported_names() -> None:
    recorders = streamtap.setup_telemetry(prometheus_registry=CollectorRegistry())
    assert_type(recorders, list[streamtap.Recorder])
    assert_type(streamtap.default_recorders(), list[streamtap.Recorder])
    assert_type(streamtap.PrometheusRecorder(CollectorRegistry()), streamtap.PrometheusRecorder)
    streamtap.StreamtapInstrumentor().instrument(policy=streamtap.Policy())


def misspelt_names_are_errors() -> None:
    streamtap.Polcy()  # type: ignore[attr-defined]  # unused, hence an error, if typed as Any


def preflight_checks(client: openai.OpenAI) -> None:
    report = streamtap.preflight(client, timeout=2.0)
    assert_type(report, streamtap.PreflightReport)
    assert_type(report.ok, bool)


async def async_preflight_checks(client: openai.AsyncOpenAI) -> None:
    assert_type(await streamtap.apreflight(client), streamtap.PreflightReport)


class _BytesCache:
    """An answer cache whose get returns bytes, as a Redis client without decode_responses."""

    def __init__(self) -> None:
        self.kept: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.kept.get(key)

    def set(self, key: str, text: str) -> None:
        self.kept[key] = text.encode()


class _CountingRecorder:
    """A user's own recorder, typed with the public names only."""

    def __init__(self) -> None:
        self.outcomes: list[streamtap.Outcome] = []

    def start_call(self, event: streamtap.CallStarted) -> streamtap.CallObserver:
        return self

    def on_event(self, event: streamtap.CallEvent) -> None:
        if isinstance(event, streamtap.CallFinished):
            self.outcomes.append(event.outcome)

    def breaker_changed(self, event: streamtap.BreakerTransition) -> None:
        state: streamtap.BreakerState = event.new
        assert state

    def telemetry_failed(self, error: BaseException) -> None:
        pass


def bring_your_own_cache_and_recorder() -> None:
    recorder: streamtap.Recorder = _CountingRecorder()
    streamtap.instrument(
        openai.OpenAI(), recorders=[recorder], fallbacks=[streamtap.Fallback.cached(_BytesCache())]
    )

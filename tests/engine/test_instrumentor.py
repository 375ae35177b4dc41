"""StreamtapInstrumentor: every OpenAI client made while instrumented goes through streamtap.

In process (instrument, make a plain client, stream through a scripted 503, uninstrument) and
in a subprocess under `opentelemetry-instrument`, which finds the instrumentor through its
`opentelemetry_instrumentor` entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from opentelemetry.trace import StatusCode

import streamtap
from streamtap._instrumentor import StreamtapInstrumentor
from streamtap.fake import FakeUpstream

from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, RESPONSES_INPUT, Recording, expected, piece
from .telemetry_support import Telemetry

FAULT = {"x-fake-fault": "status=503;times=1"}


@pytest.fixture
def instrumentor(fake: FakeUpstream) -> Iterator[StreamtapInstrumentor]:
    fake.clear()
    instrumentor = StreamtapInstrumentor()
    yield instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def _transport(client: Any) -> Any:
    return client._client._transport


def test_dependencies() -> None:
    assert StreamtapInstrumentor().instrumentation_dependencies() == ("openai >= 3.0",)
    assert StreamtapInstrumentor() is StreamtapInstrumentor()  # BaseInstrumentor is a singleton
    assert streamtap.StreamtapInstrumentor is StreamtapInstrumentor  # exported lazily


def test_new_sync_clients_are_routed_until_uninstrumented(
    fake: FakeUpstream, instrumentor: StreamtapInstrumentor
) -> None:
    plain_init = openai.OpenAI.__init__
    recording = Recording()
    instrumentor.instrument(recorders=[recording], policy=TEST_POLICY)

    client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", timeout=7.0)
    assert client.max_retries == 2  # the SDK's, for what passes through; never for the engine's calls
    assert isinstance(_transport(client), streamtap.StreamtapTransport)
    assert client._client.timeout.read == 7.0
    stream = client.chat.completions.create(
        model="gpt-4o", messages=CHAT_MESSAGES, stream=True, extra_headers=FAULT
    )
    with stream:
        received = [piece("chat", chunk) for chunk in stream]
    assert "".join(received) == "".join(expected(fake, "chat"))
    assert [(r.status, r.retry_count) for r in fake.requests] == [(503, "0"), (200, "1")]
    assert stream.response.headers["x-streamtap-attempts"] == "2"
    assert (recording.finished.outcome, recording.finished.attempts) == ("ok", 2)

    # copy() / with_options() pass the routed HTTP client on: routed once, not twice.
    copied = client.with_options(timeout=3.0)
    assert isinstance(_transport(copied), streamtap.StreamtapTransport)
    assert not isinstance(_transport(copied)._transport, streamtap.StreamtapTransport)
    # streamtap.instrument() on a routed client replaces the engine instead of stacking one.
    explicit = streamtap.instrument(client, recorders=[])
    assert not isinstance(_transport(explicit)._transport, streamtap.StreamtapTransport)
    client.close()

    instrumentor.uninstrument()
    assert openai.OpenAI.__init__ is plain_init
    # A client made while instrumented stays routed, and so do its copies, one given an HTTP
    # client of its own too.
    later = client.with_options(max_retries=2).copy(http_client=openai.DefaultHttpxClient())
    assert isinstance(_transport(later), streamtap.StreamtapTransport)
    later.close()
    plain = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
    assert plain.max_retries == 2
    assert not isinstance(_transport(plain), streamtap.StreamtapTransport)
    fake.clear()
    assert plain.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES).choices
    assert len(recording.of(streamtap.CallStarted)) == 1  # the plain client's call was not seen
    plain.close()


def test_new_async_clients_are_routed_with_the_given_providers(
    fake: FakeUpstream, instrumentor: StreamtapInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT", "true")
    telemetry = Telemetry()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        prometheus_registry=telemetry.registry,
        logger_provider=telemetry.logger_provider,
        policy=TEST_POLICY,
    )

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test")
        assert isinstance(_transport(client), streamtap.AsyncStreamtapTransport)
        try:
            stream = await client.responses.create(
                model="gpt-4o", input=RESPONSES_INPUT, stream=True, extra_headers=FAULT
            )
            return [piece("responses", event) async for event in stream]
        finally:
            await client.close()

    received = anyio.run(main)
    assert "".join(received) == "".join(expected(fake, "responses"))
    assert [r.status for r in fake.requests] == [503, 200]
    labels = {"api": "responses", "model": "gpt-4o"}
    assert (
        telemetry.registry.get_sample_value("streamtap_retries_total", {**labels, "reason": "server_error"})
        == 1
    )
    assert telemetry.registry.get_sample_value("streamtap_requests_total", {**labels, "outcome": "ok"}) == 1
    call = telemetry.call_span()
    assert (call.name, call.status.status_code) == ("chat gpt-4o", StatusCode.OK)
    (event,) = telemetry.events()  # to the logger provider handed over, as the variable asks
    assert event.log_record.span_id == call.context.span_id
    assert len(telemetry.attempt_spans()) == 2
    telemetry.shutdown()


def test_instrument_rejects_a_bad_policy(instrumentor: StreamtapInstrumentor) -> None:
    with pytest.raises(TypeError, match=r"instrument\(policy=\.\.\.\) takes a streamtap\.Policy"):
        instrumentor.instrument(policy={"max_attempts": 3}, recorders=[])
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert not getattr(openai.OpenAI.__init__, "_streamtap_wrapper", False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"fallback": [streamtap.Fallback.non_streaming()]},
            r"StreamtapInstrumentor\.instrument\(\) got an unknown argument 'fallback'; accepted: policy, fallbacks,",
            id="misspelt",
        ),
        pytest.param(
            {"fallbacks": streamtap.Fallback.non_streaming()},
            r"fallbacks must be a list of streamtap\.Fallback values",
            id="one-fallback",
        ),
        pytest.param({"recorders": Recording()}, r"recorders must be a list of recorders", id="one-recorder"),
    ],
)
def test_instrument_names_a_bad_argument(
    instrumentor: StreamtapInstrumentor, kwargs: dict[str, Any], message: str
) -> None:
    kwargs.setdefault("recorders", [])
    with pytest.raises(TypeError, match=message):
        instrumentor.instrument(**kwargs)
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_instrument_accepts_a_distributions_other_providers(instrumentor: StreamtapInstrumentor) -> None:
    instrumentor.instrument(recorders=[], logger_provider=object())
    assert instrumentor.is_instrumented_by_opentelemetry


_CHILD = textwrap.dedent(
    """
    import json, sys
    import openai
    import streamtap

    client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-test")
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        extra_headers={"x-fake-fault": "status=503;times=1"},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    print(json.dumps({
        "text": text,
        "attempts": stream.response.headers.get("x-streamtap-attempts"),
        "max_retries": client.max_retries,
        "routed": isinstance(client._client._transport, streamtap.StreamtapTransport),
    }))
    """
)


def test_opentelemetry_instrument_finds_the_entry_point(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.clear()
    command = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert command is not None, "opentelemetry-instrument comes with opentelemetry-instrumentation"
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        # Only streamtap: other instrumentors installed alongside must not change the count.
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai,openai-v2,httpx,httpx2",
    }
    done = subprocess.run(
        [command, sys.executable, "-c", _CHILD, fake.base_url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "text": fake.expected_text(model="gpt-4o", messages=CHAT_MESSAGES),
        "attempts": "2",
        "max_retries": 2,  # the SDK's own, which never retries the engine's calls
        "routed": True,
    }
    assert [(r.status, r.retry_count) for r in fake.requests] == [(503, "0"), (200, "1")]


def test_another_openai_instrumentation_is_reported_once(
    fake: FakeUpstream, instrumentor: StreamtapInstrumentor, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    # Both would record each call: two GenAI spans, and every gen_ai.client.* metric twice.
    from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from streamtap import _instrument

    monkeypatch.setattr(_instrument, "_warned_twice", False)
    plain = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
    caplog.set_level("WARNING", logger="streamtap")
    streamtap.instrument(plain, recorders=[]).close()
    assert caplog.records == []
    official = OpenAIInstrumentor()
    official.instrument(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    try:
        # Loaded after streamtap's, as opentelemetry-instrument may: seen at the first client.
        instrumentor.instrument(recorders=[])
        openai.OpenAI(base_url=fake.base_url, api_key="sk-test").close()
        streamtap.instrument(plain, recorders=[]).close()
    finally:
        official.uninstrument()
    assert [r.getMessage().split(" instruments ")[0] for r in caplog.records] == [
        "streamtap: opentelemetry.instrumentation.genai.openai"
    ]
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai" in caplog.records[0].getMessage()
    plain.close()

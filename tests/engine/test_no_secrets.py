"""No credential leaves the process through telemetry, logs or the upstream's records.

Representative fault-matrix scenarios run with every recorder on, content capture on, an API
key that is a unique secret and every logger at DEBUG; then everything exported is scanned:
span names, attributes, events, links, status and resource; every metric data point and
exemplar; the Prometheus and OpenMetrics expositions; every inference event (content goes to
spans and events alike); every log record; and the header values the fake stored. The secret must appear nowhere, and no span attribute may carry a URL query.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import openai
import pytest

import streamtap
from streamtap.fake import FakeUpstream

from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, RESPONSES_INPUT, Recording, create, piece
from .telemetry_support import Telemetry

SECRET = f"sk-proj-leakcheck-{uuid.uuid4().hex}"
QUERY_SECRET = f"sig-{uuid.uuid4().hex}"  # a credential-like query parameter on every request
LOGGERS = ("", "openai", "httpx2", "httpcore2", "streamtap")


@dataclass(frozen=True)
class Scenario:
    id: str
    api: str
    mode: str
    specs: tuple[str, ...] = ()  # queued faults, one per attempt
    fallback: str | None = None  # "model", "upstream" (with its own key), "non_streaming"
    action: str = "stream"  # "stream", "cancel" or "once" (not streamed)
    kwargs: tuple[tuple[str, Any], ...] = ()


SCENARIOS = [
    Scenario("clean-chat-usage-sync", "chat", "sync", kwargs=(("stream_options", {"include_usage": True}),)),
    Scenario("before-429-retried-chat-async", "chat", "async", ("status=429;retry_after=0", "")),
    Scenario(
        "before-503-upstream-fallback-responses-sync", "responses", "sync", ("status=503",) * 3, "upstream"
    ),
    Scenario("before-drop-model-fallback-chat-sync", "chat", "sync", ("drop_after=0",) * 3, "model"),
    Scenario(
        "before-reset-non-streaming-fallback-responses-async",
        "responses",
        "async",
        ("reset",) * 3,
        "non_streaming",
    ),
    Scenario("before-401-auth-chat-sync", "chat", "sync", ("status=401",)),
    Scenario("before-400-responses-async", "responses", "async", ("status=400",)),
    Scenario("after-drop-chat-async", "chat", "async", ("drop_after=2",)),
    Scenario("after-error-event-responses-sync", "responses", "sync", ("error_after=2",)),
    Scenario(
        "after-drop-background-resume-responses-sync",
        "responses",
        "sync",
        ("drop_after=2",),
        kwargs=(("background", True),),
    ),
    Scenario("cancelled-chat-sync", "chat", "sync", action="cancel"),
    Scenario("not-streamed-chat-async", "chat", "async", ("status=502", ""), action="once"),
]


def _fallbacks(kind: str | None, fake: FakeUpstream) -> list[streamtap.Fallback]:
    if kind == "model":
        return [streamtap.Fallback.model("gpt-4o-mini")]
    if kind == "upstream":
        return [streamtap.Fallback.upstream(fake.base_url, api_key=SECRET)]
    if kind == "non_streaming":
        return [streamtap.Fallback.non_streaming()]
    return []


def _run_sync(client: Any, scenario: Scenario) -> str:
    kwargs = dict(scenario.kwargs)
    if scenario.action == "once":
        return repr(create(client, scenario.api, **kwargs))
    stream = create(client, scenario.api, stream=True, **kwargs)
    pieces: list[str] = []
    with stream:
        for item in stream:
            pieces.append(piece(scenario.api, item))
            if scenario.action == "cancel" and pieces[-1]:
                break
    return "".join(pieces)


async def _run_async(client: Any, scenario: Scenario) -> str:
    kwargs = dict(scenario.kwargs)
    try:
        if scenario.action == "once":
            return repr(await create(client, scenario.api, **kwargs))
        stream = await create(client, scenario.api, stream=True, **kwargs)
        pieces: list[str] = []
        async with stream:
            async for item in stream:
                pieces.append(piece(scenario.api, item))
                if scenario.action == "cancel" and pieces[-1]:
                    break
        return "".join(pieces)
    finally:
        await client.close()


def _leaks(texts: Iterable[str], secret: str = SECRET) -> list[str]:
    return [text for text in texts if secret in text]


def _span_texts(telemetry: Telemetry) -> list[str]:
    # to_json covers name, context, kind, parent, attributes, events, links, status and resource.
    return [span.to_json() for span in telemetry.finished_spans()]


def _span_urls(telemetry: Telemetry) -> list[str]:
    values: list[str] = []
    for span in telemetry.finished_spans():
        attrs = [span.attributes or {}, *(e.attributes or {} for e in span.events)]
        values += [str(v) for a in attrs for v in a.values() if "://" in str(v) or "?" in str(v)]
    return values


def _log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [caplog.text]
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), record.exc_text or "", str(record.msg)]
    return texts


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_no_secret_anywhere(
    scenario: Scenario,
    fake: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_AND_EVENT")
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    fake.clear()
    fake.enqueue(*scenario.specs)
    telemetry = Telemetry()  # after the variable is set: the trace recorder reads it here
    cls = openai.AsyncOpenAI if scenario.mode == "async" else openai.OpenAI
    client = streamtap.instrument(
        cls(base_url=fake.base_url, api_key=SECRET, default_query={"sig": QUERY_SECRET}),
        policy=TEST_POLICY,
        recorders=telemetry.recorders,
        fallbacks=_fallbacks(scenario.fallback, fake),
    )
    outcome: list[str] = []
    try:
        if scenario.mode == "sync":
            with client:
                outcome.append(_run_sync(client, scenario))
        else:
            outcome.append(anyio.run(_run_async, client, scenario))
    except openai.APIError as error:  # the scenario's own failure, if it has one
        outcome.append(f"{type(error).__name__}: {error}")

    spans = _span_texts(telemetry)
    events = [record.to_json() for record in telemetry.events()]
    metrics = telemetry.metrics_data().to_json()
    prometheus = telemetry.prometheus_text()
    openmetrics = telemetry.openmetrics_text()
    logs = _log_texts(caplog)
    stored = [value for record in fake.requests for _name, value in record.headers]
    telemetry.shutdown()

    # The run exported what it should, so the scan below is not vacuous.
    assert fake.requests
    assert spans
    assert '"gen_ai.input.messages"' in spans[-1]  # content capture is on
    assert len(events) == 1
    assert '"gen_ai.input.messages"' in events[0]
    assert 'streamtap_requests_total{api="' in prometheus
    assert any(r.name.startswith("openai") and r.levelno == logging.DEBUG for r in caplog.records)
    assert all(r.header("authorization") == "[redacted]" for r in fake.requests)
    assert fake.requests[0].query == f"sig={QUERY_SECRET}"
    assert _leaks([f"Bearer {SECRET}"]) == [f"Bearer {SECRET}"]  # the scanner finds it where it is

    assert _leaks(spans) == []
    assert _leaks(events) == []
    assert _leaks([metrics]) == []
    assert _leaks([prometheus, openmetrics]) == []
    assert _leaks(logs) == []
    assert _leaks(stored) == []
    assert _leaks(outcome) == []
    # URLs in spans never carry their query string (it may hold credentials, as here).
    assert _leaks(spans + events, QUERY_SECRET) == []
    assert _leaks([metrics, prometheus, openmetrics], QUERY_SECRET) == []
    urls = _span_urls(telemetry)
    assert urls
    assert [u for u in urls if "?" in u or urlsplit(u).query] == []


def test_inputs_are_what_the_scenarios_claim() -> None:
    assert CHAT_MESSAGES[0]["content"] == "hello"
    assert RESPONSES_INPUT == "hello"
    assert SECRET not in repr(streamtap.Fallback.upstream("https://example.invalid", api_key=SECRET))


def test_recorders_get_no_password_of_the_base_url(fake: FakeUpstream) -> None:
    """Any recorder, an app's own that logs events among them, gets the attempt's URL without
    the user:password@ of the base URL (the OTel recorder dropped it, others got it)."""
    recording = Recording()
    base_url = f"http://gateway-user:{SECRET}@127.0.0.1:{fake.port}/v1"
    client = streamtap.instrument(
        openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0),
        recorders=[recording],
        policy=TEST_POLICY,
    )
    with client:
        for _ in create(client, "chat", stream=True):
            pass
    started = [e for e in recording.events if type(e).__name__ == "AttemptStarted"]
    assert [e.url for e in started] == [f"http://127.0.0.1:{fake.port}/v1/chat/completions"]
    assert SECRET not in repr(recording.events)

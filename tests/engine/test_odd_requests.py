"""Requests no client should send, sent anyway: the proxy answers each, and telemetry records
each in a form every exporter takes.

Any client can send the proxy any JSON: a model that is an object, `stream` as a string, a
lone surrogate escaped in a message (`"\\ud800"`, which Python decodes but cannot encode as
UTF-8), integers past int64 or past a float's range. Seeded random bodies go through the proxy
with a fault drawn per request, so retries and every kind of fallback run on them, with all
telemetry and content capture on. Every answer must be the upstream's or the proxy's own JSON
error, never a failure of the proxy; no recorder may fail; and what was recorded must encode
as OTLP (the SDK's encoders, and streamtap's own for spans) and as both Prometheus expositions
without an error.

Upstreams send odd values too: a loopback upstream answers with lone surrogates in its model,
id and text, and token counts no counter can take; door 1 records them just as well.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import streamtap
from streamtap._otlp_spans import encode_spans as streamtap_encode_spans
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeUpstream, expected_text

from . import loopback
from .support import Problems
from .telemetry_support import Telemetry

ROUNDS = 600
ODD = [None, 0, 1, -1, 1.5, True, False, "", "x", [], {}, [1], {"a": 1}, "gpt-4o", "user", "stop",
       10**30, 10**400, -(2**63) - 1, float("nan"), float("inf"), "\u0000", "\ud800x", "\udc00"]  # fmt: skip
KEYS = ["model", "messages", "input", "stream", "stream_options", "include_usage", "n", "tools", "role",
        "content", "type", "text", "instructions", "max_tokens", "max_output_tokens", "tool_choice",
        "function", "name", "parameters", "tool_calls", "id", "arguments", "output", "call_id", "seed",
        "previous_response_id", "reasoning", "summary", "metadata", "temperature", "top_p", "stop",
        "response_format", "format", "conversation", "background", "service_tier"]  # fmt: skip
FAULTS = ["", "", "", "status=429", "status=500", "reset", "drop_after=2", "truncate_after=2", "error_after=1",
          "malformed_after=1", "status=429;model=gpt-4o-mini", "status=500;model=gpt-4o-mini",
          "error_after=1;error_kind=failed", "error_after=1;model=gpt-4o-mini"]  # fmt: skip


def _odd(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.35:
        return copy.deepcopy(rng.choice(ODD))
    if roll < 0.55:
        return [_odd(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {key: _odd(rng, depth + 1) for key in rng.sample(KEYS, rng.randrange(1, 6))}


def _body(rng: random.Random) -> bytes:
    """A request body: mostly a call with odd fields, now and then not a call at all."""
    roll = rng.random()
    if roll < 0.04:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
    if roll < 0.08:
        return json.dumps(_odd(rng)).encode()
    body: dict[str, Any] = {
        "model": "gpt-4o-mini" if rng.random() < 0.8 else _odd(rng),
        "messages": [{"role": "user", "content": "hi"}] if rng.random() < 0.6 else _odd(rng),
        "input": "hi" if rng.random() < 0.6 else _odd(rng),
        "stream": rng.random() < 0.7 or _odd(rng),
    }
    for key in rng.sample(KEYS, rng.randrange(5)):
        body[key] = _odd(rng)
    return json.dumps(body).encode()  # a lone surrogate is escaped, as any JSON encoder writes it


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    # Content on spans (JSON strings) and on inference events (structures) alike.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_AND_EVENT")
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


def _exported_cleanly(telemetry: Telemetry) -> None:
    """Everything recorded encodes: OTLP spans (both encoders), OTLP logs (every attribute of
    every inference event, none dropped by the encoder), OTLP metrics, Prometheus."""
    spans = telemetry.finished_spans()
    assert spans
    assert encode_spans(spans).SerializeToString()
    assert streamtap_encode_spans(spans)
    events = telemetry.events()
    assert len(events) == len([s for s in spans if s.parent is None])  # one per call
    encoded = encode_logs(events)
    records = [r for rl in encoded.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert sorted(len(r.attributes) for r in records) == sorted(
        len(e.log_record.attributes or {}) for e in events
    )
    assert encoded.SerializeToString()
    assert encode_metrics(telemetry.metrics_data()).SerializeToString()
    assert telemetry.prometheus_text() and telemetry.openmetrics_text()
    assert telemetry.registry.get_sample_value("streamtap_telemetry_errors_total") == 0


def test_the_proxy_answers_odd_requests_and_records_them_all(
    fake: FakeUpstream, telemetry: Telemetry
) -> None:
    off = {"enabled": False}
    policy = streamtap.Policy.from_mapping(
        {"max_attempts": 2, "backoff_base": 0.001, "backoff_cap": 0.01, "budget": off, "breaker": off}
    )
    fallbacks = [
        streamtap.Fallback.model("gpt-4o"),
        streamtap.Fallback.non_streaming(),
        streamtap.Fallback.cached(),
    ]
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", policy=policy, fallbacks=fallbacks)
    rng = random.Random(20261123)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    with (
        ProxyServer(config, recorders=telemetry.recorders) as proxy,
        Problems() as problems,
        httpx2.Client(base_url=proxy.base_url, timeout=15) as client,
    ):
        for _ in range(ROUNDS):
            path, body, fault = (
                rng.choice(["chat/completions", "responses"]),
                _body(rng),
                rng.choice(FAULTS),
            )
            headers = {
                "authorization": "Bearer sk-test",
                "content-type": "application/json",
                "x-fake-fault": fault,
            }
            with client.stream("POST", path, content=body, headers=headers) as response:
                answer = response.read()
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                continue  # a stream: the upstream's events, or the proxy's error event at its end
            try:
                json.loads(answer)
            except ValueError:
                failures.append(f"{response.status_code} {answer[:200]!r} for {body[:300]!r} ({fault})")
    assert failures == []
    assert problems.seen == []
    # The draw reaches every kind of answer: served, refused, and failed after the fallbacks.
    assert {200, 400, 429, 500, 502} <= set(statuses)
    _exported_cleanly(telemetry)


def test_a_fallback_sends_a_lone_surrogate_on_as_it_came(fake: FakeUpstream, telemetry: Telemetry) -> None:
    fake.clear()
    config = ProxyConfig(
        upstream=fake.base_url,
        listen="127.0.0.1:0",
        policy=streamtap.Policy(max_attempts=1),
        fallbacks=[streamtap.Fallback.model("gpt-4o")],
    )
    messages = [{"role": "user", "content": "half an emoji: \ud83d"}]
    body = json.dumps({"model": "gpt-4o-mini", "messages": messages, "stream": True}).encode()
    assert b"\\ud83d" in body  # the SDK cannot send this (it encodes UTF-8 strictly); others can
    headers = {"authorization": "Bearer sk-test", "x-fake-fault": "status=500;model=gpt-4o-mini"}
    with ProxyServer(config, recorders=telemetry.recorders) as proxy:
        response = httpx2.post(f"{proxy.base_url}/chat/completions", content=body, headers=headers)
    assert response.status_code == 200
    assert [r.model for r in fake.requests] == ["gpt-4o-mini", "gpt-4o"]
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: {")]
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events if '"choices":[{' in e
    )
    # The fake's text is a hash of the prompt: the fallback sent the message exactly as it came.
    assert text == expected_text("gpt-4o", messages, chunks=6)
    _exported_cleanly(telemetry)


class _Odd(loopback.Handler):
    """A chat stream whose model, id, text and finish reason hold lone surrogates, and whose
    usage holds counts past int64 and below zero."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        base = (
            '"id":"chatcmpl-\\udc00","object":"chat.completion.chunk","created":1,"model":"m\\ud800",'
            '"service_tier":"t\\ud800","system_fingerprint":"fp\\ud800"'
        )
        frames = [
            f'{{{base},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"a\\ud83d"}}}}]}}',
            f'{{{base},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop\\ud800"}}]}}',
            f'{{{base},"choices":[],"usage":{{"prompt_tokens":{2**64},"completion_tokens":-3,'
            f'"total_tokens":1,"prompt_tokens_details":{{"cached_tokens":{10**400}}}}}}}',
        ]
        data = "".join(f"data: {frame}\n\n" for frame in frames).encode() + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_odd_values_from_an_upstream_are_recorded_as_valid_text_and_no_count(telemetry: Telemetry) -> None:
    with loopback.serve(_Odd) as url:
        client = streamtap.instrument(
            openai.OpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=0),
            recorders=telemetry.recorders,
            capture_content=True,
        )
        with client:
            chunks = list(
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}], stream=True
                )
            )
    assert chunks[0].choices[0].delta.content == "a\ud83d"  # the caller gets what was sent
    span = telemetry.call_span()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.response.model"] == "m\ufffd"
    assert attributes["gen_ai.response.id"] == "chatcmpl-\ufffd"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop\ufffd",)
    assert attributes["openai.response.service_tier"] == "t\ufffd"
    assert attributes["openai.response.system_fingerprint"] == "fp\ufffd"
    assert '"content":"a\ufffd"' in str(attributes["gen_ai.output.messages"])
    assert not any(key.startswith("gen_ai.usage.") for key in attributes)
    assert "gen_ai.client.token.usage" not in telemetry.otel_points()
    _exported_cleanly(telemetry)

"""Telemetry through the proxy: when a fallback serves the call the client's trace goes on, and
the answering upstream's headers reach the client as the SDK exposes them; trace headers the
propagator refuses are ignored without a line in the proxy's log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

import openai
import pytest
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import streamtap
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeConfig, FakeUpstream

from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES
from .telemetry_support import Telemetry

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest.fixture
def backup() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(chunks=4)) as upstream:
        yield upstream


def test_an_upstream_fallback_continues_the_clients_trace_and_returns_its_headers(
    fake: FakeUpstream, backup: FakeUpstream
) -> None:
    fake.clear()
    fake.enqueue("status=500", "status=500")  # both attempts on the primary fail
    telemetry = Telemetry()
    config = ProxyConfig(
        upstream=fake.base_url,
        listen="127.0.0.1:0",
        policy=replace(TEST_POLICY, max_attempts=2),
        fallbacks=(streamtap.Fallback.upstream(backup.base_url),),
    )
    try:
        with (
            ProxyServer(config, recorders=telemetry.recorders) as proxy,
            openai.OpenAI(base_url=proxy.base_url, api_key="sk-x", max_retries=0) as client,
        ):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o",
                messages=CHAT_MESSAGES,
                stream=True,
                extra_headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
            )
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text == "".join(backup.expected_pieces(model="gpt-4o", messages=CHAT_MESSAGES))
        assert raw.headers["x-streamtap-fallback"] == "upstream"
        assert raw.headers["x-streamtap-attempts"] == "3"
        assert raw.headers["x-request-id"].startswith("req_")  # the backup's own
        assert raw.headers["openai-processing-ms"] == "1"
        spans = telemetry.finished_spans()
        (call,) = [s for s in spans if s.name == "chat gpt-4o"]
        assert call.parent is not None  # the client's span, remote
        assert (f"{call.context.trace_id:032x}", f"{call.parent.span_id:016x}") == (TRACE_ID, CLIENT_SPAN)
        attempts = [s for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id]
        attempts.sort(key=lambda s: int(s.attributes.get("http.request.resend_count", 0)))  # type: ignore[union-attr, arg-type]
        sent = [r.traceparent for r in fake.requests] + [r.traceparent for r in backup.requests]
        assert sent == [f"00-{TRACE_ID}-{a.context.span_id:016x}-01" for a in attempts]
    finally:
        telemetry.shutdown()


TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"


@pytest.mark.parametrize(
    ("headers", "continued"),
    [
        ({"traceparent": TRACEPARENT + "-" + "0" * 600}, False),  # over 512 characters: ignored
        ({"traceparent": TRACEPARENT, "tracestate": "vendor=ok,not a member!"}, True),  # tracestate dropped
    ],
    ids=["long-traceparent", "bad-tracestate"],
)
def test_trace_headers_the_propagator_refuses_leave_no_line_in_the_proxys_log(
    fake: FakeUpstream, caplog: pytest.LogCaptureFixture, headers: dict[str, str], continued: bool
) -> None:
    """The propagator would log a warning quoting each such header: one line per request that
    any client could send."""
    caplog.set_level(logging.DEBUG)
    telemetry = Telemetry()
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0")
    try:
        with (
            ProxyServer(config, recorders=telemetry.recorders) as proxy,
            openai.OpenAI(base_url=proxy.base_url, api_key="sk-x", max_retries=0) as client,
        ):
            for _ in range(3):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=CHAT_MESSAGES, extra_headers=headers
                )
        calls = [s for s in telemetry.finished_spans() if s.name == "chat gpt-4o-mini"]
        assert len(calls) == 3
        for call in calls:
            if continued:
                assert call.parent is not None and f"{call.parent.span_id:016x}" == CLIENT_SPAN
                assert not call.parent.trace_state  # refused whole, as the propagator does
            else:
                assert call.parent is None
        assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []
    finally:
        telemetry.shutdown()
    TraceContextTextMapPropagator().extract(headers)  # outside the proxy's extraction: as before
    assert [r.name for r in caplog.records if r.name.startswith("opentelemetry")]

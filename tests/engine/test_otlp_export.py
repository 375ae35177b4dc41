"""OTLP export as users deploy it: the standard OTEL_* variables, a loopback OTLP receiver.

Each case runs a real process (a batch script, `streamtap proxy`) that exports over
OTLP/HTTP to `otlp_receiver`, and looks at what arrived: resource, spans, GenAI metrics.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import streamtap
from streamtap import _otlp_spans
from streamtap._otel_traces import OtelTraceRecorder
from streamtap._otlp_spans import encode_spans
from streamtap._telemetry import build_tracer_provider
from streamtap.fake import FakeUpstream

from .otlp_receiver import Received, otlp_grpc_receiver, otlp_receiver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
GENAI_METRICS = {
    "gen_ai.client.operation.duration",
    "gen_ai.client.token.usage",
    "gen_ai.client.operation.time_to_first_chunk",
    "gen_ai.client.operation.time_per_output_chunk",
}

# A batch job: one call, then the interpreter exits without shutting anything down.
_BATCH = textwrap.dedent(
    """
    import sys, openai, streamtap
    client = streamtap.instrument(
        openai.OpenAI(base_url=sys.argv[1], api_key="sk-test"),
        recorders=streamtap.setup_telemetry(service_name="batch-job"),
    )
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    )
    print("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    """
)


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    with otlp_receiver() as served:
        yield served


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",  # seconds, as the Python exporters read it
            **extra,
        }
    )
    return env


def _run_script(cwd: Path, env: dict[str, str], script: str, *args: str) -> None:
    """Run `script` as a process of its own, to its exit (where the SDK flushes); it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("sampler_arg", "spans"), [pytest.param("1", 2, id="sampled"), pytest.param("0", 0, id="sampled-out")]
)
def test_a_batch_job_exports_at_exit_with_the_resource_the_variables_give(
    fake: FakeUpstream, receiver: tuple[str, Received], tmp_path: Path, sampler_arg: str, spans: int
) -> None:
    endpoint, received = receiver
    env = _env(
        endpoint,
        OTEL_SERVICE_NAME="nightly-summaries",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=prod,team=search",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG=sampler_arg,
    )
    _run_script(tmp_path, env, _BATCH, fake.base_url)
    # Exported by the SDK's exit handlers, before the process ended: nothing is left to wait for.
    assert len(received.spans) == spans, received.spans
    assert {m.name for m in received.metrics} == GENAI_METRICS
    resources = [s.resource for s in received.spans] + [m.resource for m in received.metrics]
    for resource in resources:
        assert resource["service.name"] == "nightly-summaries"  # the variable beats service_name
        assert resource["deployment.environment.name"] == "prod"
        assert resource["team"] == "search"
    if spans:
        assert sorted(s.name for s in received.spans) == ["POST", "chat gpt-4o"]
        assert {s.scope for s in received.spans} == {"streamtap"}


@pytest.mark.parametrize("timeout", ["0", "-1"])
def test_a_timeout_of_0_is_no_limit_over_http_as_over_grpc(
    fake: FakeUpstream, receiver: tuple[str, Received], tmp_path: Path, timeout: str
) -> None:
    # The SDK's OTLP/HTTP exporters took 0 (the specification's "no limit") and a negative
    # value literally: every export failed at once, and nothing said so but a log line a batch.
    endpoint, received = receiver
    _run_script(tmp_path, _env(endpoint, OTEL_EXPORTER_OTLP_TIMEOUT=timeout), _BATCH, fake.base_url)
    assert sorted(s.name for s in received.spans) == ["POST", "chat gpt-4o"]
    assert {m.name for m in received.metrics} == GENAI_METRICS


def test_inference_events_carry_the_content_to_the_logs_endpoint_and_not_to_spans(
    fake: FakeUpstream, receiver: tuple[str, Received], tmp_path: Path
) -> None:
    # EVENT_ONLY: prompts and answers leave through the logs pipeline alone, each event in its
    # call span's context, so a backend still finds the trace from the log and back.
    endpoint, received = receiver
    env = _env(
        endpoint,
        OTEL_SERVICE_NAME="nightly-summaries",
        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="EVENT_ONLY",
    )
    _run_script(tmp_path, env, _BATCH, fake.base_url)
    (event,) = received.logs
    (call_span,) = [s for s in received.spans if s.name == "chat gpt-4o"]
    assert event.event_name == "gen_ai.client.inference.operation.details"
    assert (event.trace_id, event.span_id) == (call_span.trace_id, call_span.span_id)
    assert event.resource["service.name"] == "nightly-summaries"
    assert event.scope == "streamtap"
    assert event.attributes["gen_ai.input.messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    ]
    (said,) = event.attributes["gen_ai.output.messages"]
    assert said["role"] == "assistant" and said["finish_reason"] == "stop"
    assert said["parts"][0]["content"]
    assert (
        event.attributes["gen_ai.usage.output_tokens"] == call_span.attributes["gen_ai.usage.output_tokens"]
    )
    for span in received.spans:
        assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(span.attributes)


# Many calls, then the same exit: no export is timed (the delay is an hour), so the batches are
# the size trigger's and the exit flush's.
_CALLS = textwrap.dedent(
    """
    import sys, openai, streamtap
    client = streamtap.instrument(
        openai.OpenAI(base_url=sys.argv[1], api_key="sk-test"),
        recorders=streamtap.setup_telemetry(service_name="batch-job"),
    )
    for _ in range(int(sys.argv[2])):
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    """
)


@pytest.mark.parametrize(
    ("variables", "largest"),
    [
        pytest.param({}, 64, id="streamtap-default"),
        pytest.param({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}, 100, id="variable-wins"),
    ],
)
def test_spans_are_exported_in_batches_of_64_unless_the_variable_says(
    fake: FakeUpstream,
    receiver: tuple[str, Received],
    tmp_path: Path,
    variables: dict[str, str],
    largest: int,
) -> None:
    endpoint, received = receiver
    env = _env(endpoint, OTEL_BSP_SCHEDULE_DELAY="3600000", OTEL_METRICS_EXPORTER="none", **variables)
    _run_script(tmp_path, env, _CALLS, fake.base_url, "50")  # two spans a call
    # The exporter's thread is woken when the batch is full and takes a batch at a time; the
    # SDK's own default (512) would send all 100 at exit, in one.
    assert sum(received.span_batches) == 100
    assert max(received.span_batches) == largest, received.span_batches


def _export_calls(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, calls: int, **variables: str
) -> tuple[list[int], list[ReadableSpan]]:
    """Make `calls` streamed chat calls with the tracer provider `build_tracer_provider` builds
    from the OTEL_* variables, and flush it; returns the batch sizes streamtap's encoder was
    given and the spans the provider finished."""
    for name, value in _env(endpoint, **variables).items():
        if name.startswith("OTEL_"):
            monkeypatch.setenv(name, value)
    encoded: list[int] = []

    def counting(spans: Sequence[ReadableSpan]) -> bytes:
        encoded.append(len(spans))
        return encode_spans(spans)

    monkeypatch.setattr(_otlp_spans, "encode_spans", counting)
    provider = build_tracer_provider("svc")
    kept = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    with FakeUpstream() as fake:
        client = streamtap.instrument(
            openai.OpenAI(base_url=fake.base_url, api_key="sk-test"), recorders=[OtelTraceRecorder(provider)]
        )
        with client:
            for _ in range(calls):
                assert _chat(client)
    assert provider.force_flush(30_000)
    provider.shutdown()
    return encoded, list(kept.get_finished_spans())


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_span_exports_are_the_sdks_bytes_encoded_by_streamtap(
    monkeypatch: pytest.MonkeyPatch, protocol: str, compression: str
) -> None:
    """The OTLP span exporter setup_telemetry builds is the SDK's, sending what the SDK's encoder
    would send, encoded by streamtap's (benchmarks/otlp_encode.py: 3.2-3.7x less CPU)."""
    with otlp_grpc_receiver() if protocol == "grpc" else otlp_receiver() as (endpoint, received):
        encoded, spans = _export_calls(
            endpoint,
            monkeypatch,
            3,
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_COMPRESSION=compression,
        )
    assert encoded == [6]  # a call's span and its attempt's, three times
    assert received.trace_bodies == [sdk_encode_spans(spans).SerializePartialToString()]


def test_a_grpc_export_refused_unavailable_is_sent_again_on_a_new_channel_encoded_by_streamtap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The SDK's gRPC exporter makes a new channel and stub after UNAVAILABLE, then retries
    # after about a second: the new stub sends streamtap's bytes too.
    with otlp_grpc_receiver(refuse=1) as (endpoint, received):
        encoded, spans = _export_calls(
            endpoint, monkeypatch, 1, OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_TIMEOUT="20"
        )
    assert received.paths[0] == "refused" and len(received.paths) == 2, received.paths
    assert encoded == [2, 2]  # the batch encoded for each try
    assert received.trace_bodies == [sdk_encode_spans(spans).SerializePartialToString()]


def _proxy(upstream: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    cli = [sys.executable, "-c", "from streamtap._cli import main; main()", "proxy"]
    process = subprocess.Popen(
        [*cli, "--upstream", upstream, "--listen", "127.0.0.1:0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    banner = process.stderr.readline()
    assert "streamtap proxy on" in banner, banner + process.stderr.read()
    return process, banner.split()[3]


def _chat(client: openai.OpenAI) -> str:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _call_through(base_url: str) -> str:
    client = openai.OpenAI(
        base_url=base_url,
        api_key="sk-test",
        max_retries=0,
        default_headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
    )
    with client:
        return _chat(client)


def _stop(process: subprocess.Popen[str]) -> tuple[int, float, str]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    finally:
        process.kill()
    assert process.stderr is not None
    err = process.stderr.read()
    process.stderr.close()
    return code, time.monotonic() - started, err


def test_the_proxy_continues_the_clients_trace_and_flushes_on_sigterm(
    fake: FakeUpstream, receiver: tuple[str, Received]
) -> None:
    endpoint, received = receiver
    # The default intervals (5 s spans, 60 s metrics) are far off: only the stop can export
    # them. The inference event comes without content, as OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT
    # alone asks.
    process, base_url = _proxy(fake.base_url, _env(endpoint, OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT="true"))
    try:
        assert _call_through(base_url)
    finally:
        code, _, err = _stop(process)
    assert code == 128 + signal.SIGTERM, err  # a drained, flushed stop, as SIGINT's 130
    assert "Traceback" not in err
    call = [s for s in received.spans if s.name == "chat gpt-4o"]
    assert len(call) == 1, received.spans
    assert (call[0].trace_id, call[0].parent_span_id) == (TRACE_ID, CLIENT_SPAN)
    assert call[0].resource["service.name"] == "streamtap-proxy"
    assert [s.parent_span_id for s in received.spans if s.name == "POST"] == [call[0].span_id]
    assert {"gen_ai.client.operation.duration"} <= {m.name for m in received.metrics}
    (event,) = received.logs
    assert (event.event_name, event.trace_id, event.span_id) == (
        "gen_ai.client.inference.operation.details",
        TRACE_ID,
        call[0].span_id,
    )
    assert event.resource["service.name"] == "streamtap-proxy"
    assert "gen_ai.input.messages" not in event.attributes


def test_the_proxy_stops_within_the_export_timeout_when_no_collector_listens(fake: FakeUpstream) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"
    process, base_url = _proxy(fake.base_url, _env(nobody, OTEL_EXPORTER_OTLP_TIMEOUT="1"))
    try:
        assert _call_through(base_url)
    finally:
        code, took, err = _stop(process)
    assert code == 128 + signal.SIGTERM, err
    assert took < 10, err  # the exporters give up after their 1 s timeout; generous for CI


def test_the_proxy_stops_within_the_export_timeout_when_the_collector_hangs(fake: FakeUpstream) -> None:
    """A collector that takes connections and never answers, and a backlog of spans, metrics
    and events: the exit flushes them all at once, within one export timeout, rather than batch
    after batch and provider after provider (8 s here before; a minute at the default 10 s)."""
    with socket.socket() as hanging:
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(256)  # the kernel takes the connections; no one ever reads them
        endpoint = f"http://127.0.0.1:{hanging.getsockname()[1]}"
        env = _env(endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="2", OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT="true")
        process, base_url = _proxy(fake.base_url, env)
        try:
            for _ in range(300):  # 600 spans: 10 batches of 64
                assert _call_through(base_url)
        finally:
            code, took, err = _stop(process)
    assert code == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert took < 5, err  # one 2 s wait for all three providers (before: one after another)
    assert "telemetry not exported within 2 s at exit was dropped" in err

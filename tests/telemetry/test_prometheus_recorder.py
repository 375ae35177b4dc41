"""PrometheusRecorder fed synthetic event sequences; exact sample values."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamtap._events import BreakerTransition, CallObserver, CallStarted, Fanout
from streamtap._labels import ModelLabeler, normalise_model, upstream_name
from streamtap._prometheus import PrometheusRecorder

from ._builder import Call, two_429s_then_success

CHAT = {"api": "chat_completions", "model": "gpt-4o-mini"}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_two_429s_then_success(registry: CollectorRegistry) -> None:
    two_429s_then_success([PrometheusRecorder(registry)])

    assert value(registry, "streamtap_retries_total", **CHAT, reason="rate_limited") == 2
    assert value(registry, "streamtap_attempts_total", **CHAT, result="error") == 2
    assert value(registry, "streamtap_attempts_total", **CHAT, result="ok") == 1
    assert (
        value(registry, "streamtap_attempt_errors_total", **CHAT, error_type="rate_limited", phase="headers")
        == 2
    )
    assert value(registry, "streamtap_requests_total", **CHAT, outcome="ok") == 1
    assert value(registry, "streamtap_requests_total", **CHAT, outcome="error") == 0
    assert value(registry, "streamtap_time_to_first_token_seconds_count", **CHAT) == 1
    assert value(registry, "streamtap_time_to_first_token_seconds_sum", **CHAT) == 1.6
    assert value(registry, "streamtap_attempt_time_to_first_token_seconds_count", **CHAT) == 1
    assert value(registry, "streamtap_attempt_time_to_first_token_seconds_sum", **CHAT) == 0.4
    assert value(registry, "streamtap_request_duration_seconds_count", **CHAT, outcome="ok") == 1
    assert value(registry, "streamtap_request_duration_seconds_bucket", **CHAT, outcome="ok", le="2.5") == 0
    assert value(registry, "streamtap_request_duration_seconds_bucket", **CHAT, outcome="ok", le="5.0") == 1
    assert value(registry, "streamtap_max_chunk_gap_seconds_count", **CHAT) == 1
    assert value(registry, "streamtap_tokens_total", **CHAT, type="input") == 12
    assert value(registry, "streamtap_tokens_total", **CHAT, type="output") == 30
    assert value(registry, "streamtap_usage_missing_total", **CHAT) == 0
    assert value(registry, "streamtap_active_streams", api="chat_completions") == 0
    assert value(registry, "streamtap_telemetry_errors_total") == 0


def test_buckets_span_the_documented_ranges(registry: CollectorRegistry) -> None:
    two_429s_then_success([PrometheusRecorder(registry)])
    assert value(registry, "streamtap_time_to_first_token_seconds_bucket", **CHAT, le="0.05") == 0
    assert value(registry, "streamtap_time_to_first_token_seconds_bucket", **CHAT, le="60.0") == 1
    assert value(registry, "streamtap_request_duration_seconds_bucket", **CHAT, outcome="ok", le="600.0") == 1
    assert value(registry, "streamtap_max_chunk_gap_seconds_bucket", **CHAT, le="0.01") == 0
    assert value(registry, "streamtap_max_chunk_gap_seconds_bucket", **CHAT, le="60.0") == 1


def test_failed_call_counts_its_error_type(registry: CollectorRegistry) -> None:
    c = Call(Fanout([PrometheusRecorder(registry)])).start()
    c.attempt_fails("server_error", status=503, retry=False)
    c.suppressed("server_error", "budget")
    c.finish("error", error_type="server_error", duration=0.3)

    assert value(registry, "streamtap_requests_total", **CHAT, outcome="error") == 1
    assert value(registry, "streamtap_request_errors_total", **CHAT, error_type="server_error") == 1
    assert value(registry, "streamtap_retries_suppressed_total", **CHAT, cause="budget") == 1
    assert value(registry, "streamtap_request_duration_seconds_count", **CHAT, outcome="error") == 1
    assert value(registry, "streamtap_usage_missing_total", **CHAT) == 0  # only ok streams count


def test_zero_series_exist_before_anything_happens(registry: CollectorRegistry) -> None:
    PrometheusRecorder(registry)
    for api in ("chat_completions", "responses", "other"):
        assert value(registry, "streamtap_active_streams", api=api) == 0


def test_first_call_of_a_model_precreates_its_common_series(registry: CollectorRegistry) -> None:
    Call(Fanout([PrometheusRecorder(registry)]), stream=False).start()  # started, nothing else

    for outcome in ("ok", "error", "cancelled", "abandoned"):
        assert value(registry, "streamtap_requests_total", **CHAT, outcome=outcome) == 0
    for result in ("ok", "error"):
        assert value(registry, "streamtap_attempts_total", **CHAT, result=result) == 0
    for error_type in ("rate_limited", "server_error", "timeout", "connection"):
        assert value(registry, "streamtap_request_errors_total", **CHAT, error_type=error_type) == 0
    assert value(registry, "streamtap_request_errors_total", **CHAT, error_type="stream_interrupted") == 0
    assert value(registry, "streamtap_request_errors_total", **CHAT, error_type="stream_truncated") == 0
    assert value(registry, "streamtap_tokens_total", **CHAT, type="input") == 0
    assert value(registry, "streamtap_usage_missing_total", **CHAT) == 0
    for cause in ("budget", "breaker", "deadline", "attempts"):
        assert value(registry, "streamtap_retries_suppressed_total", **CHAT, cause=cause) == 0
    # the rarer error types appear on first occurrence (documented in docs/metrics.md)
    assert value(registry, "streamtap_request_errors_total", **CHAT, error_type="auth") is None


def test_two_recorders_share_one_registry(registry: CollectorRegistry) -> None:
    first, second = PrometheusRecorder(registry), PrometheusRecorder(registry)
    two_429s_then_success([first])
    two_429s_then_success([second])
    assert first.metrics is second.metrics
    assert value(registry, "streamtap_requests_total", **CHAT, outcome="ok") == 2


def test_usage_missing_counts_only_ok_streams_without_usage(registry: CollectorRegistry) -> None:
    fanout = Fanout([PrometheusRecorder(registry)])
    Call(fanout).start().attempt_ok().finish("ok")
    Call(fanout, stream=False).start().attempt_ok().finish("ok")
    Call(fanout).start().attempt_ok().finish("ok", input_tokens=3, output_tokens=4)
    assert value(registry, "streamtap_usage_missing_total", **CHAT) == 1


def test_active_streams_up_at_start_down_once_at_finish(registry: CollectorRegistry) -> None:
    fanout = Fanout([PrometheusRecorder(registry)])
    stream = Call(fanout).start()
    Call(fanout, stream=False).start()
    assert value(registry, "streamtap_active_streams", api="chat_completions") == 1
    stream.finish("cancelled")
    stream.finish("cancelled")  # a duplicate finish changes nothing
    assert value(registry, "streamtap_active_streams", api="chat_completions") == 0
    assert value(registry, "streamtap_requests_total", **CHAT, outcome="cancelled") == 1


def test_late_events_after_finish_are_ignored(registry: CollectorRegistry) -> None:
    c = Call(Fanout([PrometheusRecorder(registry)])).start().attempt_ok().finish("abandoned")
    c.attempt_fails("timeout", retry=True)
    assert value(registry, "streamtap_retries_total", **CHAT, reason="timeout") is None
    assert value(registry, "streamtap_requests_total", **CHAT, outcome="abandoned") == 1


def test_fallback_and_breaker(registry: CollectorRegistry) -> None:
    c = Call(Fanout([PrometheusRecorder(registry)])).start()
    c.attempt_fails("server_error", status=500, retry=False)
    c.breaker("closed", "open", upstream="https://user:sk-secret@api.openai.com/v1?key=sk-secret")
    c.fallback("model", "gpt-4o", ok=True)
    c.finish("ok", fallback="model")

    assert value(registry, "streamtap_fallbacks_total", **CHAT, kind="model", result="ok") == 1
    assert value(registry, "streamtap_circuit_state", upstream="api.openai.com", model="gpt-4o-mini") == 2
    exposition = "\n".join(str(s) for m in registry.collect() for s in m.samples)
    assert "sk-secret" not in exposition


def test_breaker_changed_outside_a_call(registry: CollectorRegistry) -> None:
    recorder = PrometheusRecorder(registry)
    recorder.breaker_changed(BreakerTransition("primary", "gpt-4o", "open", "half_open"))
    assert value(registry, "streamtap_circuit_state", upstream="primary", model="gpt-4o") == 1


def test_a_calls_late_report_of_a_transition_leaves_the_gauge_to_the_breaker(
    registry: CollectorRegistry,
) -> None:
    """A call reports the transition it caused for its span, outside the breaker's lock, and may
    do so after the breaker moved on: the gauge, set from that report too, stayed open for good
    over a closed breaker."""
    recorder = PrometheusRecorder(registry)
    call = Call(Fanout([recorder])).start()
    for old, new in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        recorder.breaker_changed(BreakerTransition("openai", "gpt-4o-mini", old, new))  # type: ignore[arg-type]
    call.emit(BreakerTransition("openai", "gpt-4o-mini", "closed", "open", call.call_id))  # late
    assert value(registry, "streamtap_circuit_state", upstream="openai", model="gpt-4o-mini") == 0


def test_breakers_sharing_a_gauge_show_the_worst_state(registry: CollectorRegistry) -> None:
    # The label is normalised (lower case) and capped; the breakers are per exact name.
    recorder = PrometheusRecorder(registry)
    recorder.breaker_changed(BreakerTransition("primary", "GPT-4o", "closed", "open"))
    recorder.breaker_changed(BreakerTransition("primary", "gpt-4o", "closed", "open"))
    recorder.breaker_changed(BreakerTransition("primary", "gpt-4o", "open", "half_open"))
    recorder.breaker_changed(BreakerTransition("primary", "gpt-4o", "half_open", "closed"))
    assert value(registry, "streamtap_circuit_state", upstream="primary", model="gpt-4o") == 2
    recorder.breaker_changed(BreakerTransition("primary", "GPT-4o", "open", "half_open"))
    assert value(registry, "streamtap_circuit_state", upstream="primary", model="gpt-4o") == 1
    recorder.breaker_changed(BreakerTransition("primary", "GPT-4o", "half_open", "closed"))
    assert value(registry, "streamtap_circuit_state", upstream="primary", model="gpt-4o") == 0


def test_recorders_sharing_a_registry_share_the_breakers_behind_its_gauge(
    registry: CollectorRegistry,
) -> None:
    """Two recorders on one registry (`setup_telemetry()` beside `default_recorders()`) set one
    gauge: the second's closed breaker must not hide the first's open one."""
    first, second = PrometheusRecorder(registry), PrometheusRecorder(registry)
    first.breaker_changed(BreakerTransition("primary", "gpt-4o", "closed", "open", engine_id=1))
    second.breaker_changed(BreakerTransition("primary", "gpt-4o", "closed", "open", engine_id=2))
    second.breaker_changed(BreakerTransition("primary", "gpt-4o", "open", "half_open", engine_id=2))
    second.breaker_changed(BreakerTransition("primary", "gpt-4o", "half_open", "closed", engine_id=2))
    assert value(registry, "streamtap_circuit_state", upstream="primary", model="gpt-4o") == 2
    first.breaker_changed(BreakerTransition("primary", "gpt-4o", "open", "half_open", engine_id=1))
    assert value(registry, "streamtap_circuit_state", upstream="primary", model="gpt-4o") == 1


class Exploding:
    def start_call(self, event: CallStarted) -> CallObserver:
        return self

    def on_event(self, event: object) -> None:
        raise RuntimeError("recorder bug")

    def breaker_changed(self, event: BreakerTransition) -> None:
        raise RuntimeError("recorder bug")

    def telemetry_failed(self, error: BaseException) -> None:
        raise RuntimeError("and again")


def test_a_raising_recorder_is_counted_and_the_others_still_record(registry: CollectorRegistry) -> None:
    c = Call(Fanout([Exploding(), PrometheusRecorder(registry)])).start()  # start_call itself is fine
    c.attempt_ok().finish("ok")  # three events: AttemptStarted, AttemptFinished, CallFinished
    assert value(registry, "streamtap_telemetry_errors_total") == 3
    assert value(registry, "streamtap_requests_total", **CHAT, outcome="ok") == 1
    assert value(registry, "streamtap_attempts_total", **CHAT, result="ok") == 1


def test_model_is_normalised_and_capped(registry: CollectorRegistry) -> None:
    fanout = Fanout([PrometheusRecorder(registry, max_models=2)])
    for model in ("  GPT-4o ", "gpt-4o", "o3 mini", "claude-3"):
        Call(fanout, model=model, stream=False).start().finish("ok")
    assert (
        value(registry, "streamtap_requests_total", api="chat_completions", model="gpt-4o", outcome="ok") == 2
    )
    assert (
        value(registry, "streamtap_requests_total", api="chat_completions", model="o3_mini", outcome="ok")
        == 1
    )
    assert (
        value(registry, "streamtap_requests_total", api="chat_completions", model="_other", outcome="ok") == 1
    )


def test_unknown_api_becomes_other(registry: CollectorRegistry) -> None:
    Call(Fanout([PrometheusRecorder(registry)]), api="embeddings", stream=False).start().finish("ok")  # type: ignore[arg-type]
    assert value(registry, "streamtap_requests_total", api="other", model="gpt-4o-mini", outcome="ok") == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        (" GPT-4o ", "gpt-4o"),
        ("ft:gpt-4o:acme::abc123", "ft:gpt-4o:acme::abc123"),
        ("meta-llama/Llama-3-70B", "meta-llama/llama-3-70b"),
        ('gpt"4o\n{x}', "gpt_4o_x_"),
        ("", "_unknown"),
        (None, "_unknown"),
        ("x" * 100, "x" * 64),
    ],
)
def test_normalise_model(raw: object, expected: str) -> None:
    assert normalise_model(raw) == expected


def test_upstream_name_drops_credentials_path_and_query() -> None:
    assert upstream_name("https://u:p@example.com:8443/v1?api-key=k") == "example.com:8443"
    assert upstream_name("primary") == "primary"


def test_recorders_on_one_registry_share_its_model_cap(registry: CollectorRegistry) -> None:
    """A recorder per client (setup_telemetry() per client) on one registry: each added its own
    max_models, so the registry's series grew with the clients."""
    fanouts = [Fanout([PrometheusRecorder(registry, max_models=2)]) for _ in range(3)]
    for n, fanout in enumerate(fanouts):
        Call(fanout, model=f"model-{n}", stream=False).start().finish("ok")
    models = {
        sample.labels["model"]
        for metric in registry.collect()
        if metric.name == "streamtap_requests"
        for sample in metric.samples
        if sample.value
    }
    assert models == {"model-0", "model-1", "_other"}


def test_model_cap_is_thread_safe() -> None:
    labeler = ModelLabeler(50)
    results: list[str] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        mine = [labeler(f"model-{offset + i}") for i in range(50)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=work, args=(n * 50,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = {label for label in results if label != "_other"}
    assert len(results) == 400
    assert len(admitted) == 50
    assert results.count("_other") == 350


def test_calls_of_new_models_from_many_threads_all_count(registry: CollectorRegistry) -> None:
    # Each thread's first call of a model races the others' to create its series (Series):
    # every call must land in the one child of its label set.
    fanout = Fanout([PrometheusRecorder(registry)])
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for i in range(200):
            Call(fanout, model=f"model-{i % 20}").start().attempt_ok().finish("ok", input_tokens=1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(20):
        labels = {"api": "chat_completions", "model": f"model-{i}"}
        assert value(registry, "streamtap_requests_total", **labels, outcome="ok") == 80
        assert value(registry, "streamtap_attempts_total", **labels, result="ok") == 80
        assert value(registry, "streamtap_tokens_total", **labels, type="input") == 80
        assert value(registry, "streamtap_request_duration_seconds_count", **labels, outcome="ok") == 80
    assert value(registry, "streamtap_active_streams", api="chat_completions") == 0


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_models must be an integer >= 1, got 0"):
        ModelLabeler(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"registry": None},
            r"registry must be a prometheus_client CollectorRegistry .*got None",
            id="registry-none",
        ),
        pytest.param(
            {"registry": "default"},
            r"registry must be a prometheus_client CollectorRegistry",
            id="registry-text",
        ),
        pytest.param(
            {"registry": CollectorRegistry(), "trace_ids": True},
            r"trace_ids must be an OtelTraceRecorder .*got True",
            id="trace-ids",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    """Before: 'cannot create weak reference to ...' for the registry; a trace_ids without
    trace_id() was accepted, then failed inside every call, where telemetry errors are
    swallowed, so not one metric was recorded."""
    with pytest.raises(TypeError, match=f"^PrometheusRecorder {message}"):
        PrometheusRecorder(**kwargs)


def test_a_registry_holding_one_of_its_names_gets_none_of_its_metrics() -> None:
    """Registered one by one, the metrics before the collision stayed: every later try failed on
    those, names the application never had."""
    from prometheus_client import Gauge

    registry = CollectorRegistry()
    Gauge("streamtap_active_streams", "the application's own", registry=registry)
    for _ in range(2):
        with pytest.raises(
            ValueError, match="already has a metric named like streamtap's streamtap_active_streams"
        ):
            PrometheusRecorder(registry)
    assert [m.name for m in registry.collect()] == ["streamtap_active_streams"]

"""The OTEL_* variables as the providers setup_telemetry builds read them: the specification's
rules for empty, unparsable, out-of-range and unknown values, each warned of by name."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streamtap import _otel_env
from streamtap._otel_env import (
    EXPORT_BATCH,
    LOG_BATCHES,
    SPAN_BATCHES,
    Batches,
    MetricReading,
    check_http_endpoint,
    compression,
    exemplar_filter,
    exporter_names,
    grpc_endpoint,
    log_batches,
    metric_reading,
    otlp_timeout,
    protocol,
    sdk_disabled,
    span_batches,
    span_limits,
)

NO_LIMIT_MS = 2**31 - 1


@pytest.fixture(autouse=True)
def _warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", "streamtap")


def test_exporter_names() -> None:
    assert exporter_names({}, "traces") == ["otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": ""}, "traces") == ["otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": " OTLP, console "}, "traces") == ["otlp", "console"]
    assert exporter_names({"OTEL_METRICS_EXPORTER": "none"}, "metrics") == ["none"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": " GRPC "}, "grpc"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            "http/protobuf",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"},
            "grpc",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": " "}, "grpc"),
    ],
)
def test_protocol(environ: dict[str, str], expected: str, caplog: pytest.LogCaptureFixture) -> None:
    assert protocol(environ, "traces") == expected
    assert caplog.messages == []


def test_an_unknown_protocol_is_warned_of_and_exports_http_protobuf(caplog: pytest.LogCaptureFixture) -> None:
    assert protocol({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "traces") == "http/protobuf"
    assert caplog.messages == [
        "streamtap: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json is not one of http/protobuf, grpc; "
        "using http/protobuf"
    ]


def test_a_bad_per_signal_value_is_unset_so_the_general_one_applies(caplog: pytest.LogCaptureFixture) -> None:
    """Treated as unset, as the specification says: a typo in the traces' variable must not send
    them over another protocol, to a port the collector does not listen on."""
    environ = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "bogus",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon",
    }
    assert (protocol(environ, "traces"), otlp_timeout(environ, "traces")) == ("grpc", 3.0)
    assert caplog.messages == [
        "streamtap: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=bogus is not one of http/protobuf, grpc; using grpc",
        "streamtap: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=soon is not a number of seconds >= 0; using 3.0",
    ]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "none"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "none"}, "none"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": " GZIP "}, "gzip"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none"}, "none"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": ""}, "gzip"),
        (
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "none", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip"},
            "none",
        ),
    ],
)
def test_compression(environ: dict[str, str], expected: str, caplog: pytest.LogCaptureFixture) -> None:
    assert compression(environ, "traces") == expected
    assert caplog.messages == []


def test_an_unknown_compression_is_warned_of_and_exports_uncompressed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert compression({"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "brotli"}, "metrics") == "none"
    assert caplog.messages == [
        "streamtap: OTEL_EXPORTER_OTLP_METRICS_COMPRESSION=brotli is not one of none, gzip; using none"
    ]


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [
        ({}, 10.0),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2.5"}, 2.5),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "30"}, 30.0),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, NO_LIMIT_MS / 1000),  # the specification: no limit
    ],
)
def test_otlp_timeout(environ: dict[str, str], seconds: float, caplog: pytest.LogCaptureFixture) -> None:
    assert otlp_timeout(environ, "traces") == seconds
    assert caplog.messages == []


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_an_otlp_timeout_out_of_range_is_warned_of_and_ignored(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert otlp_timeout({"OTEL_EXPORTER_OTLP_TIMEOUT": value}, "traces") == 10.0
    assert caplog.messages == [
        f"streamtap: OTEL_EXPORTER_OTLP_TIMEOUT={value} is not a number of seconds >= 0; using 10.0"
    ]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, Batches(2048, 5000, EXPORT_BATCH, 30000), id="unset: streamtap's batch of 64"),
        pytest.param(
            {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"},
            replace(SPAN_BATCHES, max_export_batch_size=100),
            id="variable",
        ),
        pytest.param(
            {"OTEL_BSP_MAX_QUEUE_SIZE": "40"},
            replace(SPAN_BATCHES, max_queue_size=40, max_export_batch_size=40),
            id="within-queue",
        ),
        pytest.param(
            {"OTEL_BSP_SCHEDULE_DELAY": "250", "OTEL_BSP_EXPORT_TIMEOUT": "0"},
            replace(SPAN_BATCHES, schedule_delay_millis=250, export_timeout_millis=NO_LIMIT_MS),
            id="delay-and-no-time-limit",
        ),
    ],
)
def test_span_batches(environ: dict[str, str], expected: Batches, caplog: pytest.LogCaptureFixture) -> None:
    assert span_batches(environ) == expected
    assert caplog.messages == []


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, Batches(2048, 1000, 512, 30000), id="unset: the specification's"),
        pytest.param(
            {"OTEL_BLRP_MAX_QUEUE_SIZE": "100"},
            replace(LOG_BATCHES, max_queue_size=100, max_export_batch_size=100),
            id="within",
        ),
        pytest.param(
            {
                "OTEL_BLRP_SCHEDULE_DELAY": "250",
                "OTEL_BLRP_EXPORT_TIMEOUT": "0",
                "OTEL_BSP_SCHEDULE_DELAY": "9",
            },
            replace(LOG_BATCHES, schedule_delay_millis=250, export_timeout_millis=NO_LIMIT_MS),
            id="own-variables",
        ),
    ],
)
def test_log_batches(environ: dict[str, str], expected: Batches, caplog: pytest.LogCaptureFixture) -> None:
    assert log_batches(environ) == expected
    assert caplog.messages == []


def test_a_log_batch_over_its_queue_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"OTEL_BLRP_MAX_QUEUE_SIZE": "50", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "100"}
    assert log_batches(environ) == replace(LOG_BATCHES, max_queue_size=50, max_export_batch_size=50)
    assert caplog.messages == [
        "streamtap: OTEL_BLRP_MAX_EXPORT_BATCH_SIZE=100 is not at most the queue's 50; using 50"
    ]


@pytest.mark.parametrize(
    ("environ", "expected", "warning"),
    [
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "lots"},
            SPAN_BATCHES,
            "OTEL_BSP_MAX_QUEUE_SIZE=lots is not an integer >= 1; using 2048",
        ),
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "0"},
            SPAN_BATCHES,
            "OTEL_BSP_MAX_QUEUE_SIZE=0 is not an integer >= 1; using 2048",
        ),
        (
            {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-5"},
            SPAN_BATCHES,
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=-5 is not an integer >= 1; using 64",
        ),
        (
            {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100", "OTEL_BSP_MAX_QUEUE_SIZE": "50"},
            replace(SPAN_BATCHES, max_queue_size=50, max_export_batch_size=50),
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=100 is not at most the queue's 50; using 50",
        ),
        (
            {"OTEL_BSP_SCHEDULE_DELAY": "-1"},
            SPAN_BATCHES,
            "OTEL_BSP_SCHEDULE_DELAY=-1 is not an integer >= 1; using 5000",
        ),
        (
            {"OTEL_BSP_EXPORT_TIMEOUT": "1.5"},
            SPAN_BATCHES,
            "OTEL_BSP_EXPORT_TIMEOUT=1.5 is not an integer >= 0; using 30000",
        ),
    ],
)
def test_span_batch_settings_out_of_range_are_warned_of_and_ignored(
    environ: dict[str, str], expected: Batches, warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert span_batches(environ) == expected
    assert caplog.messages == [f"streamtap: {warning}"]


def test_metric_reading(caplog: pytest.LogCaptureFixture) -> None:
    assert metric_reading({}) == MetricReading(60000, 30000)
    environ = {"OTEL_METRIC_EXPORT_INTERVAL": "5000", "OTEL_METRIC_EXPORT_TIMEOUT": "0"}
    assert metric_reading(environ) == MetricReading(5000, NO_LIMIT_MS)
    assert caplog.messages == []
    assert metric_reading({"OTEL_METRIC_EXPORT_INTERVAL": "0"}) == MetricReading()
    assert caplog.messages == ["streamtap: OTEL_METRIC_EXPORT_INTERVAL=0 is not an integer >= 1; using 60000"]


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The warnings given once per process, from none."""
    fresh: set[str] = set()
    monkeypatch.setattr(_otel_env, "_told", fresh)
    return fresh


@pytest.mark.parametrize(
    ("value", "disabled", "warned"),
    [
        ("", False, False),
        ("false", False, False),
        (" FALSE ", False, False),
        ("true", True, False),
        ("True", True, False),
        ("1", False, True),  # the specification: only true is true
        ("maybe", False, True),
    ],
)
def test_sdk_disabled_is_true_alone_and_anything_else_is_warned_of(
    caplog: pytest.LogCaptureFixture, told: set[str], value: str, disabled: bool, warned: bool
) -> None:
    """Values other than true, false and empty were silently not disabled, while the docs
    promise a warning for a value that does not parse."""
    for _ in range(2):
        assert sdk_disabled({"OTEL_SDK_DISABLED": value}) is disabled
    expected = f"streamtap: OTEL_SDK_DISABLED={value.strip()} is not true or false; using false"
    assert [m.startswith(expected) for m in caplog.messages] == ([True] if warned else [])


@pytest.mark.parametrize(
    ("environ", "warned"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "HTTPS://collector:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT=localhost:4318"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318/v1/traces"},
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector:4318/v1/traces",
        ),
        # The exporter reads the signal's own and ignores the other.
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces",
            },
            None,
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "c:4318"},
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=c:4318",
        ),
        # Empty is unset: the exporter reads the next.
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""},
            "OTEL_EXPORTER_OTLP_ENDPOINT=c:4318",
        ),
        # Its user:password is not shown.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "u:hunter2@c:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT=c:4318"),
    ],
)
def test_an_http_endpoint_without_a_scheme_is_warned_of_once(
    caplog: pytest.LogCaptureFixture, told: set[str], environ: dict[str, str], warned: str | None
) -> None:
    """The OTLP/HTTP exporters took localhost:4318, and every export failed with "No connection
    adapters were found", naming nothing."""
    check_http_endpoint(environ, "traces")
    check_http_endpoint(environ, "traces")
    if warned is None:
        assert caplog.messages == []
    else:
        (message,) = caplog.messages
        assert message.startswith(f"streamtap: {warned} is not an http:// or https:// URL, as OTLP over ")
        assert message.endswith("every export to it will fail")
        assert "hunter2" not in message


def test_the_exemplar_filter_the_sdk_would_raise_on_is_unset(caplog: pytest.LogCaptureFixture) -> None:
    assert exemplar_filter({}) == "trace_based"
    assert exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": " Always_Off "}) == "always_off"
    assert exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": ""}) == "trace_based"  # a chart's unset
    assert caplog.messages == []
    assert exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": "bogus"}) == "trace_based"
    assert caplog.messages == [
        "streamtap: OTEL_METRICS_EXEMPLAR_FILTER=bogus is not one of trace_based, always_on, always_off; "
        "using trace_based"
    ]


def test_span_limits_the_sdk_would_raise_on_are_unset(caplog: pytest.LogCaptureFixture) -> None:
    """Given to SpanLimits as the value unset stands for; the valid ones the SDK reads itself."""
    assert (
        span_limits({"OTEL_SPAN_EVENT_COUNT_LIMIT": "7", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "unset"}) == {}
    )
    assert span_limits({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": ""}) == {"max_span_attributes": 128}
    assert caplog.messages == []
    fixed = span_limits(
        {
            "OTEL_ATTRIBUTE_COUNT_LIMIT": "64",
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "abc",  # then the general limit
            "OTEL_SPAN_LINK_COUNT_LIMIT": "-1",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "-5",  # no limit
        }
    )
    assert fixed == {"max_span_attributes": 64, "max_links": 128, "max_attribute_length": -1}
    assert caplog.messages == [
        "streamtap: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc is not an integer >= 0 or unset; using 64",
        "streamtap: OTEL_SPAN_LINK_COUNT_LIMIT=-1 is not an integer >= 0 or unset; using 128",
        "streamtap: OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT=-5 is not an integer >= 0 or unset; using no limit",
    ]


def test_a_grpc_endpoint_that_does_not_parse_is_unset(caplog: pytest.LogCaptureFixture) -> None:
    assert grpc_endpoint({}, "traces") == "http://localhost:4317"
    assert grpc_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "traces") == "http://c:4317"
    bad = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[bad",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
    }
    assert grpc_endpoint(bad, "traces") == "http://c:4317"
    assert caplog.messages == [
        "streamtap: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://[bad is not a URL; using http://c:4317"
    ]

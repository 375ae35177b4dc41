"""The error taxonomy: status codes, exceptions and error events to (error_type, phase, retryable)."""

from __future__ import annotations

import pickle
from typing import Any

import httpx2
import openai
import pytest

from streamtap._errors import (
    CircuitOpenError,
    Failure,
    StreamBroken,
    StreamInterrupted,
    api_error_code,
    classify_error_event,
    classify_exception,
    classify_status,
    failure,
    status_error_type,
    unframed,
)
from streamtap._taxonomy import ERROR_TYPES, ErrorType


@pytest.mark.parametrize(
    ("status", "error_type", "retryable", "counts_for_breaker"),
    [
        (400, "bad_request", False, False),
        (401, "auth", False, False),
        (403, "auth", False, False),
        (404, "not_found", False, False),
        (408, "timeout", True, True),
        (409, "bad_request", True, False),
        (413, "bad_request", False, False),
        (422, "bad_request", False, False),
        (429, "rate_limited", True, True),
        (499, "bad_request", False, False),
        (500, "server_error", True, True),
        (502, "server_error", True, True),
        (503, "server_error", True, True),
        (504, "server_error", True, True),
        (529, "server_error", True, True),
    ],
)
def test_classify_status(status: int, error_type: str, retryable: bool, counts_for_breaker: bool) -> None:
    assert classify_status(status, {}, None) == Failure(
        error_type=error_type,  # type: ignore[arg-type]
        phase="headers",
        retryable=retryable,
        message=f"upstream answered HTTP {status}",
        status_code=status,
        counts_for_breaker=counts_for_breaker,
    )


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 429, 500, 503])
@pytest.mark.parametrize("override", [True, False])
def test_x_should_retry_overrides_the_table(status: int, override: bool) -> None:
    result = classify_status(status, {}, override)
    assert result.retryable is override
    # the override changes only retryability, never the type or the breaker verdict
    plain = classify_status(status, {}, None)
    assert (result.error_type, result.counts_for_breaker) == (plain.error_type, plain.counts_for_breaker)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}', "insufficient_quota"),
        (b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}', "rate_limit_exceeded"),
        (b'{"error":{"message":"slow down","type":"tokens","code":null}}', "tokens"),
        (b'{"error":"just a string"}', None),
        (b"[1, 2]", None),
        (b"<html>502 Bad Gateway</html>", None),
        (b"", None),
    ],
)  # fmt: skip
def test_api_error_code(body: bytes, code: str | None) -> None:
    assert api_error_code(body) == code


def test_a_quota_429_is_not_retried_unless_the_upstream_says_so_and_leaves_the_breaker_alone() -> None:
    # An account out of credit is that key's, not the upstream's: every other key sharing the
    # breaker is still served.
    quota = classify_status(429, {}, None, "insufficient_quota")
    assert (quota.error_type, quota.retryable, quota.counts_for_breaker) == ("rate_limited", False, False)
    assert classify_status(429, {}, None, "rate_limit_exceeded").counts_for_breaker
    assert quota.message == "upstream answered HTTP 429 (insufficient_quota)"
    assert classify_status(429, {}, None, "rate_limit_exceeded").retryable
    assert classify_status(429, {}, True, "insufficient_quota").retryable


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "other"), (302, "other"), (400, "bad_request"), (418, "bad_request"), (599, "server_error")],
)
def test_status_error_type(status: int, expected: str) -> None:
    assert status_error_type(status) == expected


def test_every_status_maps_into_the_closed_vocabulary() -> None:
    assert {status_error_type(s) for s in range(100, 600)} <= set(ERROR_TYPES)


def test_connect_phase_exceptions() -> None:
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    refused = classify_exception(httpx2.ConnectError("refused", request=request), phase="connect")
    assert refused == Failure("connection", "connect", True, "ConnectError: refused")
    timeout = classify_exception(httpx2.ConnectTimeout("slow", request=request), phase="connect")
    assert timeout == Failure("timeout", "connect", True, "ConnectTimeout: slow")
    read_timeout = classify_exception(httpx2.ReadTimeout("slow", request=request), phase="connect")
    assert read_timeout.error_type == "timeout"


@pytest.mark.parametrize(("phase", "retryable"), [("first_token", True), ("streaming", False)])
def test_body_phase_exceptions_are_interruptions(phase: Any, retryable: bool) -> None:
    error = httpx2.RemoteProtocolError("peer closed")
    assert classify_exception(error, phase=phase) == Failure(
        "stream_interrupted",
        phase,
        retryable,
        "the connection broke mid-stream (RemoteProtocolError: peer closed)",
    )


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        # chat: {"error": {...}}, code wins over type
        ({"error": {"message": "boom", "type": "server_error", "code": None}}, "server_error", "boom"),
        ({"error": {"message": "m", "type": "invalid_request_error", "code": "x"}}, "x", "m"),
        # responses `error` event: the payload is the error
        ({"type": "error", "code": "rate_limit_exceeded", "message": "slow"}, "rate_limit_exceeded", "slow"),
        # responses `response.failed`: the error is inside the response
        (
            {"type": "response.failed", "response": {"error": {"code": "overloaded", "message": "busy"}}},
            "overloaded",
            "busy",
        ),
        ({"error": {}}, "", "the upstream sent an error event"),
        ({"error": "model overloaded"}, "", "model overloaded"),  # some servers send a string
    ],
)
def test_error_event_code_and_message(payload: dict[str, Any], code: str, message: str) -> None:
    result = classify_error_event(payload, "first_token")
    assert result.error_type == "upstream_error_event"
    assert result.phase == "first_token"
    assert result.message == f"upstream error event {code or '(no code)'}: {message}"
    assert result.status_code is None
    assert result.counts_for_breaker is True


@pytest.mark.parametrize(
    ("payload", "counts"),
    [
        ({"error": {"message": "m", "code": "context_length_exceeded"}}, False),
        ({"error": {"message": "m", "type": "invalid_request_error", "code": None}}, False),
        ({"type": "error", "code": "invalid_prompt", "message": "m"}, False),
        (
            {"type": "response.failed", "response": {"error": {"code": "invalid_prompt", "message": "m"}}},
            False,
        ),
        ({"error": {"message": "m", "code": "content_filter"}}, False),
        ({"error": {"message": "m", "code": "server_error"}}, True),
        ({"error": {}}, True),
    ],
)
def test_error_events_that_blame_the_request_leave_the_breaker_alone(
    payload: dict[str, Any], counts: bool
) -> None:
    assert classify_error_event(payload, "first_token").counts_for_breaker is counts


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("server_error", True),
        ("Server_Error", True),
        ("rate_limit_exceeded", True),
        ("overloaded_error", True),
        ("timeout", True),
        ("invalid_request_error", False),
        ("content_filter", False),
        ("context_length_exceeded", False),
    ],
)
def test_error_event_retryable_before_commit_only(code: str, retryable: bool) -> None:
    payload = {"error": {"message": "x", "code": code}}
    assert classify_error_event(payload, "first_token").retryable is retryable
    assert classify_error_event(payload, "streaming").retryable is False


@pytest.mark.parametrize(
    ("error_type", "phase", "retryable"),
    [
        ("stream_truncated", "first_token", True),
        ("stream_truncated", "streaming", False),
        ("stall", "first_token", True),
        ("first_token_timeout", "first_token", True),
        ("bad_response", "first_token", True),
        ("bad_request", "first_token", False),
        ("timeout", "streaming", False),
    ],
)
def test_engine_detected_failures(error_type: ErrorType, phase: Any, retryable: bool) -> None:
    assert failure(error_type, phase, "why") == Failure(error_type, phase, retryable, "why")
    assert failure(error_type, phase, "why", retryable=not retryable).retryable is (not retryable)


def test_a_broken_stream_is_the_sdks_connection_error() -> None:
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    error = StreamBroken(
        request=request, error_type="stall", phase="streaming", attempts=2, text="Hel", message="no event"
    )
    assert isinstance(error, openai.APIConnectionError) and isinstance(error, StreamInterrupted)
    assert str(error) == "streamtap: stall: no event"
    assert (error.error_type, error.phase, error.attempts, error.text) == ("stall", "streaming", 2, "Hel")
    assert error.request is request


def test_circuit_open_error() -> None:
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    error = CircuitOpenError(request=request, upstream="http://x", model="gpt-x")
    assert isinstance(error, openai.APIConnectionError)
    assert str(error) == "streamtap: circuit_open: the circuit for http://x / gpt-x is open; failing fast"
    assert (error.error_type, error.upstream, error.model, error.attempts) == (
        "circuit_open",
        "http://x",
        "gpt-x",
        0,
    )


@pytest.mark.parametrize(
    "error",
    [
        StreamBroken(
            request=httpx2.Request(
                "POST", "http://x/v1/responses", headers={"Authorization": "Bearer sk-SECRET"}
            ),
            error_type="stall",
            phase="streaming",
            attempts=2,
            text="Hel",
            message="no event",
        ),
        CircuitOpenError(
            request=httpx2.Request(
                "POST", "http://x/v1/responses", headers={"Authorization": "Bearer sk-SECRET"}
            ),
            upstream="http://x",
            model="gpt-x",
        ),
    ],
    ids=["stream_interrupted", "circuit_open"],
)
def test_errors_pickle_with_their_attributes_and_without_the_key(error: openai.APIConnectionError) -> None:
    # Process pools and task queues pickle what a task raised.
    data = pickle.dumps(error)
    copied = pickle.loads(data)
    assert type(copied) is type(error)
    assert isinstance(copied, openai.APIConnectionError)
    assert str(copied) == str(error)
    assert copied.args == error.args
    kept = {k: v for k, v in vars(error).items() if k != "request"}
    assert {k: v for k, v in vars(copied).items() if k != "request"} == kept
    assert (copied.request.method, copied.request.url) == ("POST", error.request.url)
    assert b"sk-SECRET" not in data


def test_a_responses_error_events_body_is_the_error_object_without_the_events_type() -> None:
    # The event's `type` ("error") named no error: an SDK's APIError.type read it as one.
    event = {"type": "error", "code": "server_error", "message": "boom", "param": None, "sequence_number": 3}
    failed = classify_error_event(event, "first_token")
    assert failed.body == {"message": "boom", "type": None, "param": None, "code": "server_error"}
    assert (failed.code, failed.retryable) == ("server_error", True)


@pytest.mark.parametrize(
    ("rest", "error_type"),
    [
        (b'{"error": {"message": "m", "code": "server_error"}}', "upstream_error_event"),
        (b'{"error": "model overloaded"}', "upstream_error_event"),  # some servers send a string
        (b'{"error": ""}', "stream_truncated"),
        (b'{"id": "x"}', "stream_truncated"),
    ],
)
def test_a_stream_answered_with_a_bare_json_error_gets_that_error(rest: bytes, error_type: str) -> None:
    assert unframed(rest, "first_token").error_type == error_type


@pytest.mark.parametrize(
    ("body", "reports"),
    [
        ({"error": {"message": "m"}}, True),
        ({"error": "model overloaded"}, True),  # a 200 answer holding only an error, as a string
        ({"status": "failed"}, True),
        ({"error": None, "id": "resp_1", "status": "completed"}, False),
        ({"error": ""}, False),
    ],
)
def test_a_whole_answer_reports_an_error(body: dict[str, Any], reports: bool) -> None:
    from streamtap._whole import _reports_error

    assert _reports_error(body) is reports


def test_an_upstream_error_event_is_an_api_error_not_a_connection_error() -> None:
    # The plain SDK raises openai.APIError for an error event that ends a stream: an app's
    # `except openai.APIConnectionError` ("the server could not be reached") must not take it.
    error = StreamInterrupted(
        request=httpx2.Request("POST", "http://x/v1/chat/completions"),
        error_type="upstream_error_event",
        phase="streaming",
        attempts=1,
        text="Hel",
        message="upstream error event context_length_exceeded: too long",
        body={"message": "too long", "code": "context_length_exceeded", "type": "invalid_request_error"},
    )
    assert isinstance(error, openai.APIError) and not isinstance(error, openai.APIConnectionError)
    assert (error.code, error.type) == ("context_length_exceeded", "invalid_request_error")
    assert type(pickle.loads(pickle.dumps(error))) is StreamInterrupted

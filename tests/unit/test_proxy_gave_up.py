"""What a proxy client is told when the engine gives up: the upstream's own error object only
when the upstream's error event ended the call."""

from __future__ import annotations

import httpx2

from streamtap._errors import StreamInterrupted
from streamtap._proxy_client import gave_up
from streamtap._taxonomy import ErrorType

EVENT_ERROR = {
    "message": "Invalid prompt.",
    "type": "invalid_request_error",
    "param": None,
    "code": "invalid_prompt",
}


def _interrupted(error_type: ErrorType) -> StreamInterrupted:
    request = httpx2.Request("POST", "http://up/v1/chat/completions")
    return StreamInterrupted(
        request=request,
        error_type=error_type,
        phase="first_token",
        attempts=1,
        text="",
        message="m",
        body=EVENT_ERROR,
    )


def test_an_upstream_error_event_gives_its_own_error_object() -> None:
    status, code, _, upstream = gave_up(_interrupted("upstream_error_event"))
    assert (status, code, upstream) == (502, "upstream_error_event", EVENT_ERROR)


def test_a_retry_the_budget_or_breaker_refused_says_so_not_the_event_it_would_have_retried() -> None:
    for refused in ("budget_exhausted", "circuit_open"):
        status, code, _, upstream = gave_up(_interrupted(refused))  # type: ignore[arg-type]
        assert (status, code, upstream) == (502, refused, None)


def test_a_refused_retry_after_a_connection_failure_says_so() -> None:
    """As a StreamInterrupted's error type says it (docs/architecture.md): the proxy answered
    `connection` while its metrics counted `budget_exhausted`."""
    failed = httpx2.ConnectError("refused")
    for refused in ("budget_exhausted", "circuit_open"):
        status, code, message, _ = gave_up(failed, None, refused)
        assert (status, code) == (502, refused)
        assert message == f"upstream unreachable (ConnectError); its retry was refused ({refused})"
    assert gave_up(httpx2.ReadTimeout("slow"), None, "budget_exhausted")[:2] == (504, "budget_exhausted")
    assert gave_up(failed, None, "connection")[:2] == (502, "connection")

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

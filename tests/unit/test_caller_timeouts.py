"""Whose timeout ran out before an attempt's headers or in a non-streamed body: the caller's
own read timeout (the SDK's `timeout=`) is breaker-neutral, streamtap's limits are not, and
before the headers each is named as it is after them."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from streamtap._driver import callers_read_timeout, connect_failure
from streamtap._engine import Engine
from streamtap._policy import Policy
from streamtap._steps import Send
from streamtap._whole import body_failure

URL = "http://up:8080/v1/chat/completions"


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _sent(policy: Policy, stream: bool, read: float | None) -> tuple[Any, Send, httpx2.Request]:
    engine = Engine(policy, (), recorders=[], clock=Clock())
    body = {"model": "m", "stream": stream, "messages": []}
    call = engine.start_call("chat_completions", "/chat/completions", URL, body)
    send = call.next()
    assert isinstance(send, Send)
    call.sending(send, 100.0)
    timeout = {"connect": 5.0, "read": read, "write": 5.0, "pool": 5.0}
    request = httpx2.Request("POST", URL, extensions={"timeout": timeout})
    return call, send, request


READ_TIMEOUT = httpx2.ReadTimeout("timed out")


@pytest.mark.parametrize(
    ("policy", "stream", "read", "error", "expected"),
    [
        pytest.param(
            Policy(first_token_timeout=10, idle_timeout=10), True, 0.1, READ_TIMEOUT, True, id="stream"
        ),
        pytest.param(Policy(total_timeout=30), False, 0.1, READ_TIMEOUT, True, id="non-stream"),
        pytest.param(
            Policy(first_token_timeout=None, idle_timeout=None), True, 0.1, READ_TIMEOUT, True, id="no-limits"
        ),
        pytest.param(
            Policy(first_token_timeout=0.05), True, 0.1, READ_TIMEOUT, False, id="first-token-shorter"
        ),
        pytest.param(Policy(idle_timeout=0.1), True, 0.1, READ_TIMEOUT, False, id="idle-as-short"),
        pytest.param(Policy(total_timeout=0.05), False, 0.1, READ_TIMEOUT, False, id="total-shorter"),
        pytest.param(Policy(), True, None, READ_TIMEOUT, False, id="no-caller-timeout"),
        pytest.param(Policy(), True, 0.1, httpx2.ConnectTimeout("x"), False, id="connect-timeout"),
        pytest.param(Policy(), True, 0.1, httpx2.ConnectError("x"), False, id="not-a-timeout"),
    ],
)
def test_callers_read_timeout(
    policy: Policy, stream: bool, read: float | None, error: Exception, expected: bool
) -> None:
    call, send, request = _sent(policy, stream, read)
    assert callers_read_timeout(error, call, send, request) is expected


@pytest.mark.parametrize(
    ("policy", "stream", "read", "error", "expected"),
    [
        pytest.param(
            Policy(first_token_timeout=0.05, idle_timeout=10), True, 0.1, READ_TIMEOUT,
            ("first_token_timeout", True), id="first-token",
        ),
        pytest.param(
            Policy(first_token_timeout=10, idle_timeout=0.5), True, 1.0, READ_TIMEOUT,
            ("stall", True), id="idle",
        ),
        pytest.param(
            Policy(first_token_timeout=0.1, idle_timeout=10), True, 0.1, READ_TIMEOUT,
            ("first_token_timeout", True), id="tie-is-streamtaps",
        ),
        pytest.param(Policy(total_timeout=0.05), False, 0.1, READ_TIMEOUT, ("timeout", True), id="total"),
        pytest.param(
            Policy(first_token_timeout=10, idle_timeout=10), True, 0.1, READ_TIMEOUT,
            ("timeout", False), id="callers",
        ),
        pytest.param(Policy(), False, None, READ_TIMEOUT, ("timeout", True), id="no-bound-known"),
        pytest.param(Policy(), True, 0.1, httpx2.ConnectTimeout("x"), ("timeout", True), id="connect-timeout"),
        pytest.param(Policy(), True, 0.1, httpx2.ConnectError("x"), ("connection", True), id="refused"),
    ],
)  # fmt: skip
def test_no_headers_in_time_is_named_for_the_bound_that_ran_out(
    policy: Policy, stream: bool, read: float | None, error: Exception, expected: tuple[str, bool]
) -> None:
    """As the same bound is once the headers are in; only the caller's is breaker-neutral."""
    call, send, request = _sent(policy, stream, read)
    failed = connect_failure(error, call, send, request)
    assert (failed.error_type, failed.counts_for_breaker) == expected
    assert failed.phase == "connect"


def test_the_callers_timeout_in_a_body_is_breaker_neutral() -> None:
    assert body_failure(READ_TIMEOUT).counts_for_breaker is True
    neutral = body_failure(READ_TIMEOUT, blame_caller=True)
    assert (neutral.error_type, neutral.phase, neutral.counts_for_breaker) == (
        "timeout",
        "first_token",
        False,
    )

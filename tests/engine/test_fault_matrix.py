"""The fault matrix: every fault of the fake × {chat, responses} × {sync, async} × {before, after commit}.

Each case drives the real openai SDK through `streamtap.instrument` over loopback and asserts
the text the caller received (identical to a fault-free run, or exactly the delivered prefix
plus a typed error), how many attempts reached the upstream, and the call's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import openai
import pytest

import streamtap
from streamtap.fake import FakeUpstream

from .support import Recording, expected, read_async, read_sync

AFTER = 2  # content chunks delivered before an after-commit fault


@dataclass(frozen=True)
class Case:
    id: str
    spec: str  # the fault of the first attempt; later attempts are clean
    error_type: str | None  # None: served, text identical to a fault-free run
    attempts: int
    prefix: int = 0  # pieces delivered before the error
    sdk_error: type[Exception] | None = None  # the SDK's own exception, when not retried
    apis: tuple[str, ...] = ("chat", "responses")


BEFORE_COMMIT = [
    Case("429-retry-after", "status=429;retry_after=0", None, 2),
    Case("429-retry-after-ms", "status=429;retry_after_ms=5", None, 2),
    Case("500", "status=500", None, 2),
    Case("502", "status=502", None, 2),
    Case("503", "status=503", None, 2),
    Case("504", "status=504", None, 2),
    Case(
        "503-should-retry-false",
        "status=503;should_retry=false",
        "server_error",
        1,
        sdk_error=openai.InternalServerError,
    ),
    Case("400-should-retry-true", "status=400;should_retry=true", None, 2),
    Case("400", "status=400", "bad_request", 1, sdk_error=openai.BadRequestError),
    Case("401", "status=401", "auth", 1, sdk_error=openai.AuthenticationError),
    Case("404", "status=404", "not_found", 1, sdk_error=openai.NotFoundError),
    Case("reset", "reset", None, 2),
    Case("drop", "drop_after=0", None, 2),
    Case("truncate", "truncate_after=0", None, 2),
    Case("stall-first", "stall_first=3", None, 2),
    Case("error-event", "error_after=0", None, 2),
    Case("error-event-rate-limit", "error_after=0;error_code=rate_limit_exceeded", None, 2),
    Case("error-event-not-retryable", "error_after=0;error_code=invalid_prompt", "upstream_error_event", 1),
    Case("response-failed", "error_after=0;error_kind=failed", None, 2, apis=("responses",)),
    Case("malformed", "malformed_after=0", None, 2),
    Case("keepalive", "keepalive=3", None, 1),
]

AFTER_COMMIT = [
    Case("drop", f"drop_after={AFTER}", "stream_interrupted", 1, AFTER),
    Case("truncate", f"truncate_after={AFTER}", "stream_truncated", 1, AFTER),
    Case("stall", f"stall_after={AFTER};stall=3", "stall", 1, AFTER),
    Case("error-event", f"error_after={AFTER}", "upstream_error_event", 1, AFTER),
    Case(
        "response-failed",
        f"error_after={AFTER};error_kind=failed",
        "upstream_error_event",
        1,
        AFTER,
        apis=("responses",),
    ),
    Case("malformed", f"malformed_after={AFTER}", "bad_response", 1, AFTER),
]


def _params() -> list[Any]:
    return [
        pytest.param(case, api, mode, id=f"{when}-{case.id}-{api}-{mode}")
        for when, cases in (("before", BEFORE_COMMIT), ("after", AFTER_COMMIT))
        for case in cases
        for api in case.apis
        for mode in ("sync", "async")
    ]


def _run(client: Any, api: str, mode: str, received: list[str]) -> BaseException | None:
    try:
        if mode == "sync":
            read_sync(client, api, received)
        else:
            anyio.run(read_async, client, api, received)
    except openai.APIError as error:
        return error
    return None


@pytest.mark.parametrize(("case", "api", "mode"), _params())
def test_fault(
    case: Case, api: str, mode: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    fake.enqueue(case.spec, "")
    client = make_client(mode == "async")
    received: list[str] = []

    error = _run(client, api, mode, received)

    pieces = expected(fake, api)
    finished = recording.finished
    assert len(fake.requests) == case.attempts
    assert finished.attempts == case.attempts
    if case.error_type is None:
        assert error is None
        assert received == pieces  # every piece once, in order: identical to a fault-free run
        assert finished.outcome == "ok"
        assert finished.error_type is None
        return
    assert finished.outcome == "error"
    assert finished.error_type == case.error_type
    assert received == pieces[: case.prefix]
    if case.sdk_error is not None:
        assert type(error) is case.sdk_error
    else:
        assert isinstance(error, streamtap.StreamInterrupted)
        assert error.error_type == case.error_type
        assert error.attempts == case.attempts
        assert error.text == "".join(pieces[: case.prefix])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fault_free_stream_is_untouched(
    mode: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    received: list[str] = []
    assert _run(make_client(mode == "async"), "chat", mode, received) is None
    assert received == expected(fake, "chat")
    assert [r.retry_count for r in fake.requests] == ["0"]
    assert recording.finished.outcome == "ok"

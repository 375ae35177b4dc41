"""The fault matrix: every fault of the fake × {chat, responses} × {sync, async} × {before, after commit}.

Each case drives the real openai SDK through `streamtap.instrument` over loopback and asserts
the text the caller received (identical to a fault-free run, or exactly the delivered prefix
plus a typed error), how many attempts reached the upstream, and the call's outcome.
"""

from __future__ import annotations

from typing import Any

import anyio
import openai
import pytest

import streamtap
from streamtap.fake import FakeUpstream

from .cases import AFTER_COMMIT, BEFORE_COMMIT, Case
from .conftest import STALL_POLICY, TEST_POLICY
from .support import Recording, expected, read_async, read_sync


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
    except (openai.APIError, UnicodeDecodeError) as error:
        return error
    return None


@pytest.mark.parametrize(("case", "api", "mode"), _params())
def test_fault(
    case: Case, api: str, mode: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    fake.enqueue(case.spec, "")
    client = make_client(mode == "async", policy=STALL_POLICY if case.stalls else TEST_POLICY)
    received: list[str] = []

    error = _run(client, api, mode, received)

    pieces = expected(fake, api)
    finished = recording.finished
    assert len(fake.requests) == case.attempts, recording.attempts()
    assert finished.attempts == case.attempts, recording.attempts()
    if case.error_type is None:
        assert error is None
        assert received == pieces  # every piece once, in order: identical to a fault-free run
        assert finished.outcome == "ok"
        assert finished.error_type is None
        return
    assert finished.outcome == "error"
    assert finished.error_type == case.error_type
    assert received == pieces[: case.prefix]
    if case.sdk_error is not None or case.in_process_error is not None:
        assert type(error) is (case.sdk_error or case.in_process_error)
    else:
        assert isinstance(error, streamtap.StreamInterrupted)
        assert error.error_type == case.error_type
        assert error.attempts == case.attempts
        assert error.text == "".join(pieces[: case.prefix])
        assert error.request_id == fake.requests[-1].request_id  # the last attempt's, for support
        if case.error_type == "upstream_error_event":  # the error object, as the SDK's APIError has it
            assert isinstance(error.body, dict) and error.code == error.body["code"] is not None
            assert error.code in str(error)
            # What the upstream said, not what the network did: an APIError, as the plain SDK's.
            assert not isinstance(error, openai.APIConnectionError)
        else:
            assert (error.body, error.code) == (None, None)
            assert isinstance(error, openai.APIConnectionError)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fault_free_stream_is_untouched(
    mode: str, fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    received: list[str] = []
    assert _run(make_client(mode == "async"), "chat", mode, received) is None
    assert received == expected(fake, "chat")
    assert [r.retry_count for r in fake.requests] == ["0"]
    assert recording.finished.outcome == "ok"

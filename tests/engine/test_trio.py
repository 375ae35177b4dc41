"""The async door under trio: the same engine as under asyncio, through anyio.

`AsyncOpenAI` runs under trio, and streamtap's async driver, body and deadlines are anyio's:
a retry before the first token, a failure after it, a stall, a caller that cancels, and a
fallback each end as they do under asyncio (tests/engine/test_fault_matrix.py).
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

import streamtap
from streamtap import CallFinished
from streamtap.fake import FakeUpstream, expected_text

from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, Recording

trio = pytest.importorskip("trio", reason="trio is not installed (pip install -e '.[test]')")

# The SDK's AsyncStream leaves its own event generators unclosed after `[DONE]`, and trio warns
# when one is collected: the plain SDK gives the same warnings here, streamtap or not.
pytestmark = pytest.mark.filterwarnings("ignore:Async generator 'openai._streaming.:ResourceWarning")

POLICY = streamtap.Policy(
    max_attempts=3, backoff_base=0.001, backoff_cap=0.01, first_token_timeout=1.5, idle_timeout=1.5
)


def _run(fake: FakeUpstream, fault: str, **options: Any) -> tuple[str, BaseException | None, CallFinished]:
    """One streamed chat call under trio with the fake's `fault`: the text read, the error
    raised (None when none was), and the call's CallFinished."""
    recording = Recording()
    received: list[str] = []
    raised: list[BaseException | None] = [None]

    async def main() -> None:
        options.setdefault("policy", POLICY)
        client = streamtap.instrument(
            openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test"), recorders=[recording], **options
        )
        async with client:
            try:
                stream = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=CHAT_MESSAGES,  # type: ignore[arg-type]
                    stream=True,
                    extra_headers={"x-fake-fault": fault},
                )
                async for chunk in stream:
                    received.extend(c.delta.content or "" for c in chunk.choices)
            except openai.APIError as error:
                raised[0] = error

    trio.run(main)
    return "".join(received), raised[0], recording.finished


@pytest.fixture
def expected(fake: FakeUpstream) -> str:
    return expected_text("gpt-4o-mini", CHAT_MESSAGES, 6)


def test_a_retry_before_the_first_token_is_invisible(fake: FakeUpstream, expected: str) -> None:
    text, error, finished = _run(fake, "status=429;times=1")
    assert (text, error) == (expected, None)
    assert (finished.outcome, finished.attempts) == ("ok", 2)


@pytest.mark.parametrize(
    ("fault", "error_type"), [("drop_after=2", "stream_interrupted"), ("stall_after=2;stall=3", "stall")]
)
def test_a_failure_after_the_first_token_is_raised_with_what_was_delivered(
    fake: FakeUpstream, expected: str, fault: str, error_type: str
) -> None:
    text, error, finished = _run(fake, fault)
    assert isinstance(error, streamtap.StreamInterrupted)
    assert error.error_type == error_type
    assert text == error.text and expected.startswith(text) and text
    assert (finished.outcome, finished.error_type) == ("error", error_type)


def test_a_fallback_serves_when_the_primary_fails(fake: FakeUpstream) -> None:
    text, error, finished = _run(
        fake,
        "status=500;model=gpt-4o-mini",
        policy=TEST_POLICY,
        fallbacks=[streamtap.Fallback.model("gpt-4o")],
    )
    assert (text, error) == (expected_text("gpt-4o", CHAT_MESSAGES, 6), None)
    assert (finished.outcome, finished.fallback) == ("ok", "model")


def test_a_trio_cancellation_finishes_the_call_cancelled(fake: FakeUpstream) -> None:
    recording = Recording()

    async def main() -> None:
        client = streamtap.instrument(
            openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test"),
            recorders=[recording],
            policy=POLICY,
        )
        async with client:
            with trio.move_on_after(0.2) as scope:
                stream = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=CHAT_MESSAGES,  # type: ignore[arg-type]
                    stream=True,
                    extra_headers={"x-fake-gap": "0.1"},
                )
                async for _ in stream:
                    pass
            assert scope.cancelled_caught

    trio.run(main)
    assert recording.finished.outcome == "cancelled"

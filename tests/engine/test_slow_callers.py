"""A caller that holds a chunk longer than `idle_timeout` (awaited work per sentence, a tool run
mid-stream, a slow client of the proxy) while the upstream streams on: no stall that did not
happen, and a stall that did is still caught. The idle clock runs only while a read waits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest

import streamtap
from streamtap.fake import FakeConfig, FakeUpstream

from .support import CHAT_MESSAGES, Recording

IDLE = 0.4
PAUSE = 1.0  # after the third chunk, longer than IDLE
POLICY = streamtap.Policy(max_attempts=1, idle_timeout=IDLE)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(chunks=30, gap=0.01)) as fake:
        yield fake


def _read(fake: FakeUpstream, mode: str, recording: Recording, **create: Any) -> str:
    """One chat stream whose caller pauses PAUSE seconds after its third chunk; its text."""
    cls = openai.AsyncOpenAI if mode == "async" else openai.OpenAI
    client = streamtap.instrument(
        cls(base_url=fake.base_url, api_key="sk-test", max_retries=0), policy=POLICY, recorders=[recording]
    )
    request = {"model": "gpt-4o", "messages": CHAT_MESSAGES, "stream": True, **create}
    pieces: list[str] = []

    async def read_async() -> None:
        async with client:
            async for chunk in await client.chat.completions.create(**request):
                pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
                if len(pieces) == 3:
                    await anyio.sleep(PAUSE)

    if mode == "async":
        anyio.run(read_async)
    else:
        with client:
            for chunk in client.chat.completions.create(**request):
                pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
                if len(pieces) == 3:
                    time.sleep(PAUSE)
    return "".join(pieces)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_caller_that_pauses_longer_than_idle_timeout_gets_the_whole_answer(
    upstream: FakeUpstream, mode: str
) -> None:
    # Async, the read after the pause found its deadline passed and failed at once as a stall,
    # with the rest of the answer waiting in the socket; 25 such callers opened the breaker.
    recording = Recording()
    text = _read(upstream, mode, recording)
    assert text == upstream.expected_text(model="gpt-4o", messages=CHAT_MESSAGES)
    assert (recording.finished.outcome, recording.finished.error_type) == ("ok", None)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stall_during_the_pause_is_still_caught_within_idle_timeout_of_the_callers_return(
    upstream: FakeUpstream, mode: str
) -> None:
    recording = Recording()
    started = time.monotonic()
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        _read(upstream, mode, recording, extra_headers={"x-fake-fault": "stall_after=2;stall=30"})
    assert raised.value.error_type == "stall"
    assert time.monotonic() - started < PAUSE + IDLE + 2.0  # not the fault's 30 s

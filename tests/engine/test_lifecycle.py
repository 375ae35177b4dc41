"""Door 1 over an application's life: streams left open, collected, and what they hold."""

from __future__ import annotations

import gc

import anyio
import openai

import streamtap
from streamtap import CallFinished
from streamtap.fake import FakeUpstream

from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, Recording


def test_an_async_stream_left_in_a_break_gives_its_connection_back(
    fake: FakeUpstream, recording: Recording
) -> None:
    """`async for chunk in stream: break` without closing: the collector finalises the call
    (abandoned) while the SDK's generator still holds the stream, and the event loop then
    closes that generator, and the response with it. The response must reach the pool then,
    as it does without streamtap: each one lost stayed in the pool's request list for good,
    which every later request walks."""

    async def main() -> None:
        http = openai.DefaultAsyncHttpxClient()
        client = streamtap.instrument(
            openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", http_client=http),
            policy=TEST_POLICY,
            recorders=[recording],
        )
        try:
            for _ in range(3):
                stream = await client.chat.completions.create(
                    model="gpt-4o", messages=CHAT_MESSAGES, stream=True
                )
                async for _chunk in stream:
                    break
                del stream
                for _ in range(3):  # the collector finds the stream, the loop closes its generator
                    gc.collect()
                    await anyio.sleep(0.02)
            pool = http._transport._pool
            assert (len(pool._requests), len(pool.connections)) == (0, 0), pool
        finally:
            await client.close()

    anyio.run(main)
    finished = recording.of(CallFinished)
    assert len(finished) == 3
    assert {f.outcome for f in finished} <= {"abandoned", "cancelled"}

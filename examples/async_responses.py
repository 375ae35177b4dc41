"""Several concurrent streaming calls to the Responses API through one instrumented AsyncOpenAI.

All the calls share one engine: one retry budget (retries may add at most 20 % load plus
1 retry a second) and one circuit breaker per upstream and model, so a failing upstream is
not hammered by every coroutine at once.

    streamtap fake-upstream --port 8600 &
    OPENAI_BASE_URL=http://127.0.0.1:8600/v1 OPENAI_API_KEY=sk-fake python examples/async_responses.py

Environment: OPENAI_API_KEY and OPENAI_BASE_URL, as for any SDK client.
"""

from __future__ import annotations

import asyncio
import sys

import openai

import streamtap

MODEL = "gpt-4o-mini"
QUESTIONS = (
    "Name a river.",
    "Name a mountain.",
    "Name a harbour.",
)


async def ask(client: openai.AsyncOpenAI, question: str) -> str:
    """Stream one answer and return its text; a broken stream raises StreamInterrupted."""
    stream = await client.responses.create(model=MODEL, input=question, stream=True)
    async with stream:
        return "".join([event.delta async for event in stream if event.type == "response.output_text.delta"])


async def main(questions: list[str]) -> int:
    # max_attempts=3: a call is tried at most three times, and only before its first token.
    client = streamtap.instrument(openai.AsyncOpenAI(), policy=streamtap.Policy(max_attempts=3))
    async with client:
        # return_exceptions: one failed call does not cancel the others.
        answers = await asyncio.gather(*(ask(client, q) for q in questions), return_exceptions=True)
    status = 0
    for question, answer in zip(questions, answers, strict=True):
        if isinstance(answer, streamtap.StreamInterrupted):
            print(f"{question} -> [interrupted: {answer.error_type}] {answer.text}")
            status = 1
        elif isinstance(answer, BaseException):
            print(f"{question} -> [failed: {type(answer).__name__}]")
            status = 1
        else:
            print(f"{question} -> {answer}")
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:] or list(QUESTIONS))))

"""A FastAPI app that streams an answer to its own client and exposes streamtap's /metrics.

    streamtap fake-upstream --port 8600 &
    OPENAI_BASE_URL=http://127.0.0.1:8600/v1 OPENAI_API_KEY=sk-fake \\
        uvicorn fastapi_app:app --app-dir examples --port 8000
    curl -N 'http://127.0.0.1:8000/ask?q=Say+hi'
    curl -L http://127.0.0.1:8000/metrics

Environment: OPENAI_API_KEY and OPENAI_BASE_URL, as for any SDK client. With several uvicorn
workers set PROMETHEUS_MULTIPROC_DIR (see gunicorn_app.py) so /metrics adds up all of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

import streamtap

MODEL = "gpt-4o-mini"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One instrumented client per process: its calls share one retry budget and breaker set.
    app.state.openai = streamtap.instrument(
        openai.AsyncOpenAI(),
        policy=streamtap.Policy(max_attempts=3, first_token_timeout=15.0),
        fallbacks=[streamtap.Fallback.non_streaming()],
    )
    async with app.state.openai:
        yield


app = FastAPI(lifespan=lifespan)
# Prometheus' own ASGI app on the process' registry. A mount answers /metrics/ (Starlette
# redirects /metrics there; Prometheus and `curl -L` follow the redirect).
app.mount("/metrics", streamtap.metrics_asgi_app())


@app.get("/ask")
async def ask(q: str) -> StreamingResponse:
    """Stream the model's answer to `q` as plain text, token by token."""
    client: openai.AsyncOpenAI = app.state.openai
    # Awaited before the response starts: retries and fallbacks happen here, invisibly, up to
    # the first token. A call that cannot be served at all becomes a clean 502, not an empty 200.
    try:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": q}], stream=True
        )
    except openai.APIError as error:
        raise HTTPException(502, f"upstream failed: {type(error).__name__}") from None

    async def text() -> AsyncIterator[str]:
        # A StreamInterrupted raised here (the upstream broke mid-answer) aborts the response:
        # the client sees an incomplete body, never a short answer that looks complete.
        async with stream:
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield choice.delta.content

    return StreamingResponse(text(), media_type="text/plain; charset=utf-8")

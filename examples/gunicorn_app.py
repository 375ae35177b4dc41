"""A plain WSGI app under gunicorn with several workers; /metrics adds up every worker.

Each gunicorn worker is its own process with its own counters. With PROMETHEUS_MULTIPROC_DIR
set, prometheus_client writes every worker's values to files in that directory and
`streamtap.metrics_wsgi_app()` serves their sum, whichever worker answers the scrape.
gunicorn.conf.py next to this file sets that up.

    streamtap fake-upstream --port 8600 &
    OPENAI_BASE_URL=http://127.0.0.1:8600/v1 OPENAI_API_KEY=sk-fake \\
        gunicorn -c examples/gunicorn.conf.py --chdir examples gunicorn_app:app
    curl -N 'http://127.0.0.1:8000/ask?q=Say+hi'
    curl http://127.0.0.1:8000/metrics

Environment: OPENAI_API_KEY and OPENAI_BASE_URL, as for any SDK client.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import openai

import streamtap

MODEL = "gpt-4o-mini"

# Built at import, i.e. in each worker after gunicorn forked it (no preload_app): every worker
# gets its own connection pool, retry budget and circuit breakers.
client = streamtap.instrument(openai.OpenAI(), policy=streamtap.Policy(max_attempts=3))
metrics = streamtap.metrics_wsgi_app()  # the multi-process view when PROMETHEUS_MULTIPROC_DIR is set

StartResponse = Callable[..., Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/metrics":
        return metrics(environ, start_response)
    if path != "/ask":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /ask?q=... or /metrics\n"]
    question = parse_qs(environ.get("QUERY_STRING", "")).get("q", ["Say hi."])[0]
    try:
        # Retries and fallbacks happen inside create(), before the first token.
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], stream=True
        )
    except openai.APIError as error:
        start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
        return [f"upstream failed: {type(error).__name__}\n".encode()]
    # Which worker answered, so you can watch the load spread.
    start_response(
        "200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("X-Worker-Pid", str(os.getpid()))]
    )
    return _text(stream)


def _text(stream: openai.Stream[Any]) -> Iterator[bytes]:
    # A StreamInterrupted raised here (the upstream broke mid-answer) makes gunicorn close the
    # connection: the client sees an incomplete body, never a short answer that looks complete.
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    yield choice.delta.content.encode()

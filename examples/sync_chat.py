"""Stream a chat completion through streamtap, synchronously, and serve its metrics.

streamtap retries what fails before the first token (invisibly), falls back to another model
or to a non-streaming request when retries cannot help, and raises `StreamInterrupted` when
a stream breaks after text was already printed: never a silently short answer.

Try it without an API key against the fake upstream that ships with streamtap:

    streamtap fake-upstream --port 8600 &
    OPENAI_BASE_URL=http://127.0.0.1:8600/v1 OPENAI_API_KEY=sk-fake python examples/sync_chat.py

Environment: OPENAI_API_KEY and OPENAI_BASE_URL (read by the SDK as usual), METRICS_PORT
(default 9464; 0 picks a free port).
"""

from __future__ import annotations

import os
import sys
import urllib.request

import openai

import streamtap

MODEL = "gpt-4o"
PROMPT = "Explain in one sentence why streaming answers feel faster."
SHOWN = ("streamtap_requests_total{", "streamtap_retries_total{")  # the metrics printed at the end


def main(prompt: str) -> int:
    # Prometheus scrapes http://127.0.0.1:9464/metrics (a daemon thread; loopback only).
    metrics = streamtap.serve_metrics(port=int(os.environ.get("METRICS_PORT", "9464")))

    client = streamtap.instrument(
        openai.OpenAI(),  # reads OPENAI_API_KEY and OPENAI_BASE_URL like any SDK client
        policy=streamtap.Policy(
            max_attempts=3,  # the first try plus two retries, before the first token only
            backoff_base=0.25,  # full-jitter waits of up to 0.25 s, 0.5 s, ...
            first_token_timeout=20.0,  # an upstream that says nothing for 20 s is retried
        ),
        # Tried in order once the retries are spent (or the breaker is open), still before
        # the caller has seen a byte: a smaller model, then the same request without streaming.
        fallbacks=[streamtap.Fallback.model("gpt-4o-mini"), streamtap.Fallback.non_streaming()],
    )

    status = 0
    try:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},  # token counts for streamtap_tokens_total
        )
        with stream:  # an ordinary openai.Stream: streamtap wraps the transport, not the SDK
            for chunk in stream:
                for choice in chunk.choices:
                    print(choice.delta.content or "", end="", flush=True)
        print()
    except streamtap.StreamInterrupted as error:
        # The stream broke after the first token: the text above is all there is. `error.text`
        # is exactly what was delivered; `error.error_type` says what broke.
        print(
            f"\n[interrupted: {error.error_type} after {error.attempts} attempt(s); "
            f"{len(error.text)} characters were delivered]"
        )
        status = 1
    except openai.APIError as error:  # nothing was delivered: retries and fallbacks failed
        print(f"[failed: {type(error).__name__}: {error}]")
        status = 1

    # What Prometheus would scrape from this process right now.
    url = f"http://127.0.0.1:{metrics.server_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(SHOWN) and not line.endswith(" 0.0"):
                print(line)
    metrics.shutdown()
    metrics.server_close()
    return status


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:]) or PROMPT))

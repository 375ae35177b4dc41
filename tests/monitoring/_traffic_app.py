"""A real app for the live alerting test: it streams through `streamtap.instrument` against the
fake upstream (whose incident schedule injects an error spike) and serves /metrics.

Usage: python _traffic_app.py SECONDS SPIKE_START SPIKE_END
Prints "metrics on <port>" once serving; stops by itself after SECONDS.
"""

from __future__ import annotations

import sys
import threading
import time

import openai
from prometheus_client import CollectorRegistry

import streamtap
from streamtap.fake import FakeConfig, FakeUpstream, Incident


def main() -> None:
    seconds, spike_start, spike_end = (float(a) for a in sys.argv[1:4])
    registry = CollectorRegistry()
    recorders = streamtap.setup_telemetry(prometheus_registry=registry)
    server = streamtap.serve_metrics(port=0, addr="127.0.0.1", registry=registry)
    incidents = (
        # The spike: most calls fail for good (not retryable), so callers see errors.
        Incident(spike_start, spike_end, 0.6, "status=503;should_retry=false;model=gpt-4o"),
        # Failures the retries must fight through, some of them to exhaustion.
        Incident(spike_start, spike_end, 0.3, "status=502"),
        # Steady noise the retries hide: rate limiting, drops and truncations.
        Incident(0, seconds, 0.05, "status=429;retry_after_ms=10"),
        Incident(0, seconds, 0.05, "drop_after=0"),
        Incident(0, seconds, 0.05, "truncate_after=0"),
    )
    policy = streamtap.Policy(
        max_attempts=3,
        backoff_base=0.01,
        backoff_cap=0.05,
        first_token_timeout=2,
        idle_timeout=2,
        breaker=streamtap.BreakerSettings(window=5, min_requests=5, failure_ratio=0.5, open_for=2),
    )
    with FakeUpstream(FakeConfig(chunks=8, seed=7, incidents=incidents)) as fake:
        client = streamtap.instrument(
            openai.OpenAI(base_url=fake.base_url, api_key="sk-live-test"),
            policy=policy,
            fallbacks=[streamtap.Fallback.model("gpt-4o-mini")],
            recorders=recorders,
        )
        print(f"metrics on {server.server_port}", flush=True)
        stop = time.monotonic() + seconds

        def worker(api: str) -> None:
            while time.monotonic() < stop:
                try:
                    if api == "chat":
                        stream = client.chat.completions.create(
                            model="gpt-4o",
                            messages=[{"role": "user", "content": "hi"}],
                            stream=True,
                            stream_options={"include_usage": True},
                        )
                    else:
                        stream = client.responses.create(model="gpt-4o", input="hi", stream=True)
                    for _ in stream:
                        pass
                except openai.APIError:
                    pass
                time.sleep(0.05)

        threads = [threading.Thread(target=worker, args=(api,)) for api in ("chat", "chat", "responses")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
    server.shutdown()


if __name__ == "__main__":
    main()

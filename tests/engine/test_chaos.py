"""Many calls at once, each drawn at random: faults, fallbacks, and callers that leave.

Through door 1 (async tasks and sync threads sharing one client each) and through the proxy
(async HTTP clients), seeded draws pick for each call its API, a fault of the fake upstream
(statuses, resets, drops, truncations, error events, stalls past the timeouts, malformed
events) and what the caller does (read it all, stop after a few chunks, close it, time out,
leave without a word). Whatever happened, the books must balance once the dust settles:
- every call that started finished exactly once, and was counted once in
  `streamtap_requests_total` and in the OTel duration histogram;
- every call has one ended call span, and every attempt one ended attempt span under it;
- no stream is still counted active, no recorder failed, nothing was logged as a problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest

import streamtap
from streamtap import AttemptStarted, CallFinished, CallStarted
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeConfig, FakeUpstream

from .support import Problems, Recording
from .telemetry_support import Telemetry

FAULTS = ["", "", "", "status=429", "status=500;times=1", "reset", "drop_after=2", "truncate_after=3",
          "error_after=2", "stall_first=0.6", "stall_after=2;stall=0.6", "malformed_after=1",
          "status=503;model=gpt-4o-mini", "keepalive=2"]  # fmt: skip
POLICY = streamtap.Policy(
    max_attempts=3,
    backoff_base=0.001,
    backoff_cap=0.01,
    first_token_timeout=0.3,  # the stalls (0.6 s) trip them
    idle_timeout=0.3,
    breaker=streamtap.BreakerSettings(enabled=False),  # else the draw's faults open it for all
)
FALLBACKS = [
    streamtap.Fallback.model("gpt-4o"),
    streamtap.Fallback.non_streaming(),
    streamtap.Fallback.cached(),
]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(chunks=8, gap=0.01)) as fake:
        yield fake


@pytest.fixture
def books() -> Iterator[tuple[Telemetry, list[Recording], Problems]]:
    telemetry = Telemetry()
    with Problems() as problems:
        yield telemetry, [Recording(), Recording()], problems
    telemetry.shutdown()


def _total(telemetry: Telemetry, name: str) -> float:
    return sum(s.value for m in telemetry.registry.collect() for s in m.samples if s.name == name)


def _settled(recordings: list[Recording]) -> bool:
    return all(len(r.of(CallStarted)) == len(r.of(CallFinished)) for r in recordings)


def _assert_balanced(books: tuple[Telemetry, list[Recording], Problems], at_least: int) -> None:
    """`books`' recordings are one per engine: call ids are an engine's own."""
    telemetry, recordings, problems = books
    deadline = time.monotonic() + 15  # the proxy finishes a call after its client has gone
    while not _settled(recordings) and time.monotonic() < deadline:
        gc.collect()  # a stream left unclosed is finished when it is collected
        time.sleep(0.05)
    started = {(n, e.call_id) for n, r in enumerate(recordings) for e in r.of(CallStarted)}
    finished = Counter((n, e.call_id) for n, r in enumerate(recordings) for e in r.of(CallFinished))
    assert len(started) >= at_least
    assert set(finished) == started
    assert set(finished.values()) == {1}
    assert _total(telemetry, "streamtap_requests_total") == len(started)
    assert _total(telemetry, "streamtap_active_streams") == 0
    assert _total(telemetry, "streamtap_telemetry_errors_total") == 0
    durations = telemetry.otel_points()["gen_ai.client.operation.duration"]
    assert sum(point.count for point in durations) == len(started)
    spans = telemetry.finished_spans()
    calls = {s.context.span_id for s in spans if s.parent is None}
    attempts = [s for s in spans if s.parent is not None]
    assert len(calls) == len(started)
    assert all(s.parent is not None and s.parent.span_id in calls for s in attempts)
    assert len(attempts) == sum(len(r.of(AttemptStarted)) for r in recordings)
    outcomes = Counter(e.outcome for r in recordings for e in r.of(CallFinished))
    assert outcomes["ok"] and outcomes["error"] and outcomes["cancelled"], outcomes  # the draw reached them
    assert problems.seen == []


def _arguments(rng: random.Random, api: str, who: str) -> dict[str, Any]:
    headers = {"x-fake-fault": rng.choice(FAULTS)}
    if api == "chat":
        messages = [{"role": "user", "content": who}]
        return {"model": "gpt-4o-mini", "messages": messages, "stream": True, "extra_headers": headers}
    return {"model": "gpt-4o-mini", "input": who, "stream": True, "extra_headers": headers}


def _create(client: Any, api: str) -> Callable[..., Any]:
    return client.chat.completions.create if api == "chat" else client.responses.create  # type: ignore[no-any-return]


def test_door_one_balances_its_books_under_chaos(
    upstream: FakeUpstream, books: tuple[Telemetry, list[Recording], Problems]
) -> None:
    telemetry, (sync_recording, async_recording), _ = books
    options = {"policy": POLICY, "fallbacks": FALLBACKS}
    sync_client = streamtap.instrument(
        openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
        recorders=[*telemetry.recorders, sync_recording],
        **options,
    )
    async_client = streamtap.instrument(
        openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
        recorders=[*telemetry.recorders, async_recording],
        **options,
    )
    tasks, threads, calls = 30, 6, 12

    def sync_caller(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(calls):
            api, leaves = rng.choice(["chat", "responses"]), rng.choice(["never", "never", "closes", "stops"])
            try:
                stream = _create(sync_client, api)(**_arguments(rng, api, f"thread {seed}"))
                for read, _ in enumerate(stream):
                    if read == 2 and leaves == "closes":
                        stream.close()
                    if read == 2 and leaves != "never":
                        break
            except openai.APIError:
                pass

    async def async_caller(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(calls):
            api, leaves = (
                rng.choice(["chat", "responses"]),
                rng.choice(["never", "never", "closes", "times out"]),
            )

            async def call(api: str = api, leaves: str = leaves) -> None:
                stream = await _create(async_client, api)(**_arguments(rng, api, f"task {seed}"))
                async for read, _ in _enumerate(stream):
                    if read == 2 and leaves == "closes":
                        await stream.close()
                        break

            timeout = 0.01 + rng.random() * 0.15 if leaves == "times out" else None
            with contextlib.suppress(openai.APIError, TimeoutError):
                # 10 ms at least, so the call has reached the engine (else there is none to count)
                await asyncio.wait_for(call(), timeout=timeout)

    async def main() -> None:
        await asyncio.gather(*(async_caller(seed) for seed in range(tasks)))
        await async_client.close()

    workers = [threading.Thread(target=sync_caller, args=(1000 + seed,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    asyncio.run(main())
    for worker in workers:
        worker.join(60)
    sync_client.close()
    _assert_balanced(books, at_least=(tasks + threads) * calls - 10)


async def _enumerate(stream: Any) -> Any:
    read = 0
    async for item in stream:
        yield read, item
        read += 1


def test_the_proxy_balances_its_books_under_chaos(
    upstream: FakeUpstream, books: tuple[Telemetry, list[Recording], Problems]
) -> None:
    telemetry, (recording, _), _ = books
    config = ProxyConfig(upstream=upstream.base_url, listen="127.0.0.1:0", policy=POLICY, fallbacks=FALLBACKS)
    clients, calls = 60, 10

    async def caller(base_url: str, seed: int) -> None:
        rng = random.Random(seed)
        async with httpx2.AsyncClient(timeout=30) as http:
            for _ in range(calls):
                api = rng.choice(["chat", "responses"])
                arguments = _arguments(rng, api, f"client {seed}")
                headers = {"authorization": "Bearer sk-test", **arguments.pop("extra_headers")}
                path = "chat/completions" if api == "chat" else "responses"
                leaves = rng.choice(
                    ["never", "never", "never", "after headers", "after a read", "reads slowly"]
                )
                async with http.stream(
                    "POST", f"{base_url}/{path}", json=arguments, headers=headers
                ) as response:
                    if leaves == "never":
                        await response.aread()
                    elif leaves == "after a read":
                        async for _ in response.aiter_raw():
                            break
                    elif leaves == "reads slowly":
                        async for _ in response.aiter_raw():
                            await asyncio.sleep(0.02)

    async def main(base_url: str) -> None:
        await asyncio.gather(*(caller(base_url, seed) for seed in range(clients)))

    with ProxyServer(config, recorders=[*telemetry.recorders, recording]) as proxy:
        asyncio.run(main(proxy.base_url))
        _assert_balanced(books, at_least=clients * calls)

"""The demo's traffic: a fixed handful of paced workers, through both doors, sync and async.

Every worker makes one call at a time at its own pace (so the load is bounded whatever the
upstream does) and stops at the next call boundary once `stop` is set. Calls are bounded by
the policy's timeouts, so stopping takes at most a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai

from .. import Fallback, Policy, Recorder, instrument

log = logging.getLogger("streamtap.demo")

Door = Literal["instrument", "proxy"]
Api = Literal["chat", "responses"]

PROMPTS = (
    "Say hello in five words.",
    "Name three prime numbers.",
    "What colour is the sky on Mars?",
    "Give me a haiku about retries.",
    "Summarise HTTP 429 in one line.",
    "Why do streams stall?",
)


@dataclass(frozen=True)
class Workload:
    """One worker's share of the traffic.

    Args:
        door: "instrument" (an SDK client from `streamtap.instrument`) or "proxy" (a plain SDK
            client pointed at the sidecar proxy).
        mode: "sync" (a thread) or "async" (a task on the demo's event loop).
        api: "chat" (chat completions) or "responses".
        stream_share: the fraction of calls made with stream=True.
        rate: calls per second this worker aims for.
    """

    door: Door
    mode: Literal["sync", "async"]
    api: Api
    stream_share: float
    rate: float

    @property
    def label(self) -> str:
        return f"{self.door}/{self.mode}/{self.api}"


# ~14 calls/s in total against the fake upstream.
FAKE_WORKLOADS: tuple[Workload, ...] = (
    Workload("instrument", "sync", "chat", 1.0, 3.0),
    Workload("instrument", "sync", "responses", 0.85, 2.5),
    Workload("instrument", "async", "chat", 0.8, 3.0),
    Workload("instrument", "async", "responses", 1.0, 2.5),
    Workload("proxy", "sync", "chat", 0.9, 2.0),
    Workload("proxy", "sync", "responses", 1.0, 1.0),
)
# A real, billed API: one call every few seconds per worker, short answers.
REAL_WORKLOADS: tuple[Workload, ...] = (
    Workload("instrument", "sync", "chat", 1.0, 0.25),
    Workload("instrument", "async", "responses", 0.8, 0.2),
    Workload("proxy", "sync", "chat", 1.0, 0.1),
)


@dataclass
class Tally:
    """What the callers saw, per door: calls and the exceptions raised to them."""

    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, door: str, error: str | None) -> None:
        with self.lock:
            self.calls[door] += 1
            if error is not None:
                self.errors[f"{door}: {error}"] += 1


@dataclass(frozen=True)
class TrafficConfig:
    """Where the traffic goes and how the instrumented clients are set up.

    Args:
        base_url: the upstream the instrumented clients call.
        proxy_url: the sidecar proxy's base URL (None: no proxy share).
        api_key: the key the clients send.
        model: the requested model.
        policy: the instrumented clients' policy.
        fallbacks: the sync instrumented client's fallbacks (the async one gets non_streaming only).
        recorders: telemetry sinks of the instrumented clients.
        workloads: the workers.
        seed: seed of the workers' prompt and stream choices.
        max_tokens: cap on answer tokens (None: the upstream's default).
    """

    base_url: str
    proxy_url: str | None
    api_key: str
    model: str
    policy: Policy
    fallbacks: tuple[Fallback, ...]
    recorders: Sequence[Recorder]
    workloads: tuple[Workload, ...]
    seed: int = 0
    max_tokens: int | None = None


def _error_name(error: BaseException) -> str:
    kind = getattr(error, "error_type", None)
    if isinstance(kind, str):
        return kind
    status = getattr(error, "status_code", None)
    return f"HTTP {status}" if status is not None else type(error).__name__


def _request(config: TrafficConfig, api: Api, stream: bool, prompt: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": config.model, "stream": stream}
    if api == "chat":
        kwargs["messages"] = [{"role": "user", "content": prompt}]
        if stream:
            kwargs["stream_options"] = {"include_usage": True}
        if config.max_tokens is not None:
            kwargs["max_completion_tokens"] = config.max_tokens
    else:
        kwargs["input"] = prompt
        if config.max_tokens is not None:
            kwargs["max_output_tokens"] = config.max_tokens
    return kwargs


class Traffic:
    """Runs the workers until `stop` is set.

    Args:
        config: the traffic's settings.
        stop: set to stop every worker at its next call boundary.
    """

    def __init__(self, config: TrafficConfig, stop: threading.Event) -> None:
        self.config = config
        self.stop = stop
        self.tally = Tally()
        self._threads: list[threading.Thread] = []
        self._clients: list[openai.OpenAI] = []

    def start(self) -> None:
        """Start the sync worker threads and the thread running the async workers."""
        cfg = self.config
        direct = instrument(
            openai.OpenAI(base_url=cfg.base_url, api_key=cfg.api_key),
            policy=cfg.policy,
            fallbacks=cfg.fallbacks,
            recorders=cfg.recorders,
        )
        proxied = None
        if cfg.proxy_url is not None:
            # A plain client: the proxy retries, so the SDK must not retry on top of it.
            proxied = openai.OpenAI(base_url=cfg.proxy_url, api_key=cfg.api_key, max_retries=0, timeout=30)
        sync_clients = {"instrument": direct, "proxy": proxied}
        async_work = []
        for index, work in enumerate(cfg.workloads):
            rng = random.Random(f"{cfg.seed}:{index}")
            if work.mode == "async":
                async_work.append((work, rng))
                continue
            client = sync_clients[work.door]
            if client is None:
                continue
            thread = threading.Thread(
                target=self._run_sync, args=(client, work, rng), name=f"demo-{work.label}", daemon=True
            )
            self._threads.append(thread)
        if async_work:
            self._threads.append(
                threading.Thread(target=asyncio.run, args=(self._run_async(async_work),), daemon=True)
            )
        self._clients = [c for c in sync_clients.values() if c is not None]
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for every worker (after `stop` is set); True when all have stopped."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        stopped = not any(t.is_alive() for t in self._threads)
        if stopped:
            for client in self._clients:
                client.close()
        return stopped

    def _pause(self, work: Workload, started: float) -> float:
        # Pace from the call's start: a slow call is not followed by a burst to catch up.
        return max(1.0 / work.rate - (time.monotonic() - started), 0.0)

    def _run_sync(self, client: openai.OpenAI, work: Workload, rng: random.Random) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            stream = rng.random() < work.stream_share
            kwargs = _request(self.config, work.api, stream, rng.choice(PROMPTS))
            error: str | None = None
            try:
                endpoint: Any = client.chat.completions if work.api == "chat" else client.responses
                result = endpoint.create(**kwargs)
                if stream:
                    with result:
                        for _ in result:
                            pass
            except openai.OpenAIError as exc:
                error = _error_name(exc)
            except Exception as exc:  # a demo keeps going; the summary shows what broke
                log.debug("unexpected error in %s", work.label, exc_info=True)
                error = f"unexpected {type(exc).__name__}"
            self.tally.add(work.door, error)
            self.stop.wait(self._pause(work, started))

    async def _run_async(self, work: list[tuple[Workload, random.Random]]) -> None:
        cfg = self.config
        client = instrument(
            openai.AsyncOpenAI(base_url=cfg.base_url, api_key=cfg.api_key),
            policy=cfg.policy,
            fallbacks=[Fallback.non_streaming()],
            recorders=cfg.recorders,
        )
        try:
            await asyncio.gather(*(self._async_worker(client, w, rng) for w, rng in work))
        finally:
            await client.close()

    async def _async_worker(self, client: openai.AsyncOpenAI, work: Workload, rng: random.Random) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            stream = rng.random() < work.stream_share
            kwargs = _request(self.config, work.api, stream, rng.choice(PROMPTS))
            error: str | None = None
            try:
                endpoint: Any = client.chat.completions if work.api == "chat" else client.responses
                result = await endpoint.create(**kwargs)
                if stream:
                    async with result:
                        async for _ in result:
                            pass
            except openai.OpenAIError as exc:
                error = _error_name(exc)
            except Exception as exc:
                log.debug("unexpected error in %s", work.label, exc_info=True)
                error = f"unexpected {type(exc).__name__}"
            self.tally.add(work.door, error)
            pause = self._pause(work, started)
            # Sleep in short steps so a stop is noticed quickly.
            while pause > 0 and not self.stop.is_set():
                await asyncio.sleep(min(pause, 0.2))
                pause -= 0.2

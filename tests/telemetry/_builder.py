"""A small builder of synthetic engine event sequences, fed through a real Fanout."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamtap._events import (
    AttemptFinished,
    AttemptStarted,
    BreakerTransition,
    CallEvent,
    CallFinished,
    CallObserver,
    CallStarted,
    FallbackUsed,
    Fanout,
    FirstToken,
    Recorder,
    RetryScheduled,
    RetrySuppressed,
)
from streamtap._taxonomy import Api, BreakerState, ErrorType, FallbackKind, Outcome, Phase, SuppressCause

_ids = itertools.count(1000)
URL = "https://api.openai.com/v1/chat/completions"


@dataclass
class Call:
    """Drives one call through a Fanout; each method emits one event and returns self."""

    fanout: Fanout
    api: Api = "chat_completions"
    model: str = "gpt-4o-mini"
    stream: bool = True
    request: Mapping[str, Any] = field(default_factory=lambda: {"model": "gpt-4o-mini", "stream": True})
    call_id: int = field(default_factory=lambda: next(_ids))
    attempts: int = 0
    carriers: list[dict[str, str]] = field(default_factory=list)
    observer: CallObserver | None = None
    capture_content: bool | None = None  # the engine's word on capture (None: the recorders')
    server_address: str = "api.openai.com"
    server_port: int = 443

    def start(self) -> Call:
        self.observer = self.fanout.start_call(
            CallStarted(
                call_id=self.call_id,
                api=self.api,
                model=self.model,
                stream=self.stream,
                server_address=self.server_address,
                server_port=self.server_port,
                request=self.request,
                capture_content=self.capture_content,
            )
        )
        return self

    def emit(self, event: CallEvent) -> Call:
        assert self.observer is not None, "start() first"
        self.observer.on_event(event)
        return self

    def attempt_fails(
        self,
        error_type: ErrorType,
        *,
        status: int | None = 429,
        phase: Phase = "headers",
        retry: bool = True,
        delay: float = 0.5,
        url: str = URL,
    ) -> Call:
        n = self.attempts
        self.attempts += 1
        carrier: dict[str, str] = {}
        self.carriers.append(carrier)
        self.emit(AttemptStarted(self.call_id, n, "POST", url, self.model, None, carrier))
        self.emit(AttemptFinished(self.call_id, n, status, error_type, phase, 0.2, None, retry))
        if retry:
            self.emit(RetryScheduled(self.call_id, n, error_type, delay))
        return self

    def attempt_ok(self, *, ttft: float = 0.3, duration: float = 1.0, url: str = URL) -> Call:
        n = self.attempts
        self.attempts += 1
        carrier: dict[str, str] = {}
        self.carriers.append(carrier)
        self.emit(AttemptStarted(self.call_id, n, "POST", url, self.model, None, carrier))
        self.emit(AttemptFinished(self.call_id, n, 200, None, None, duration, ttft))
        return self

    def attempt_open(self, *, url: str = URL) -> Call:
        """An attempt that starts and is still running when the call ends."""
        n = self.attempts
        self.attempts += 1
        carrier: dict[str, str] = {}
        self.carriers.append(carrier)
        return self.emit(AttemptStarted(self.call_id, n, "POST", url, self.model, None, carrier))

    def first_token(self, ttft: float, status: int | None = 200) -> Call:
        return self.emit(FirstToken(self.call_id, ttft, max(self.attempts - 1, 0), status))

    def suppressed(self, reason: ErrorType, cause: SuppressCause) -> Call:
        return self.emit(RetrySuppressed(self.call_id, max(self.attempts - 1, 0), reason, cause))

    def fallback(self, kind: FallbackKind, model: str, ok: bool) -> Call:
        return self.emit(FallbackUsed(self.call_id, kind, model, ok))

    def breaker(self, old: BreakerState, new: BreakerState, upstream: str = "openai") -> Call:
        event = BreakerTransition(upstream, self.model, old, new, self.call_id)
        self.fanout.breaker_changed(event)
        return self.emit(event)

    def finish(
        self,
        outcome: Outcome = "ok",
        *,
        error_type: ErrorType | None = None,
        duration: float = 2.0,
        ttft: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reasons: Sequence[str] = (),
        chunks: int = 0,
        max_chunk_gap: float | None = None,
        fallback: FallbackKind | None = None,
        output_messages: Sequence[Mapping[str, Any]] | None = None,
        service_tier: str | None = None,
    ) -> Call:
        return self.emit(
            CallFinished(
                call_id=self.call_id,
                outcome=outcome,
                error_type=error_type,
                duration=duration,
                attempts=self.attempts,
                time_to_first_token=ttft,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                finish_reasons=finish_reasons,
                response_model=f"{self.model}-2024-07-18",
                response_id="chatcmpl-123",
                max_chunk_gap=max_chunk_gap,
                chunks=chunks,
                fallback=fallback,
                output_messages=output_messages,
                service_tier=service_tier,
            )
        )


def two_429s_then_success(recorders: Sequence[Recorder], **call: Any) -> Call:
    """The canonical scenario: two rate-limited attempts, then a stream that completes."""
    c = Call(Fanout(recorders), **call).start()
    c.attempt_fails("rate_limited").attempt_fails("rate_limited").attempt_ok(ttft=0.4, duration=1.5)
    c.first_token(1.6)
    return c.finish(
        "ok",
        duration=3.0,
        ttft=1.6,
        input_tokens=12,
        output_tokens=30,
        finish_reasons=["stop"],
        chunks=11,
        max_chunk_gap=0.2,
    )

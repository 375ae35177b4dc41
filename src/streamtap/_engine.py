"""The engine: what every call of one client (or one proxy) shares, and how a call starts."""

from __future__ import annotations

import functools
import itertools
import random
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._background import WORKER
from ._breaker import Breakers
from ._budget import RetryBudget
from ._call import Call
from ._dialect import dialect_for
from ._events import BreakerTransition, CallStarted, Fanout, Recorder
from ._fallback import AnswerCache, Fallback, Route, upstream_of
from ._json import parse_json
from ._policy import Policy
from ._taxonomy import Api, BreakerState

_PATHS: dict[str, Api] = {"/chat/completions": "chat_completions", "/responses": "responses"}


def engine_api(method: str, path: str) -> tuple[Api, str] | None:
    """The API and path suffix of a request the engine handles, or None to pass it through."""
    if method != "POST":
        return None
    for suffix, api in _PATHS.items():
        if path.endswith(suffix):
            return api, suffix
    return None


def start_timer(delay: float, action: Callable[[], None]) -> None:
    """Run `action` once on the background thread `delay` seconds from now (and a hair later:
    a timed wait may wake a little early, and the breaker's own clock decides)."""
    WORKER.later(delay + 0.01, action)


def _breaker_moved(
    recorder: Fanout, engine_id: int, upstream: str, model: str, old: BreakerState, new: BreakerState
) -> None:
    recorder.breaker_changed(BreakerTransition(upstream, model, old, new, engine_id=engine_id))


def _breakers_gone(recorder: Fanout, engine_id: int, breakers: Breakers) -> None:
    """An engine is gone: its breakers that are not closed are reported closed, as no call can
    meet them any more (a gauge that keeps the worst state of several engines' breakers would
    otherwise read a dead client's open breaker for ever)."""
    for (upstream, model), state in breakers.states().items():
        if state != "closed":
            _breaker_moved(recorder, engine_id, upstream, model, state, "closed")


# Process-wide, not per engine: recorders shared by several clients (`default_recorders`, one
# `setup_telemetry()` list) key what they keep of a call in flight by its id, so two clients'
# calls must never share one (an exemplar or an event would take the other call's trace id).
_CALL_IDS = itertools.count(1)
# Which engine a breaker is of, for recorders shared by several (`BreakerTransition.engine_id`).
_ENGINE_IDS = itertools.count(1)


class Engine:
    """Policy, fallbacks, retry budget, circuit breakers and recorders shared by calls.

    Args:
        policy: retries, timeouts, budget and breaker settings (default `Policy()`).
        fallbacks: tried in order when the primary route fails before commit.
        recorders: telemetry sinks; None means streamtap's defaults (Prometheus on the global
            registry, OpenTelemetry traces and metrics on the global providers).
        capture_content: record prompts and answers in telemetry (True, False, or None to read
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT); a recorder built with its own
            `capture_content` keeps it.
        verify_events: check that every event passed on without a full parse decodes (UTF-8
            JSON) before it goes out; one that does not fails the attempt as `bad_response`.
            For callers that relay the events rather than parse them (the proxy), whose
            clients would otherwise fail where the engine cannot see it. In-process the SDK's
            own parse catches such an event, at no cost to the hot path.
        keep_text: keep every byte a call delivered until it ends, for the text of a
            `StreamInterrupted` (its `text`). False (the proxy, whose clients get no such
            text) keeps only the last read, unless the call needs them all (an answer cache
            among the fallbacks, content capture, a background response to resume); then
            `StreamInterrupted.text` is empty and a response's `num_bytes_downloaded` counts
            the last read only.
        clock, wall, rng: injectable for tests (a monotonic clock and a wall clock in seconds,
            a uniform random number in [0, 1) for the backoff's jitter).
    """

    def __init__(
        self,
        policy: Policy | None = None,
        fallbacks: Iterable[Fallback] = (),
        recorders: Sequence[Recorder] | None = None,
        *,
        capture_content: bool | None = None,
        verify_events: bool = False,
        keep_text: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(verify_events, bool):
            raise TypeError(f"verify_events must be True or False, got {verify_events!r}")
        if not isinstance(keep_text, bool):
            raise TypeError(f"keep_text must be True or False, got {keep_text!r}")
        for name, function in (("clock", clock), ("wall", wall), ("rng", rng)):
            if not callable(function):
                raise TypeError(f"{name} must be a function taking no arguments, got {function!r}")
        self.policy = policy if policy is not None else Policy()
        if not isinstance(self.policy, Policy):
            raise TypeError(f"policy must be a streamtap.Policy, got {type(policy).__name__}")
        # A lone Fallback or a model name iterated would fail on its first item or character.
        if isinstance(fallbacks, Fallback | str | bytes) or not isinstance(fallbacks, Iterable):
            raise TypeError(
                "fallbacks must be a list of streamtap.Fallback values, e.g. "
                f"[streamtap.Fallback.model('gpt-4o-mini')], got {fallbacks!r}"
            )
        self.fallbacks = tuple(fallbacks)
        for fallback in self.fallbacks:
            if not isinstance(fallback, Fallback):
                raise TypeError(f"fallbacks must be streamtap.Fallback values, got {fallback!r}")
        self.caches: tuple[AnswerCache, ...] = tuple(f.cache for f in self.fallbacks if f.cache is not None)
        if recorders is None:
            from ._telemetry import default_recorders

            recorders = default_recorders()
        self.recorder = Fanout(_checked_recorders(recorders))
        if capture_content is None:
            from ._otel_content import capture_from_env  # one reading of the variable for all

            capture_content = capture_from_env()
        elif not isinstance(capture_content, bool):  # a string such as "false" would be true
            raise TypeError(
                "capture_content must be True, False or None (None reads "
                f"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT), got {capture_content!r}"
            )
        self.capture_content = capture_content
        # The answer is gathered for CallFinished when the engine captures content, or when a
        # recorder was built to capture it whatever the engine says.
        self.captures_answers = capture_content or any(
            getattr(recorder, "capture_content", None) is True for recorder in self.recorder.recorders
        )
        self.verify_events = verify_events
        # Whether each call keeps all it delivered (see `Call.delivered`).
        self.keeps_delivered = keep_text or bool(self.caches) or self.captures_answers
        self.clock = clock
        self.wall = wall
        self.rng = rng
        self.budget = RetryBudget(self.policy.budget, clock=clock)
        self.id = next(_ENGINE_IDS)
        self.breakers = Breakers(
            self.policy.breaker,
            clock=clock,
            # The recorder's, not a method of the engine's: the breakers would then hold the
            # engine that holds them, a reference cycle per instrumented client.
            on_transition=functools.partial(_breaker_moved, self.recorder, self.id),
            # A timer counts real seconds: an injected clock's breakers move at their next call.
            schedule=start_timer if clock is time.monotonic else None,
        )
        weakref.finalize(self, _breakers_gone, self.recorder, self.id, self.breakers).atexit = False
        # Now, never from a finalizer: the recording that finalizers hand over is done there.
        WORKER.start()

    def start_call(
        self, api: Api, suffix: str, url: str, body: dict[str, Any], content: bytes | None = None
    ) -> Call:
        """Begin a logical call (emits CallStarted, deposits in the retry budget).

        Args:
            api: which dialect.
            suffix: the API path ("/chat/completions" or "/responses"), for upstream fallbacks.
            url: the upstream URL, with the caller's query (every attempt and retrieval keeps it).
            body: the parsed JSON request.
            content: the request's bytes, when `body` was parsed from them (sent as they are).
        """
        model = body.get("model")
        model = model if isinstance(model, str) else ""
        stream = body.get("stream") is True
        authority = upstream_of(url).partition("://")[2]
        if authority.startswith("["):  # an IPv6 literal: server.address has no brackets
            host, _, port = authority[1:].partition("]")
            port = port[1:]
        else:
            host, _, port = authority.partition(":")
        call_id = next(_CALL_IDS)
        started = CallStarted(
            call_id,
            api,
            model,
            stream,
            host,
            int(port) if port.isdigit() else _default_port(url),
            body,
            self.capture_content,
        )
        observer = self.recorder.start_call(started)
        self.budget.deposit()
        primary = Route(url, upstream_of(url), model, body, stream, content=content)
        return Call(
            self,
            call_id=call_id,
            api=api,
            dialect=dialect_for(api),
            primary=primary,
            suffix=suffix,
            observer=observer,
            started_at=self.clock(),
        )


_RECORDER_METHODS = ("start_call", "breaker_changed", "telemetry_failed")


def _checked_recorders(recorders: object) -> Sequence[Recorder]:
    """The recorders, or a TypeError now: one that is not a recorder would fail every call silently."""
    if _is_recorder(recorders) or isinstance(recorders, str | bytes) or not isinstance(recorders, Iterable):
        raise TypeError(
            "recorders must be a list of recorders, e.g. streamtap.setup_telemetry() or "
            f"[streamtap.PrometheusRecorder()], or [] for none; got {recorders!r}"
        )
    checked = tuple(recorders)
    for index, recorder in enumerate(checked):
        if not _is_recorder(recorder):
            raise TypeError(
                f"recorders[{index}] must be a streamtap Recorder (with {', '.join(_RECORDER_METHODS)}), "
                f"got {recorder!r}"
            )
    return checked


def _is_recorder(value: object) -> bool:
    return all(callable(getattr(value, name, None)) for name in _RECORDER_METHODS)


def parse_body(content: bytes) -> dict[str, Any] | None:
    """The JSON object of a request body, or None when it is not one (passed through)."""
    try:
        body = parse_json(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _default_port(url: str) -> int:
    return 443 if url.startswith("https://") else 80

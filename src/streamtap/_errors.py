"""The error taxonomy: what broke, in which phase, and whether a retry may help. Pure.

`Failure` is what an attempt ends with; the exceptions are what a caller sees.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import httpx2
import openai

from ._json import parse_json
from ._taxonomy import ErrorType, Phase

# Client errors that no retry fixes; everything else that is an error status may be transient.
_NOT_RETRYABLE = frozenset({400, 401, 403, 404, 422})
# 4xx other than 408/429 are the caller's fault, and a redirect (3xx) is where the caller's base
# URL points: they do not count against the breaker.
_BREAKER_NEUTRAL = frozenset(range(300, 500)) - {408, 429}

# Upstream error-event codes (chat `error.code`/`error.type`, responses `code`) that a retry may fix.
_TRANSIENT_EVENT_CODES = frozenset(
    {
        "server_error",
        "internal_error",
        "rate_limit_exceeded",
        "rate_limit_error",
        "overloaded",
        "overloaded_error",
        "service_unavailable",
        "timeout",
        "engine_overloaded",
        "too_many_requests",
    }
)
# Upstream error-event codes that blame the request, not the upstream (the event twins of a
# 400): they do not count against the circuit breaker every caller of the upstream shares.
_CALLER_EVENT_CODES = frozenset(
    {"context_length_exceeded", "invalid_prompt", "invalid_request_error", "content_filter"}
)
# Error codes of an error status that blame the caller's account, not the upstream: a 429
# `insufficient_quota` is an account out of credit, not a rate (OpenAI sends it as both the
# error's code and its type). No wait fixes it, and the upstream still serves every other key:
# not retried, and neutral to the circuit breaker those keys share (as a revoked key's 401 is).
_ACCOUNT_CODES = frozenset({"insufficient_quota"})
# An error code that telemetry may carry: an identifier, never free text.
_ERROR_CODE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True, slots=True)
class Failure:
    """How one attempt failed."""

    error_type: ErrorType
    phase: Phase
    retryable: bool
    message: str
    status_code: int | None = None
    # Whether the upstream is to blame (counts against the circuit breaker).
    counts_for_breaker: bool = True
    # An upstream error event's error object (its code, message, type, param): the `body` the
    # SDK would have given the caller's APIError.
    body: Mapping[str, Any] | None = field(default=None, compare=False)
    # The caller's own read timeout (the SDK's `timeout=`) ran out, shorter than streamtap's:
    # raised as `StreamTimedOut`, which `except openai.APITimeoutError` catches, as without us.
    callers_timeout: bool = field(default=False, compare=False)
    # The upstream's error code (its `code`, else its `type`: `insufficient_quota`, ...), when it
    # is a plain identifier (`error_code`); for telemetry, not for decisions.
    code: str | None = field(default=None, compare=False)


def status_error_type(status: int) -> ErrorType:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    if 400 <= status < 500:
        return "bad_request"
    return "other"


def classify_status(
    status: int, headers: Mapping[str, str], should_retry: bool | None, code: str | None = None
) -> Failure:
    """A status that is no answer (not 2xx). `should_retry` is the upstream's x-should-retry
    override, if any; `code` is the error body's code (`api_error_code`)."""
    retryable = status in (408, 409, 429) or status >= 500
    if status in _NOT_RETRYABLE or code in _ACCOUNT_CODES:
        retryable = False
    if should_retry is not None:
        retryable = should_retry
    return Failure(
        error_type=status_error_type(status),
        phase="headers",
        retryable=retryable,
        message=f"upstream answered HTTP {status}" + (f" ({code})" if code else ""),
        status_code=status,
        counts_for_breaker=status not in _BREAKER_NEUTRAL and code not in _ACCOUNT_CODES,
        code=error_code(code),
    )


def api_error_code(body: bytes) -> str | None:
    """The `error.code` (else `error.type`) of an OpenAI error body, or None when it has none."""
    try:
        error = parse_json(body).get("error")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        return None
    if not isinstance(error, Mapping):
        return None
    code = error.get("code") or error.get("type")
    return code if isinstance(code, str) and code else None


# What sending an attempt or reading its body raises when the connection or its bytes fail:
# httpx2's transport errors, a body whose content-encoding breaks (DecodingError), and the TLS
# failures httpcore's anyio backend lets through unmapped (a bad record mid-stream: the SDK
# catches the same two, pending httpx2#854). Each is the attempt's failure, never the caller's
# exception as it came: after the first token it is a StreamInterrupted, counted as an error.
CONNECTION_ERRORS: Final = (httpx2.TransportError, httpx2.DecodingError, ssl.SSLError, anyio.EndOfStream)


def classify_exception(error: BaseException, *, phase: Phase) -> Failure:
    """A transport exception, before headers (`connect`) or while reading the body."""
    if phase == "connect":
        timeout = isinstance(error, httpx2.TimeoutException)
        return Failure(
            error_type="timeout" if timeout else "connection",
            phase="connect",
            retryable=True,
            message=f"{type(error).__name__}: {error}",
        )
    return Failure(
        error_type="stream_interrupted",
        phase=phase,
        retryable=phase != "streaming",
        message=f"the connection broke mid-stream ({type(error).__name__}: {error})",
    )


def classify_error_event(payload: Mapping[str, Any], phase: Phase) -> Failure:
    """An upstream error event: chat `{"error": {...}}`, responses `error` or `response.failed`."""
    error = payload.get("error")
    if isinstance(error, str):  # `{"error": "..."}`, as some servers write it
        error = {"message": error}
    if not isinstance(error, Mapping):
        error = (
            payload.get("response", {}).get("error") if isinstance(payload.get("response"), Mapping) else None
        )
    if not isinstance(error, Mapping):
        # A responses `error` event carries the error's fields itself; its `type` names the
        # event, not the error (which an SDK's APIError.type would then read as "error").
        error = {key: payload.get(key) for key in ("message", "type", "param", "code")}
        if error["type"] == "error":
            error["type"] = None
    code = _event_code(error)
    message = str(error.get("message") or "the upstream sent an error event")
    return Failure(
        error_type="upstream_error_event",
        phase=phase,
        retryable=phase != "streaming" and code.lower() in _TRANSIENT_EVENT_CODES,
        message=f"upstream error event {code or '(no code)'}: {message}",
        counts_for_breaker=code.lower() not in _CALLER_EVENT_CODES,
        body=error,
        code=error_code(code),
    )


def error_code(code: str | None) -> str | None:
    """`code` when it is a plain identifier of at most 64 characters, else None: what an
    upstream says reaches telemetry only in a shape that cannot carry a message or a secret."""
    return code if code is not None and _ERROR_CODE.fullmatch(code) else None


def unframed(rest: bytes, phase: Phase) -> Failure:
    """Why a stream that ended with `rest` unframed failed: a server that answers a stream's
    request with a bare JSON error (no `data:`) gets its own error, not a cut event."""
    try:
        payload = parse_json(rest)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), (Mapping, str)) and payload["error"]:
        return classify_error_event(payload, phase)
    return failure("stream_truncated", phase, "the stream ended inside an event")


def _event_code(error: Mapping[str, Any]) -> str:
    return str(error.get("code") or error.get("type") or "")


def blames_request(failure: Failure) -> bool:
    """Whether `failure` is an upstream error event whose code blames the request, as a 400's
    would (context_length_exceeded, invalid_prompt, content_filter, ...)."""
    body = failure.body
    return (
        failure.error_type == "upstream_error_event"
        and body is not None
        and _event_code(body).lower() in _CALLER_EVENT_CODES
    )


def failure(
    error_type: ErrorType,
    phase: Phase,
    message: str,
    *,
    retryable: bool | None = None,
    counts_for_breaker: bool = True,
) -> Failure:
    """A failure the engine detected itself (truncation, stall, timeouts, bad bytes);
    `counts_for_breaker` False when the caller, not the upstream, is to blame."""
    if retryable is None:
        retryable = phase != "streaming" and error_type != "bad_request"
    return Failure(
        error_type=error_type,
        phase=phase,
        retryable=retryable,
        message=message,
        counts_for_breaker=counts_for_breaker,
    )


class _PicklableError(openai.APIError):
    """Pickles with its attributes (process pools, task queues), which the SDK's errors cannot.

    The default reduction calls the class with `args`, but these take keyword arguments only.
    The request crosses as its method and URL alone: its headers hold the API key.
    """

    request: httpx2.Request

    def __reduce__(self) -> tuple[Any, ...]:
        state = {**self.__dict__, "request": httpx2.Request(self.request.method, self.request.url)}
        return _unpickled, (type(self), self.args), state


def _unpickled(cls: type[_PicklableError], args: tuple[Any, ...]) -> _PicklableError:
    return cls.__new__(cls, *args)  # without __init__: pickle then restores the attributes


class StreamInterrupted(_PicklableError):
    """A stream failed after streamtap could no longer retry invisibly.

    Raised after the first content was delivered (the caller already has part of the answer),
    or when every attempt of a stream broke before its first content. Never a silent short
    answer, never duplicated text.

    An `openai.APIError`, as the plain SDK raises for an upstream error event that ends a stream
    (`error_type` "upstream_error_event"); any other break (the connection, a stall, a
    truncation, a timeout) raises a `StreamBroken`, a `StreamInterrupted` that is an
    `openai.APIConnectionError` too: `except openai.APIConnectionError` catches what the network
    did, never what the upstream said.

    Attributes:
        error_type: one of streamtap's error types, e.g. "stream_truncated" or "stall".
        attempts: how many upstream attempts the call made.
        text: the text delivered to the caller before the failure.
        phase: "first_token" (nothing delivered) or "streaming".
        body, code, type, param: the upstream's error object when an error event ended the
            stream, as the SDK's own `APIError` carries them; else None.
        request_id: the last attempt's `x-request-id` (what OpenAI's support asks for), as the
            SDK's `APIStatusError` carries it; None when that attempt got no response.
        response_id: the id of the background response (`background=True`) the call created,
            which may still run upstream, to retrieve or cancel; else None.
    """

    def __init__(
        self,
        *,
        request: httpx2.Request,
        error_type: ErrorType,
        phase: Phase,
        attempts: int,
        text: str,
        message: str,
        body: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        response_id: str | None = None,
    ) -> None:
        # APIError's own constructor (APIConnectionError's has no body): it reads code, type
        # and param from the body as the SDK does for an error event it raises itself.
        openai.APIError.__init__(self, f"streamtap: {error_type}: {message}", request, body=body)
        self.error_type: ErrorType = error_type
        self.phase: Phase = phase
        self.attempts = attempts
        self.text = text
        self.request_id = request_id
        self.response_id = response_id


class StreamBroken(StreamInterrupted, openai.APIConnectionError):
    """A `StreamInterrupted` whose stream broke (the connection, a stall, a truncation, a bad
    event, a timeout) rather than ended with the upstream's error event: an
    `openai.APIConnectionError` too."""


class StreamTimedOut(StreamBroken, openai.APITimeoutError):
    """The caller's own read timeout (the SDK's `timeout=`) ran out while reading a stream.

    A `StreamInterrupted` (error_type "timeout") that `except openai.APITimeoutError` catches as
    well, as it catches the plain SDK's error for the same timeout.
    """


class CircuitOpenError(_PicklableError, openai.APIConnectionError):
    """The circuit breaker for this upstream and model is open and no fallback served the call.

    Attributes:
        upstream, model: whose breaker is open.
        attempts: the attempts the call sent: 0, or its fallbacks' that failed (the breaker let
            none of its own route's go).
    """

    error_type: ErrorType = "circuit_open"

    def __init__(self, *, request: httpx2.Request, upstream: str, model: str, attempts: int = 0) -> None:
        super().__init__(
            message=f"streamtap: circuit_open: the circuit for {upstream} / {model} is open; failing fast",
            request=request,
        )
        self.upstream = upstream
        self.model = model
        self.attempts = attempts

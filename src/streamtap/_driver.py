"""What the sync and async drivers share: building attempts, reading answers, giving up.

Nothing here blocks; `_sync.py` and `_async.py` (with their bodies, `_sync_body.py` and
`_async_body.py`) are the thin loops that do the I/O.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol

import httpx2

from ._attempt import StreamAttempt
from ._backoff import should_retry_override
from ._call import Call
from ._errors import (
    CircuitOpenError,
    Failure,
    StreamBroken,
    StreamInterrupted,
    StreamTimedOut,
    api_error_code,
    classify_exception,
    classify_status,
    failure,
)
from ._fallback import IDENTITY_HEADERS, is_identity
from ._steps import ErrorResponse, RawHeaders, Send, Serve
from ._taxonomy import Outcome

# Headers that describe the upstream's encoding of the body, not the body the caller gets.
_BODY_HEADERS = frozenset({b"content-length", b"content-encoding", b"transfer-encoding"})
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"})


log = logging.getLogger("streamtap")
_http2_warned: list[bool] = []


def own_network_stream(upstream: httpx2.Response) -> Any:
    """The connection's network stream when this response has it to itself (HTTP/1.1), for the
    attempt's read deadlines (`deadline_reads`); None over HTTP/2, whose streams share it.

    There an override would hold every stream of the connection to this attempt's deadlines, so
    each stream's reads keep the bound its request was sent with (the shortest of the caller's
    read timeout, first_token_timeout and idle_timeout). httpcore fails every stream of an
    HTTP/2 connection when one read times out, which streamtap's short deadlines make likely:
    warned of once a process.
    """
    if upstream.extensions.get("http_version") == b"HTTP/2":
        if not _http2_warned:
            _http2_warned.append(True)
            log.warning(
                "streamtap: a streamed call went over HTTP/2: first_token_timeout and idle_timeout "
                "then bound each read, and when one read times out httpcore fails every stream of "
                "that connection; for streamed calls use HTTP/1.1, the SDK's default (http2=False)"
            )
        return None
    return upstream.extensions.get("network_stream")


def build_request(original: httpx2.Request, send: Send, call: Call) -> httpx2.Request:
    """The upstream request of one attempt, derived from the caller's request."""
    headers = httpx2.Headers(original.headers)
    # The caller's own bytes to the caller's URL (the usual first attempt) go as they are, with
    # the URL and body already encoded; anything else is encoded anew.
    same = send.url == str(original.url) and send.body is not None and send.body == original.content
    if not same:
        for name in ("content-length", "transfer-encoding", "host"):
            headers.pop(name, None)
    if send.route.api_key is not None:
        # The route's own key replaces the caller's identity whole: its credential in either
        # header (Azure's clients send theirs as `api-key`) and the organization and project it
        # bills, which another account's key is refused with and another upstream must not see.
        # A gateway's own credentials (`is_identity`) go on to the same gateway, whose other
        # provider the key may be for, and to no other host.
        elsewhere = httpx2.URL(send.url).netloc != original.url.netloc
        for name in [
            name for name in headers if name in IDENTITY_HEADERS or (elsewhere and is_identity(name))
        ]:
            headers.pop(name, None)
        headers["authorization"] = f"Bearer {send.route.api_key}"
    if send.method == "GET":
        headers.pop("content-type", None)
        headers["accept"] = "text/event-stream"
    # The SDK's own retries are off, so its retry-count header would always say 0.
    headers["x-stainless-retry-count"] = str(send.attempt)
    headers.update(send.carrier)
    timeouts = dict(original.extensions.get("timeout") or {})
    policy = call.engine.policy
    connect = timeouts.get("connect")
    timeouts["connect"] = policy.connect_timeout if connect is None else min(connect, policy.connect_timeout)
    if send.route.stream:
        # Until the headers arrive; while the body streams, the attempt's deadlines govern.
        limits = [t for t in (timeouts.get("read"), policy.first_token_timeout, policy.idle_timeout) if t]
        timeouts["read"] = min(limits) if limits else None
    if call.deadline is not None:
        remaining = max(call.deadline - call.engine.clock(), 0.001)
        for key in ("connect", "read", "write", "pool"):
            value = timeouts.get(key)
            timeouts[key] = remaining if value is None else min(value, remaining)
    extensions = {**original.extensions, "timeout": timeouts}
    if same:
        return httpx2.Request(
            send.method, original.url, headers=headers, stream=original.stream, extensions=extensions
        )
    return httpx2.Request(send.method, send.url, headers=headers, content=send.body, extensions=extensions)


class ReadDeadline(Protocol):
    """What bounds each socket read of a body (`deadline_reads`): a stream's attempt, whose
    deadlines move with its events, or a whole answer's `CallDeadline`."""

    def read_timeout(self, now: float) -> float | None: ...


class CallDeadline:
    """A whole answer's reads wait until the call's total_timeout at most. `build_request`
    bounds each read (by what was left of it when the request went, and for a stream answered
    whole by its first-token and idle timeouts): a body that trickles, each piece within that
    bound, would outlast the call's deadline. Each read waits the nearer of the two."""

    __slots__ = ("deadline", "per_read")

    def __init__(self, deadline: float, per_read: float | None) -> None:
        self.deadline = deadline
        self.per_read = per_read

    def read_timeout(self, now: float) -> float:
        left = max(self.deadline - now, 0.0)
        return left if self.per_read is None else min(left, self.per_read)

    @classmethod
    def of(cls, call: Call, upstream: httpx2.Response) -> CallDeadline | None:
        """The deadline of `upstream`'s body reads, or None: no total_timeout, or HTTP/2 (its
        streams share the connection's reads, `own_network_stream`)."""
        if call.deadline is None or upstream.extensions.get("http_version") == b"HTTP/2":
            return None
        return cls(call.deadline, caller_read_timeout(upstream.request))


def caller_read_timeout(request: httpx2.Request) -> float | None:
    """The caller's own read timeout (the SDK's `timeout=`): how long one read may block."""
    read = (request.extensions.get("timeout") or {}).get("read")
    return float(read) if isinstance(read, int | float) else None


def caller_headers(upstream: httpx2.Headers | None, call: Call, *, sse: bool) -> RawHeaders:
    """Headers of the response the caller gets: the upstream's, re-described, plus streamtap's.
    As bytes, as they came: a value that is not ASCII is the upstream's to send (the SDK takes
    it), and would not encode again from the text httpx2 decoded it to. A stream is labelled
    one, whatever its upstream said (a gateway may label one `application/json`)."""
    kind = upstream.get("content-type") if upstream is not None else None
    relabel = sse and kind is not None and not kind.lower().startswith("text/event-stream")
    items = [
        (k, v)
        for k, v in (upstream.raw if upstream is not None else ())
        if k.lower() not in _BODY_HEADERS
        and k.lower() not in _HOP_BY_HOP
        and not (relabel and k.lower() == b"content-type")
    ]
    if kind is None or relabel:
        items.append((b"content-type", b"text/event-stream; charset=utf-8" if sse else b"application/json"))
    items.append((b"x-streamtap-attempts", str(call.attempts).encode()))
    if call.served_by is not None:
        items.append((b"x-streamtap-fallback", call.served_by.kind.encode()))
    return items


def status_failure(response: httpx2.Response, body: bytes) -> Failure:
    headers = response.headers
    return classify_status(
        response.status_code, headers, should_retry_override(headers), api_error_code(body)
    )


def error_response(response: httpx2.Response, body: bytes) -> ErrorResponse:
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _BODY_HEADERS]
    return ErrorResponse(response.status_code, headers, body)


def new_stream_attempt(call: Call, send: Send, sent_at: float, headers_at: float) -> StreamAttempt:
    policy = call.engine.policy
    attempt = StreamAttempt(
        call.dialect,
        sent_at=sent_at,
        headers_at=headers_at,
        first_token_timeout=policy.first_token_timeout,
        idle_timeout=policy.idle_timeout,
        deadline=call.deadline,
        committed=send.resume,
        replayed_through=send.after,
        verify=call.engine.verify_events,
        choices=_choices(send.route.body) if call.api == "chat_completions" else None,
    )
    if send.resume and call.stream is not None:
        attempt.continues(call.stream)  # a resumed stream continues the committed one
        call.stream = attempt  # CallFinished reads the counters of the attempt that went on
    return attempt


def _choices(body: Mapping[str, Any]) -> int:
    """How many choices a chat request asks for (`n`, 1 when absent or unusable)."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def raw_chunks(upstream: httpx2.Response) -> Iterator[bytes] | None:
    """The body's bytes straight from the transport when it is not content-encoded.

    Skipping the response's decoding layers saves a generator hop and a copy per read on
    the hot path; an encoded body (rare for SSE) goes through `iter_bytes()`.
    """
    if upstream.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None
    stream = upstream.stream
    return iter(stream) if isinstance(stream, httpx2.SyncByteStream) else None


def araw_chunks(upstream: httpx2.Response) -> AsyncIterator[bytes] | None:
    """The async twin of `raw_chunks`."""
    if upstream.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None
    stream = upstream.stream
    return stream.__aiter__() if isinstance(stream, httpx2.AsyncByteStream) else None


def read_failure(attempt: StreamAttempt, error: Exception, now: float) -> Failure:
    """Classify an exception raised while reading an attempt's body."""
    if isinstance(error, httpx2.TimeoutException):
        return attempt.timed_out(now)
    return classify_exception(error, phase=attempt.phase)


def connect_failure(error: Exception, call: Call, send: Send, request: httpx2.Request) -> Failure:
    """Why an attempt got no response headers.

    A read timeout there is the request sent and no answer in time: the bound `build_request`
    set ran out, and it is named as the same bound is once the headers are in. Of the caller's
    read timeout (its impatience: breaker-neutral), the policy's first_token_timeout and
    idle_timeout (a stream's) and what was left of the call's total_timeout, the shortest ran
    out; at a tie, streamtap's own.
    """
    if isinstance(error, httpx2.ReadTimeout):
        policy = call.engine.policy
        stream = send.route.stream
        bounds: list[tuple[float | None, Failure]] = [
            (policy.first_token_timeout if stream else None,
             failure("first_token_timeout", "connect", "no response headers within first_token_timeout")),
            (policy.idle_timeout if stream else None,
             failure("stall", "connect", "no response headers within idle_timeout")),
            (None if call.deadline is None else call.deadline - call.sent_at(send, call.deadline),
             failure("timeout", "connect", "the call's total_timeout ran out")),
            (caller_read_timeout(request),
             failure("timeout", "connect", "no response headers within the caller's read timeout",
                     counts_for_breaker=False)),
        ]  # fmt: skip
        set_bounds = [(limit, failed) for limit, failed in bounds if limit is not None]
        if set_bounds:
            return min(set_bounds, key=lambda bound: bound[0])[1]  # the first of equals: own
    if isinstance(error, httpx2.PoolTimeout):
        # The client's own pool had no connection free in its pool timeout: nothing was sent,
        # and the upstream is not to blame. A retry may find one (as the SDK's would).
        return failure(
            "timeout", "connect", "no free connection in the client's pool", counts_for_breaker=False
        )
    return classify_exception(error, phase="connect")


def callers_read_timeout(error: Exception, call: Call, send: Send, request: httpx2.Request) -> bool:
    """Whether `error` is the caller's own read timeout (the SDK's `timeout=`) running out.

    `build_request` bounds the reads before the headers (and of a non-streamed body) by the
    shortest of the caller's read timeout, the policy's first-token and idle timeouts (for a
    stream) and what is left of the call's total_timeout. When the caller's is shorter than all
    of streamtap's own, it is what ran out: the caller's impatience, which must not count
    against the circuit breaker every caller of the upstream shares.
    """
    caller = caller_read_timeout(request)
    if not isinstance(error, httpx2.ReadTimeout) or caller is None:
        return False
    policy = call.engine.policy
    own = [policy.first_token_timeout, policy.idle_timeout] if send.route.stream else []
    if call.deadline is not None:
        own.append(call.deadline - call.sent_at(send, call.deadline))
    return all(caller < limit for limit in own if limit is not None)


def whole_response(
    status: int,
    headers: RawHeaders,
    body: bytes,
    request: httpx2.Request,
    extensions: Mapping[str, Any] | None = None,
) -> httpx2.Response:
    """A response holding `body` whole, still unread, as a transport's would be, with the
    `extensions` of the upstream's answer it stands for (its HTTP version, reason phrase and
    connection, as the plain SDK's response has them).

    Built with `content=`, it would be read and closed already, and the client that returns it
    would never close it, so its `.elapsed` (set at close) would raise.
    """
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    return httpx2.Response(
        status, headers=headers, stream=httpx2.ByteStream(body), request=request, extensions=extensions
    )


def served(step: Serve, call: Call, request: httpx2.Request) -> httpx2.Response:
    call.delivered.append(step.body)
    call.delivered_whole(call.engine.clock())
    return whole_response(200, caller_headers(None, call, sse=step.stream), step.body, request)


def give_up(call: Call, request: httpx2.Request) -> httpx2.Response:
    """The call cannot be served: the caller gets what the SDK would have raised without us."""
    exception = call.exception
    call.finish("error", call.engine.clock())
    if call.error_response is not None:
        err = call.error_response
        headers = [(k, v) for k, v in err.headers if k.lower() != b"x-should-retry"]
        # The engine has retried as far as its policy lets it: a client behind the proxy (its
        # SDK's own retries on) must not start over, each round another set of attempts.
        headers += [(b"x-should-retry", b"false"), (b"x-streamtap-attempts", str(call.attempts).encode())]
        if call.background_id is not None:  # it may still run upstream: the caller's to retrieve
            headers.append((b"x-streamtap-response-id", call.background_id.encode("utf-8", "replace")))
        return whole_response(err.status_code, headers, err.body, request)
    if exception is not None and call.background_id is None:
        try:
            raise exception
        finally:
            exception = None  # its traceback holds this frame: no reference cycle through it
    # Else, with a background response that may still run, a StreamInterrupted that names it.
    exception = None
    if call.last_failure is not None:
        raise interrupted(call, request, call.last_failure)
    raise CircuitOpenError(
        request=request, upstream=call.primary.upstream, model=call.primary.model, attempts=call.attempts
    )


def interrupted(call: Call, request: httpx2.Request, failure_: Failure) -> StreamInterrupted:
    """What the caller gets for `failure_`: an upstream error event's is an `openai.APIError`
    (as the plain SDK raises), a break's a connection error (`StreamBroken`)."""
    raised: type[StreamInterrupted]
    if failure_.callers_timeout:
        raised = StreamTimedOut
    elif failure_.error_type == "upstream_error_event":
        raised = StreamInterrupted
    else:
        raised = StreamBroken
    return raised(
        request=request,
        error_type=call.error_type,
        phase=failure_.phase,
        attempts=call.attempts,
        text=call.delivered_text() if call.committed else "",
        message=failure_.message,
        body=failure_.body,
        request_id=call.request_id,
        response_id=call.background_id,
    )


def ttft(attempt: StreamAttempt) -> float | None:
    """An attempt's time to first content, from sending it; None before any content."""
    return attempt.first_content_at - attempt.sent_at if attempt.first_content_at is not None else None


def undecodable(call: Call, send: Send | None, attempt: StreamAttempt | None, reason: Failure) -> None:
    """The SDK could not decode an event of the attempt in flight: it failed, and the call."""
    if send is not None and attempt is not None:
        call.attempt_failed(
            send,
            reason,
            now=call.engine.clock(),
            wall=call.engine.wall(),
            time_to_first_token=ttft(attempt),
            status_code=200,
        )
    call.last_failure = reason
    call.finish("error", call.engine.clock())


def caller_failure() -> Failure | None:
    """When the caller closes a stream while an exception unwinds: did the SDK fail to decode?

    The SDK decodes and parses events after streamtap released them (content events past the
    commit point go to it unparsed); if an event is not UTF-8, not JSON or not its model, its
    generator closes the response while that error is in flight, and the call is the
    upstream's error, not a cancel. The same errors raised by the caller's own code (a
    `with stream:` block left by one) are a cancel like any other exit.
    """
    error = sys.exc_info()[1]
    if error is None:
        return None
    if (
        not isinstance(error, (json.JSONDecodeError, UnicodeDecodeError))
        and type(error).__name__ != "ValidationError"
    ):
        return None
    if not _raised_in_sdk(error.__traceback__):
        return None
    return failure("bad_response", "streaming", f"the SDK could not decode an event ({error})")


def _raised_in_sdk(traceback: TracebackType | None) -> bool:
    while traceback is not None:
        if str(traceback.tb_frame.f_globals.get("__name__", "")).startswith("openai."):
            return True
        traceback = traceback.tb_next
    return False


def stopped_under(call: Call) -> Failure:
    """Why a call the server stopped while its caller was still there failed: the caller got
    an error (a stream's error event, else a 503), not an answer, and no upstream is to blame."""
    if call.committed:
        return failure(
            "stream_interrupted", "streaming", "the proxy shut down before the stream ended",
            counts_for_breaker=False,
        )  # fmt: skip
    return failure(
        "other", "first_token", "the proxy shut down before the upstream answered", counts_for_breaker=False
    )


def dropped_outcome(call: Call) -> Outcome:
    """The outcome of a committed stream garbage-collected before it finished: `abandoned` when
    the caller never read it, else `cancelled` (it stopped early, as by a loop's `break`)."""
    return "cancelled" if call.delivered else "abandoned"

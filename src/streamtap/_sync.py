"""The synchronous driver: runs a Call over an httpx2 transport, blocking."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import httpx2

from ._attempt import StreamAttempt
from ._call import Call
from ._driver import (
    MAX_BODY,
    body_answer,
    body_failure,
    build_request,
    caller_failure,
    caller_headers,
    caller_read_timeout,
    callers_read_timeout,
    connect_failure,
    dropped_outcome,
    error_response,
    give_up,
    interrupted,
    new_stream_attempt,
    raw_chunks,
    read_failure,
    served,
    status_failure,
    ttft,
    undecodable,
    whole_response,
)
from ._errors import failure
from ._steps import GiveUp, Send, Serve, Wait
from ._stream_response import DirectSyncBody, StreamResponse


def send_sync(call: Call, transport: httpx2.BaseTransport, request: httpx2.Request) -> httpx2.Response:
    """Run `call` until it commits, is answered, or gives up."""
    call.scope_cache(request.headers)
    live = _Live(call, transport, request)
    try:
        while True:
            step = call.next()
            if isinstance(step, Wait):
                time.sleep(step.seconds)
            elif isinstance(step, Serve):
                answer = served(step, call, request)
                call.finish("ok", call.engine.clock())
                return answer
            elif isinstance(step, GiveUp):
                return give_up(call, request)
            else:
                response = live.try_send(step)
                if response is not None:
                    return response
    except BaseException as error:
        live.abort(error)
        raise


class _Live:
    """The state of one call's current attempt; what a stream's finalizer may touch."""

    def __init__(self, call: Call, transport: httpx2.BaseTransport, request: httpx2.Request) -> None:
        self.call = call
        self.transport = transport
        self.request = request
        self.send: Send | None = None
        self.attempt: StreamAttempt | None = None
        self.upstream: httpx2.Response | None = None
        self.chunks: Iterator[bytes] | None = None
        self.restore: Callable[[], None] | None = None

    def open(self, send: Send) -> httpx2.Response | None:
        """Send one attempt; its response when 2xx, else None (the failure is recorded)."""
        call = self.call
        clock = call.engine.clock
        upstream_request = build_request(self.request, send, call)
        call.sending(send, clock())
        try:
            upstream = self.transport.handle_request(upstream_request)
        except httpx2.TransportError as error:
            call.attempt_failed(
                send,
                connect_failure(error, callers_read_timeout(error, call, send, self.request)),
                now=clock(),
                wall=call.engine.wall(),
                exception=error,
            )
            return None
        if upstream.status_code < 400:
            return upstream
        try:
            raw = upstream.read()
        except httpx2.TransportError:
            raw = b""
        finally:
            upstream.close()
        call.attempt_failed(
            send,
            status_failure(upstream, raw),
            now=clock(),
            wall=call.engine.wall(),
            headers=upstream.headers,
            error_response=error_response(upstream, raw),
        )
        return None

    def try_send(self, send: Send) -> httpx2.Response | None:
        """One attempt before commit: the caller's response once committed, else None."""
        call = self.call
        clock = call.engine.clock
        upstream = self.open(send)
        if upstream is None:
            return None
        if not send.route.stream:
            return self._answer(send, upstream)
        self._begin(send, upstream)
        attempt = self.attempt
        assert attempt is not None
        first = b""
        while not attempt.committed and attempt.failure is None:
            chunk = self.read()
            if chunk is None:
                break
            first = attempt.feed(chunk, clock())
        if attempt.committed:
            call.committed_at(send, attempt, attempt.first_content_at or clock())
            body = _SyncBody(self, first)
            headers = caller_headers(upstream.headers, call, sse=True)
            return StreamResponse(
                upstream.status_code,
                headers=headers,
                stream=body,
                request=self.request,
                extensions={"http_version": upstream.extensions.get("http_version", b"HTTP/1.1")},
            )
        assert attempt.failure is not None
        self.close_upstream()
        call.attempt_failed(
            send,
            attempt.failure,
            now=clock(),
            wall=call.engine.wall(),
            status_code=upstream.status_code,
            response_id=attempt.facts.response_id,
        )
        return None

    def _answer(self, send: Send, upstream: httpx2.Response) -> httpx2.Response | None:
        call = self.call
        clock = call.engine.clock
        try:
            raw = b"".join(_bounded(upstream.iter_bytes()))
        except (httpx2.TransportError, ValueError) as error:
            self.upstream = upstream
            self.close_upstream()
            call.attempt_failed(
                send,
                body_failure(error, callers_read_timeout(error, call, send, self.request)),
                now=clock(),
                wall=call.engine.wall(),
                status_code=upstream.status_code,
            )
            return None
        finally:
            upstream.close()
        answer = body_answer(call, send, upstream, raw)
        if not isinstance(answer, tuple):
            call.attempt_failed(
                send, answer, now=clock(), wall=call.engine.wall(), status_code=upstream.status_code
            )
            return None
        content, body = answer
        call.attempt_ok(send, clock(), upstream.status_code, None)
        call.delivered.append(content)
        call.delivered_whole(clock())
        response = whole_response(
            upstream.status_code,
            caller_headers(
                upstream.headers if not call.primary.stream else None, call, sse=call.primary.stream
            ),
            content,
            self.request,
        )
        call.finish("ok", clock(), body=body)
        return response

    def _begin(self, send: Send, upstream: httpx2.Response) -> None:
        call = self.call
        clock = call.engine.clock
        self.send = send
        self.upstream = upstream
        self.attempt = attempt = new_stream_attempt(call, send, call.sent_at(send, clock()), clock())
        self.chunks = raw_chunks(upstream) or upstream.iter_bytes()
        self.restore = _deadline_reads(upstream, attempt, clock, caller_read_timeout(self.request))

    def read(self) -> bytes | None:
        """The next chunk, or None at the end or on failure (then attempt.failure is set)."""
        attempt = self.attempt
        assert attempt is not None and self.chunks is not None
        try:
            return next(self.chunks)
        except StopIteration:
            attempt.end()
        except httpx2.TransportError as error:
            attempt.broke(read_failure(attempt, error, self.call.engine.clock()))
        return None

    def resume(self) -> bool:
        """After a failure past commit: continue the stream from another attempt, if the call may."""
        call = self.call
        while True:
            step = call.next()
            if isinstance(step, Wait):
                time.sleep(step.seconds)
            elif isinstance(step, Send):
                upstream = self.open(step)
                if upstream is not None:
                    self._begin(step, upstream)
                    return True
            else:
                return False

    def close_upstream(self) -> None:
        restore, self.restore = self.restore, None
        if restore is not None:
            restore()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()

    def abort(self, error: BaseException | None) -> None:
        """The caller stopped (or the engine failed): finalise once and release the connection."""
        call = self.call
        try:
            self.close_upstream()
        finally:
            if not call.finished:
                reason = caller_failure()
                if reason is not None:
                    undecodable(call, self.send, self.attempt, reason)
                elif error is None or isinstance(error, (KeyboardInterrupt, GeneratorExit)):
                    call.finish("cancelled", call.engine.clock())
                else:
                    call.last_failure = failure(
                        "other", "streaming" if call.committed else "first_token", repr(error)
                    )
                    call.finish("error", call.engine.clock())


class _SyncBody(DirectSyncBody):
    """The committed stream the caller reads: released frames, then the rest as it arrives."""

    def __init__(self, live: _Live, first: bytes) -> None:
        self._live = live
        self._first = first
        # Garbage-collected unfinished: the call is abandoned (never read) or cancelled (left in
        # a loop's `break`), the connection released.
        self._finalizer = weakref.finalize(self, _abandon, live)

    def __iter__(self) -> Iterator[bytes]:
        return self.reads(None)

    def passed_bytes(self) -> int:
        return sum(map(len, self._live.call.delivered))

    def reads(self, response: httpx2.Response | None) -> Iterator[bytes]:
        """The committed stream, read by `response` itself, or (None) through httpx2's layers.

        Read by its response (`StreamResponse.iter_bytes`), it also does what those layers
        would: it names the caller's request on an httpx2 error and closes the response at
        the end. Then one generator lies between the caller and the upstream's reads.
        """
        live = self._live
        call = live.call
        clock = call.engine.clock
        delivered = call.delivered
        try:
            first, self._first = self._first, b""
            if first:
                delivered.append(first)
                yield first
            while True:
                attempt = live.attempt
                assert attempt is not None and live.send is not None
                assert live.chunks is not None
                feed = attempt.feed
                stamp = attempt.stamps.append
                deadline = attempt.deadline
                lane = attempt.lane
                # The read that committed may also have failed (an error or a bad event after
                # the first content): then the caller gets what came before it, the failure,
                # and nothing read after it (`end` keeps the failure).
                chunks = live.chunks if attempt.failure is None else ()
                try:
                    for chunk in chunks:
                        now = clock()
                        # The hot path: a read that is one more ordinary content frame of this
                        # stream (`lane` is its shape, once the attempt has learnt it), noted
                        # by its time alone (`stamps`, counted when the counters are read).
                        if lane is not None and now < deadline and lane.fits(chunk):
                            stamp(now)
                            delivered.append(chunk)
                            yield chunk
                            continue
                        out = feed(chunk, now)
                        lane = attempt.lane
                        if out:
                            delivered.append(out)
                            yield out
                        if attempt.failure is not None:
                            break
                    else:
                        attempt.end()
                except httpx2.TransportError as error:
                    attempt.broke(read_failure(attempt, error, clock()))
                live.close_upstream()
                if attempt.failure is None:
                    call.attempt_ok(live.send, clock(), 200, ttft(attempt))
                    call.finish("ok", clock())
                    self._finalizer.detach()
                    return
                failed = attempt.failure
                call.attempt_failed(
                    live.send,
                    failed,
                    now=clock(),
                    wall=call.engine.wall(),
                    time_to_first_token=ttft(attempt),
                    status_code=200,
                )
                if not live.resume():
                    call.finish("error", clock())
                    self._finalizer.detach()
                    raise interrupted(call, live.request, call.last_failure or failed)
        except httpx2.RequestError as error:
            if response is not None:
                error.request = live.request
            raise
        finally:
            if response is not None:
                response.close()

    def close(self) -> None:
        self._finalizer.detach()
        live = self._live
        attempt = live.attempt
        if (
            attempt is not None
            and attempt.terminal
            and attempt.failure is None
            and live.send
            and not live.call.finished
        ):
            # The SDK stops reading at the terminal event and closes: that is a complete answer.
            live.close_upstream()
            call = live.call
            call.attempt_ok(live.send, call.engine.clock(), 200, ttft(attempt))
            call.finish("ok", call.engine.clock())
        live.abort(None)


def _abandon(live: _Live) -> None:
    if not live.call.finished:
        live.close_upstream()
        live.call.finish(dropped_outcome(live.call), live.call.engine.clock())


def _bounded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError(f"the answer exceeds {MAX_BODY} bytes")
        yield chunk


# The shortest time a socket read is given. A deadline already passed leaves 0, and a socket
# given 0 is non-blocking: with no bytes waiting its read fails as a broken connection
# (BlockingIOError, `stream_interrupted`) instead of timing out as the async driver's does.
SHORTEST_READ = 1e-3


def _deadline_reads(
    upstream: httpx2.Response, attempt: StreamAttempt, clock: Callable[[], float], cap: float | None
) -> Callable[[], None] | None:
    """Make every socket read of this body wait only until the attempt's next deadline.

    httpcore fixes a body's read timeout once per response, but the deadline moves: the first
    token deadline applies until commit, the idle deadline after every event. So the
    connection's network stream gets a per-instance `read` for the life of this body. `cap`
    is the caller's own read timeout, which bounds every read as it would without streamtap.
    """
    stream: Any = upstream.extensions.get("network_stream")
    read = getattr(type(stream), "read", None)
    if stream is None or read is None or not hasattr(stream, "__dict__"):
        return None

    def deadline_read(max_bytes: int, timeout: float | None = None) -> bytes:
        # Inline, not a helper: this runs for every read of the body (a function call and a
        # max() per read cost about 0.25 µs here by timeit, an eighth of the 2 µs per-chunk goal).
        limit = attempt.read_timeout(clock())
        if limit is None:
            limit = timeout
        elif cap is not None and cap < limit:
            limit = cap  # the caller's own read timeout (the SDK's `timeout=`) still applies
        if limit is not None and limit < SHORTEST_READ:
            limit = SHORTEST_READ
        return read(stream, max_bytes, limit)  # type: ignore[no-any-return]

    stream.read = deadline_read
    return lambda: stream.__dict__.pop("read", None)

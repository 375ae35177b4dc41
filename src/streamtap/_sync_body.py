"""The sync driver's committed stream: the body the caller reads, and the reads under it.

`SyncBody.reads` is the per-chunk hot path (docs/benchmarks.md); what it calls is a module
global here, as it was in `_sync.py`, so moving it cost no lookup. The attempt loop that makes
this body is `_sync.py`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx2

from ._driver import ReadDeadline, dropped_outcome, interrupted, own_network_stream, read_failure, ttft
from ._errors import CONNECTION_ERRORS
from ._stream_response import DirectSyncBody
from ._whole import MAX_BODY, MAX_ERROR_BODY, reads_as_events

if TYPE_CHECKING:
    from ._sync import Live


class SyncBody(DirectSyncBody):
    """The committed stream the caller reads: released frames, then the rest as it arrives."""

    def __init__(self, live: Live, first: bytes) -> None:
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
                except CONNECTION_ERRORS as error:
                    if live.stopped:
                        raise
                    attempt.broke(read_failure(attempt, error, clock()))
                live.close_upstream()
                if live.stopped and attempt.failure is not None:
                    # Closed by the caller while read: its close counts the call.
                    raise httpx2.ReadError("the stream was closed while it was being read")
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
        live.stopped = True
        attempt = live.attempt
        if (
            attempt is not None
            and attempt.whole
            and attempt.failure is None
            and live.send
            and not live.call.finished
        ):
            # The SDK stops reading at the terminal event and closes, or the caller once every
            # choice finished (`[DONE]` unread): that is a complete answer, as the proxy counts it.
            live.close_upstream()
            call = live.call
            call.attempt_ok(live.send, call.engine.clock(), 200, ttft(attempt))
            call.finish("ok", call.engine.clock())
        live.abort(None)


def _abandon(live: Live) -> None:
    if not live.call.finished:
        live.close_upstream()
        live.call.finish(dropped_outcome(live.call), live.call.engine.clock())


def peek(chunks: Iterator[bytes]) -> tuple[bytes, bool]:
    """The first bytes of a body labelled JSON but answered to a stream's request, read until they
    tell (`reads_as_events`), and whether the body is an event stream."""
    head = b""
    for chunk in chunks:
        head += chunk
        events = reads_as_events(head)
        if events is not None:
            return head, events
    return head, bool(reads_as_events(head, whole=True))


def bounded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError(f"the answer exceeds {MAX_BODY} bytes")
        yield chunk


def error_body(chunks: Iterator[bytes]) -> bytes:
    """An error status's body, as far as `MAX_ERROR_BODY` (the rest is not read)."""
    kept = b""
    try:
        for chunk in chunks:
            kept += chunk
            if len(kept) >= MAX_ERROR_BODY:
                break
    finally:
        close = getattr(chunks, "close", None)  # a generator left part read is closed, not collected
        if close is not None:
            close()
    return kept[:MAX_ERROR_BODY]


# The shortest time a socket read is given. A deadline already passed leaves 0, and a socket
# given 0 is non-blocking: with no bytes waiting its read fails as a broken connection
# (BlockingIOError, `stream_interrupted`) instead of timing out as the async driver's does.
SHORTEST_READ = 1e-3


def deadline_reads(
    upstream: httpx2.Response, attempt: ReadDeadline, clock: Callable[[], float], cap: float | None
) -> Callable[[], None] | None:
    """Make every socket read of this body wait only until the attempt's next deadline (a
    whole answer's: the call's, `CallDeadline`).

    httpcore fixes a body's read timeout once per response, but the deadline moves: the first
    token deadline applies until commit, the idle deadline after every event. So the
    connection's network stream gets a per-instance `read` for the life of this body. `cap`
    is the caller's own read timeout, which bounds every read as it would without streamtap.
    """
    stream: Any = own_network_stream(upstream)
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

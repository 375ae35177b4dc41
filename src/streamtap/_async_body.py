"""The async twin of `_sync_body.py`: the committed stream's body and the reads under it.

`AsyncBody.areads` is the per-chunk hot path (docs/benchmarks.md); what it calls is a module
global here, as it was in `_async.py`. The attempt loop that makes this body is `_async.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpcore2
import httpx2

from ._driver import ReadDeadline, dropped_outcome, interrupted, own_network_stream, read_failure, ttft
from ._errors import CONNECTION_ERRORS
from ._stream_response import DirectAsyncBody
from ._whole import MAX_BODY, MAX_ERROR_BODY, reads_as_events

if TYPE_CHECKING:
    from ._async import Live


class AsyncBody(DirectAsyncBody):
    """The committed stream the caller reads: released frames, then the rest as it arrives."""

    def __init__(self, live: Live, first: bytes) -> None:
        self._live = live
        self._first = first
        # Garbage-collected unfinished: the call is abandoned (never read) or cancelled (left in
        # a loop's `break`), the connection released on this event loop.
        self._finalizer = weakref.finalize(self, _abandon, live, _on_this_loop())

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.areads(None)

    def passed_bytes(self) -> int:
        return sum(map(len, self._live.call.delivered))

    async def areads(self, response: httpx2.Response | None) -> AsyncGenerator[bytes, None]:
        """The async twin of `SyncBody.reads`."""
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
                chunks = live.chunks if attempt.failure is None else _no_reads()
                try:
                    async for chunk in chunks:
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
                await live.close_upstream()
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
                if not await live.resume():
                    call.finish("error", clock())
                    self._finalizer.detach()
                    raise interrupted(call, live.request, call.last_failure or failed)
        except httpx2.RequestError as error:
            if response is not None:
                error.request = live.request
            raise
        finally:
            if response is not None:
                await response.aclose()

    async def aclose(self) -> None:
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
            await live.close_upstream()
            call = live.call
            call.attempt_ok(live.send, call.engine.clock(), 200, ttft(attempt))
            call.finish("ok", call.engine.clock())
        await live.abort(None)


async def _no_reads() -> AsyncIterator[bytes]:
    """Nothing: what is left to read of an attempt that has already failed."""
    return
    yield  # an async generator


Later = Callable[[Callable[[], Awaitable[None]]], None]
_closing: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references


def _abandon(live: Live, later: Later | None) -> None:
    # A finalizer cannot await: the call is finalised here, exactly once, and the upstream's
    # close is handed to the event loop the stream was read on (`later`). A stream never read
    # has no one else to close it, and its connection's pool slot would never be given back.
    # One left in a loop's `break` is collected while the SDK's generator still holds it, and
    # that generator's aclose closes it too, through `live`: whichever comes first does it.
    if not live.call.finished:
        live.call.finish(dropped_outcome(live.call), live.call.engine.clock())
    if later is not None and live.upstream is not None:
        later(live.close_upstream)


def _on_this_loop() -> Later | None:
    """How a finalizer, which may run on any thread, gets a coroutine function run on the
    event loop running now (asyncio or trio); None when it cannot."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:

        def on_asyncio(close: Callable[[], Awaitable[None]]) -> None:
            def start() -> None:
                task = loop.create_task(_quietly(close))
                _closing.add(task)
                task.add_done_callback(_closing.discard)

            with contextlib.suppress(RuntimeError):  # the loop is closed, and its connections
                loop.call_soon_threadsafe(start)

        return on_asyncio
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        token = trio.lowlevel.current_trio_token()
    except RuntimeError:
        return None

    def on_trio(close: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(lambda: trio.lowlevel.spawn_system_task(_quietly, close))

    return on_trio


async def _quietly(close: Callable[[], Awaitable[None]]) -> None:
    """`close()`, whose failure no one is left to hear (a trio system task's would end the run)."""
    with contextlib.suppress(Exception):
        await close()


async def peek(chunks: AsyncIterator[bytes]) -> tuple[bytes, bool]:
    """The async twin of `_sync_body.peek`."""
    head = b""
    async for chunk in chunks:
        head += chunk
        events = reads_as_events(head)
        if events is not None:
            return head, events
    return head, bool(reads_as_events(head, whole=True))


async def prefixed(head: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`head`, then the rest of `chunks`: a body whose start `peek` read (`itertools.chain`'s
    async twin)."""
    yield head
    async for chunk in chunks:
        yield chunk


async def bounded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError(f"the answer exceeds {MAX_BODY} bytes")
        yield chunk


async def error_body(chunks: AsyncIterator[bytes]) -> bytes:
    """An error status's body, as far as `MAX_ERROR_BODY` (the rest is not read)."""
    kept = b""
    try:
        async for chunk in chunks:
            kept += chunk
            if len(kept) >= MAX_ERROR_BODY:
                break
    finally:
        aclose = getattr(chunks, "aclose", None)  # left part read, trio warns of its collection
        if aclose is not None:
            await aclose()
    return kept[:MAX_ERROR_BODY]


def deadline_reads(
    upstream: httpx2.Response, attempt: ReadDeadline, clock: Callable[[], float], cap: float | None
) -> Callable[[], None] | None:
    """Make every socket read of this body wait only until the attempt's next deadline.

    See `_sync_body.deadline_reads` for why; here `read` is a coroutine function.
    """
    stream: Any = own_network_stream(upstream)
    read = getattr(type(stream), "read", None)
    if stream is None or read is None or not hasattr(stream, "__dict__"):
        return None

    async def deadline_read(max_bytes: int, timeout: float | None = None) -> bytes:
        limit = attempt.read_timeout(clock())
        if limit is None:
            limit = timeout
        elif cap is not None and cap < limit:
            limit = cap  # the caller's own read timeout (the SDK's `timeout=`) still applies
        try:
            return await read(stream, max_bytes, limit)  # type: ignore[no-any-return]
        except httpcore2.ReadTimeout:
            # The deadline's timer and the bytes may be due in the same loop turn (the process
            # was paused, the loop ran late): bytes already waiting are no stall.
            return await read(stream, max_bytes, 1e-3)  # type: ignore[no-any-return]

    stream.read = deadline_read
    return lambda: stream.__dict__.pop("read", None)

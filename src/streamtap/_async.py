"""The asynchronous driver: the same loop as `_sync.py`, awaiting (asyncio or trio, via anyio).

The attempt loop; the committed stream's body, which the caller reads, is `_async_body.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import httpx2

from ._async_body import AsyncBody, bounded, deadline_reads, error_body, peek, prefixed
from ._attempt import StreamAttempt
from ._call import Call
from ._driver import (
    CallDeadline,
    araw_chunks,
    build_request,
    caller_failure,
    caller_headers,
    caller_read_timeout,
    connect_failure,
    error_response,
    give_up,
    new_stream_attempt,
    read_failure,
    served,
    status_failure,
    stopped_under,
    undecodable,
    whole_response,
)
from ._errors import CONNECTION_ERRORS, failure
from ._steps import GiveUp, Send, Serve, Wait
from ._stream_response import StreamResponse
from ._whole import answer_failure, body_answer, labelled_whole, web_page, whole_error


async def send_async(
    call: Call, transport: httpx2.AsyncBaseTransport, request: httpx2.Request
) -> httpx2.Response:
    """Run `call` until it commits, is answered, or gives up."""
    call.scope_cache(request.headers)
    live = Live(call, transport, request)
    try:
        while True:
            step = call.next()
            if isinstance(step, Wait):
                await anyio.sleep(step.seconds)
            elif isinstance(step, Serve):
                answer = served(step, call, request)
                call.finish("ok", call.engine.clock())
                return answer
            elif isinstance(step, GiveUp):
                return give_up(call, request)
            else:
                response = await live.try_send(step)
                if response is not None:
                    return response
    except BaseException as error:
        await live.abort(error)
        raise


class Live:
    """The state of one call's current attempt; what a stream's finalizer may touch."""

    def __init__(self, call: Call, transport: httpx2.AsyncBaseTransport, request: httpx2.Request) -> None:
        self.call = call
        self.transport = transport
        self.request = request
        self.send: Send | None = None
        self.attempt: StreamAttempt | None = None
        self.upstream: httpx2.Response | None = None
        self.chunks: AsyncIterator[bytes] | None = None
        self.restore: Callable[[], None] | None = None
        # The caller closed the stream, maybe from another thread or task while one reads it:
        # that read's broken connection is the close, no failure to count or resume from.
        self.stopped = False

    async def open(self, send: Send) -> httpx2.Response | None:
        """Send one attempt; its response when 2xx, else None (the failure is recorded)."""
        call = self.call
        clock = call.engine.clock
        upstream_request = build_request(self.request, send, call)
        call.sending(send, clock())
        try:
            upstream = await self.transport.handle_async_request(upstream_request)
        except CONNECTION_ERRORS as error:
            call.attempt_failed(
                send,
                connect_failure(error, call, send, self.request),
                now=clock(),
                wall=call.engine.wall(),
                exception=error,
            )
            return None
        upstream.request = upstream_request  # a transport's answer has none; its bounds are read here
        call.request_id = upstream.headers.get("x-request-id")
        if 200 <= upstream.status_code < 300:  # an answer; any other status goes back as it came
            page = web_page(upstream)
            if page is None:
                return upstream
            await upstream.aclose()
            call.attempt_failed(
                send, page, now=clock(), wall=call.engine.wall(), status_code=upstream.status_code
            )
            return None
        try:
            raw = await error_body(upstream.aiter_bytes())
        except CONNECTION_ERRORS:
            raw = b""
        finally:
            await upstream.aclose()
        call.attempt_failed(
            send,
            status_failure(upstream, raw),
            now=clock(),
            wall=call.engine.wall(),
            headers=upstream.headers,
            error_response=error_response(upstream, raw),
        )
        return None

    async def try_send(self, send: Send) -> httpx2.Response | None:
        """One attempt before commit: the caller's response once committed, else None."""
        call = self.call
        clock = call.engine.clock
        upstream = await self.open(send)
        if upstream is None:
            return None
        if not send.route.stream:
            return await self._answer(send, upstream, upstream.aiter_bytes())
        self._begin(send, upstream)
        attempt = self.attempt
        assert attempt is not None and self.chunks is not None
        if labelled_whole(send, upstream):
            events = await self._peek(send, upstream)
            if events is None:
                return None
            if not events:
                return await self._answer(send, upstream, self.chunks)
        first = b""
        while not attempt.committed and attempt.failure is None:
            chunk = await self.read()
            if chunk is None:
                break
            first = attempt.feed(chunk, clock())
        if attempt.committed:
            call.committed_at(send, attempt, attempt.first_content_at or clock(), upstream.status_code)
            body = AsyncBody(self, first)
            headers = caller_headers(upstream.headers, call, sse=True)
            return StreamResponse(
                upstream.status_code,
                headers=headers,
                stream=body,
                request=self.request,
                extensions=upstream.extensions,
            )
        assert attempt.failure is not None
        await self.close_upstream()
        call.attempt_failed(
            send,
            attempt.failure,
            now=clock(),
            wall=call.engine.wall(),
            status_code=upstream.status_code,
            response_id=attempt.facts.response_id,
        )
        return None

    async def _peek(self, send: Send, upstream: httpx2.Response) -> bool | None:
        """A stream's answer labelled JSON (`labelled_whole`): read its first bytes, under the
        stream attempt's deadlines, until they tell events from one JSON answer. True: events,
        streamed on (the bytes read are the attempt's first); False: one answer, to read whole
        (the stream's deadlines lifted); None: the read failed first (recorded)."""
        call = self.call
        attempt = self.attempt
        assert attempt is not None and self.chunks is not None
        try:
            head, events = await peek(self.chunks)
        except CONNECTION_ERRORS as error:
            attempt.broke(read_failure(attempt, error, call.engine.clock()))
            assert attempt.failure is not None
            await self.close_upstream()
            call.attempt_failed(
                send,
                attempt.failure,
                now=call.engine.clock(),
                wall=call.engine.wall(),
                status_code=upstream.status_code,
            )
            return None
        self.chunks = prefixed(head, self.chunks)
        if not events:
            restore, self.restore = self.restore, None
            if restore is not None:
                restore()
        return events

    async def _answer(
        self, send: Send, upstream: httpx2.Response, chunks: AsyncIterator[bytes]
    ) -> httpx2.Response | None:
        call = self.call
        clock = call.engine.clock
        deadline = CallDeadline.of(call, upstream)
        restore = (
            None
            if deadline is None
            else deadline_reads(upstream, deadline, clock, caller_read_timeout(self.request))
        )
        try:
            raw = b"".join([chunk async for chunk in bounded(chunks)])
        except (*CONNECTION_ERRORS, ValueError) as error:
            self.upstream = upstream
            await self.close_upstream()
            call.attempt_failed(
                send,
                answer_failure(error, call, send, self.request, clock()),
                now=clock(),
                wall=call.engine.wall(),
                status_code=upstream.status_code,
            )
            return None
        finally:
            if restore is not None:
                restore()
            await upstream.aclose()
        answer = body_answer(call, send, upstream, raw)
        if not isinstance(answer, tuple):
            call.attempt_failed(
                send,
                answer,
                now=clock(),
                wall=call.engine.wall(),
                status_code=upstream.status_code,
                error_response=whole_error(call, upstream, raw, answer),
            )
            return None
        content, body = answer
        call.attempt_ok(send, clock(), upstream.status_code, None)
        call.delivered.append(content)
        call.delivered_whole(clock())
        response = whole_response(
            upstream.status_code,
            caller_headers(upstream.headers, call, sse=call.primary.stream),
            content,
            self.request,
            upstream.extensions,
        )
        call.finish("ok", clock(), body=body)
        return response

    def _begin(self, send: Send, upstream: httpx2.Response) -> None:
        call = self.call
        clock = call.engine.clock
        self.send = send
        self.upstream = upstream
        self.attempt = attempt = new_stream_attempt(call, send, call.sent_at(send, clock()), clock())
        self.chunks = araw_chunks(upstream) or upstream.aiter_bytes()
        self.restore = deadline_reads(upstream, attempt, clock, caller_read_timeout(self.request))

    async def read(self) -> bytes | None:
        """The next chunk, or None at the end or on failure (then attempt.failure is set)."""
        attempt = self.attempt
        assert attempt is not None and self.chunks is not None
        try:
            return await self.chunks.__anext__()
        except StopAsyncIteration:
            attempt.end()
        except CONNECTION_ERRORS as error:
            attempt.broke(read_failure(attempt, error, self.call.engine.clock()))
        return None

    async def resume(self) -> bool:
        """After a failure past commit: continue the stream from another attempt, if the call may."""
        call = self.call
        while not self.stopped:
            step = call.next()
            if isinstance(step, Wait):
                await anyio.sleep(step.seconds)
            elif isinstance(step, Send):
                upstream = await self.open(step)
                if upstream is not None:
                    self._begin(step, upstream)
                    if self.stopped:  # closed while this attempt opened: the close missed it
                        await self.close_upstream()
                        return False
                    return True
            else:
                return False
        return False

    async def close_upstream(self) -> None:
        restore, self.restore = self.restore, None
        if restore is not None:
            restore()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()

    async def abort(self, error: BaseException | None) -> None:
        """The caller stopped (or the engine failed): finalise once and release the connection."""
        self.stopped = True
        call = self.call
        try:
            await self.close_upstream()
        finally:
            if not call.finished:
                reason = caller_failure()
                if reason is not None:
                    undecodable(call, self.send, self.attempt, reason)
                elif error is None or isinstance(
                    error, (KeyboardInterrupt, GeneratorExit, anyio.get_cancelled_exc_class())
                ):
                    if call.caller is not None and not call.caller.left:
                        call.last_failure = stopped_under(call)
                        call.finish("error", call.engine.clock())
                    else:
                        call.finish("cancelled", call.engine.clock())
                else:
                    call.last_failure = failure(
                        "other", "streaming" if call.committed else "first_token", repr(error)
                    )
                    call.finish("error", call.engine.clock())

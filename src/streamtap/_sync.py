"""The synchronous driver: runs a Call over an httpx2 transport, blocking.

The attempt loop; the committed stream's body, which the caller reads, is `_sync_body.py`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import httpx2

from ._attempt import StreamAttempt
from ._call import Call
from ._driver import (
    CallDeadline,
    build_request,
    caller_failure,
    caller_headers,
    caller_read_timeout,
    connect_failure,
    error_response,
    give_up,
    new_stream_attempt,
    raw_chunks,
    read_failure,
    served,
    status_failure,
    undecodable,
    whole_response,
)
from ._errors import CONNECTION_ERRORS, failure
from ._steps import GiveUp, Send, Serve, Wait
from ._stream_response import StreamResponse
from ._sync_body import SyncBody, bounded, deadline_reads, error_body, peek
from ._whole import answer_failure, body_answer, labelled_whole, web_page, whole_error


def send_sync(call: Call, transport: httpx2.BaseTransport, request: httpx2.Request) -> httpx2.Response:
    """Run `call` until it commits, is answered, or gives up."""
    call.scope_cache(request.headers)
    live = Live(call, transport, request)
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


class Live:
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
        # The caller closed the stream, maybe from another thread or task while one reads it:
        # that read's broken connection is the close, no failure to count or resume from.
        self.stopped = False

    def open(self, send: Send) -> httpx2.Response | None:
        """Send one attempt; its response when 2xx, else None (the failure is recorded)."""
        call = self.call
        clock = call.engine.clock
        upstream_request = build_request(self.request, send, call)
        call.sending(send, clock())
        try:
            upstream = self.transport.handle_request(upstream_request)
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
            upstream.close()
            call.attempt_failed(
                send, page, now=clock(), wall=call.engine.wall(), status_code=upstream.status_code
            )
            return None
        try:
            raw = error_body(upstream.iter_bytes())
        except CONNECTION_ERRORS:
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
            return self._answer(send, upstream, upstream.iter_bytes())
        self._begin(send, upstream)
        attempt = self.attempt
        assert attempt is not None and self.chunks is not None
        if labelled_whole(send, upstream):
            events = self._peek(send, upstream)
            if events is None:
                return None
            if not events:
                return self._answer(send, upstream, self.chunks)
        first = b""
        while not attempt.committed and attempt.failure is None:
            chunk = self.read()
            if chunk is None:
                break
            first = attempt.feed(chunk, clock())
        if attempt.committed:
            call.committed_at(send, attempt, attempt.first_content_at or clock(), upstream.status_code)
            body = SyncBody(self, first)
            headers = caller_headers(upstream.headers, call, sse=True)
            return StreamResponse(
                upstream.status_code,
                headers=headers,
                stream=body,
                request=self.request,
                extensions=upstream.extensions,
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

    def _peek(self, send: Send, upstream: httpx2.Response) -> bool | None:
        """A stream's answer labelled JSON (`labelled_whole`): read its first bytes, under the
        stream attempt's deadlines, until they tell events from one JSON answer. True: events,
        streamed on (the bytes read are the attempt's first); False: one answer, to read whole
        (the stream's deadlines lifted); None: the read failed first (recorded)."""
        call = self.call
        attempt = self.attempt
        assert attempt is not None and self.chunks is not None
        try:
            head, events = peek(self.chunks)
        except CONNECTION_ERRORS as error:
            attempt.broke(read_failure(attempt, error, call.engine.clock()))
            assert attempt.failure is not None
            self.close_upstream()
            call.attempt_failed(
                send,
                attempt.failure,
                now=call.engine.clock(),
                wall=call.engine.wall(),
                status_code=upstream.status_code,
            )
            return None
        self.chunks = itertools.chain((head,), self.chunks)
        if not events:
            restore, self.restore = self.restore, None
            if restore is not None:
                restore()
        return events

    def _answer(
        self, send: Send, upstream: httpx2.Response, chunks: Iterator[bytes]
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
            raw = b"".join(bounded(chunks))
        except (*CONNECTION_ERRORS, ValueError) as error:
            self.upstream = upstream
            self.close_upstream()
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
            upstream.close()
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
        self.chunks = raw_chunks(upstream) or upstream.iter_bytes()
        self.restore = deadline_reads(upstream, attempt, clock, caller_read_timeout(self.request))

    def read(self) -> bytes | None:
        """The next chunk, or None at the end or on failure (then attempt.failure is set)."""
        attempt = self.attempt
        assert attempt is not None and self.chunks is not None
        try:
            return next(self.chunks)
        except StopIteration:
            attempt.end()
        except CONNECTION_ERRORS as error:
            attempt.broke(read_failure(attempt, error, self.call.engine.clock()))
        return None

    def resume(self) -> bool:
        """After a failure past commit: continue the stream from another attempt, if the call may."""
        call = self.call
        while not self.stopped:
            step = call.next()
            if isinstance(step, Wait):
                time.sleep(step.seconds)
            elif isinstance(step, Send):
                upstream = self.open(step)
                if upstream is not None:
                    self._begin(step, upstream)
                    if self.stopped:  # closed while this attempt opened: the close missed it
                        self.close_upstream()
                        return False
                    return True
            else:
                return False
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
        self.stopped = True
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

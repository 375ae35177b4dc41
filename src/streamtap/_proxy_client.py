"""The client's side of a proxied request: its body read, its departure watched, the answer
relayed to it, and the errors it gets in the OpenAI API's shape."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, Final

import httpx2

from ._dialect import error_object
from ._errors import CircuitOpenError, StreamInterrupted
from ._proxy_http import Headers, declared_length, field_value, header, response_headers
from ._secrets import SecretMask
from ._stream_response import StreamResponse

log = logging.getLogger("streamtap.proxy")
PIECE = 64 * 1024  # how much of an answer held whole goes to the client in one send
MASKED_BODY = 1024 * 1024  # the largest error body the proxy holds whole to mask its keys in

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body is over its limit."""


class ClientLeft(Exception):
    """The client disconnected before its request body was whole."""


def has_body(headers: Headers) -> bool:
    """Whether the client sends a request body (a declared length above 0, or chunks)."""
    return declared_length(headers) > 0 or header(headers, b"transfer-encoding") is not None


async def streamed_body(
    receive: Receive, limit: int, idle: float, *, whole: Callable[[], None]
) -> AsyncIterator[bytes]:
    """The client's request body, piece by piece as it arrives, for an upstream request;
    `whole` is called once its last piece has arrived."""
    size = 0
    while True:
        async with asyncio.timeout(idle):
            message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        last = not message.get("more_body", False)
        if last:
            whole()
        if chunk:
            yield chunk
        if last:
            return


async def refuse_body(send: Send, error: Exception, limit: int, too_slow: str) -> None:
    """Answer a request whose body was refused; a client that left gets nothing."""
    if isinstance(error, BodyTooLarge):
        await send_error(
            send, 413, "request_too_large", f"the request body exceeds {limit} bytes", close=True
        )
    elif isinstance(error, TimeoutError):
        await send_error(send, 408, "request_timeout", f"the request body {too_slow}", close=True)


async def read_body(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


# The connection's reset, weakly (`_proxy_protocol.ABORT`): called, the method or None.
Reset = Callable[[], Callable[[], None] | None]


class ClientWatch:
    """Cancels the task serving a request when its client disconnects.

    Started once the request body is read, so a client that leaves while the engine still
    waits for a first token (or backs off between attempts) ends the call there: the upstream
    attempt is closed, the call finishes `cancelled`, and no further attempt is made. uvicorn's
    `send` ignores a gone client, hence the watch on `receive`. Plain asyncio, not an anyio
    task group: the proxy runs on uvicorn's asyncio loop, and the group's scopes cost more than
    the relay's own work on the way to the first content.
    """

    def __init__(
        self,
        receive: Receive,
        send_timeout: float,
        *,
        started: bool = True,
        abort: Reset | None = None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None, "a request is served in a task"
        self._task = task
        self._left = False
        self._receive = receive
        self._watcher: asyncio.Future[None] | None = None
        self._stopped = False
        self._seen = -1  # `sends` at the last look of the send timer
        if started:
            self.start()
        # Sends to the client begun plus those finished: odd while one is under way (`relay`).
        self.sends = 0
        self._send_timeout = send_timeout
        self._send_timer: asyncio.TimerHandle | None = None
        self._abort = abort

    def time_sends(self) -> None:
        """From now on, drop a client whose send stays under way for `send_timeout` seconds (up
        to twice that): it stopped reading and did not leave, its socket full. The call is then
        cancelled, as if it had left, rather than holding its upstream for as long as the
        client's connection lives."""
        self._seen = -1
        self._send_timer = asyncio.get_running_loop().call_later(self._send_timeout, self._look)

    def _look(self) -> None:
        if self.sends % 2 and self.sends == self._seen:  # the same send as at the last look
            log.warning(
                "dropping a client that let one send wait over %g s (it stopped reading, or reads "
                "slower than the socket's buffer drains)",
                self._send_timeout,
            )
            self._left = True
            reset = self._abort() if self._abort is not None else None
            if reset is not None:
                # At once and unflushed: a close would wait for the client to read what it will
                # never read, holding the socket and its buffers for as long as it stays.
                reset()
            self._task.cancel()
            return
        self._seen = self.sends
        self._send_timer = asyncio.get_running_loop().call_later(self._send_timeout, self._look)

    def start(self) -> None:
        """Begin watching (once the request body is whole: from then on, only the watch reads
        from the client)."""
        if self._watcher is None and not self._stopped:
            self._watcher = asyncio.ensure_future(self._watch(self._receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._left = True
        self._task.cancel()

    @property
    def left(self) -> bool:
        """Whether the client disconnected."""
        return self._left

    def stop(self) -> None:
        """Stop watching. Cancelled before it resumes, the watcher cancels nothing more.

        Both are let go of, too: the cancelled watcher keeps its CancelledError, whose
        traceback holds the watch, and a timer holds the watch's method. Kept, each would be a
        reference cycle per request, left to the cyclic collector, whose pauses under load
        stop every stream at once.
        """
        self._stopped = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
        timer, self._send_timer = self._send_timer, None
        if timer is not None:
            timer.cancel()

    def ours(self) -> bool:
        """Whether the cancellation just caught was this watch's (the client left, and nothing
        is left to send) rather than anyone else's, which must go on."""
        return self._left and not _still_cancelled(self._task)


async def watching(
    receive: Receive,
    serve: Callable[[ClientWatch], Awaitable[None]],
    send_timeout: float,
    *,
    started: bool = True,
    abort: Reset | None = None,
) -> None:
    """Run `serve` while a `ClientWatch` ends it if the client leaves (or stops reading for
    `send_timeout`, then `abort` ends the connection); only that end is quiet. Not `started`,
    the watch waits for `serve` to start it (see `ClientWatch.start`)."""
    watch = ClientWatch(receive, send_timeout, started=started, abort=abort)
    try:
        await serve(watch)
    except asyncio.CancelledError:
        if not watch.ours():
            raise
    finally:
        watch.stop()


async def relay(
    response: httpx2.Response,
    send: Send,
    watch: ClientWatch,
    *,
    error_frame: Callable[[str, str, Mapping[str, Any] | None], bytes] | None,
    mask: SecretMask | None = None,
) -> None:
    """Send a response to the client as it arrives; `watch` stops it when the client leaves.

    A call's stream (`error_frame` given) that fails, or that the server's shutdown deadline
    cuts, ends with an error event of its dialect, so the client's SDK raises. With `mask`, the
    secrets it holds are masked in an error answer (status 400 and up: `_masked_error`) and in
    the error event that ends a stream."""
    headers = response_headers(response.headers.raw)
    status = response.status_code
    if not 100 <= status <= 599:  # HTTP's three digits start 1 to 5; uvicorn writes no other
        status = 502  # what a gateway answers for an answer it cannot pass on (RFC 9110 15.6.3)
    chunks = _chunks(response)
    watch.time_sends()
    try:
        if mask and status >= 400:
            headers, chunks = await _masked_error(response, headers, mask)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        failed: tuple[str, str, Mapping[str, Any] | None] | None = None
        try:
            async for chunk in chunks:
                watch.sends += 1
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                watch.sends += 1
        except StreamInterrupted as error:
            failed = (error.error_type, str(error), upstream_error(error))
        except asyncio.CancelledError:
            if watch.left or error_frame is None:
                raise  # the client left: nothing more to send
            # The only other canceller is the server, once, at the end of the shutdown grace,
            # and it awaits nothing after: the answer is ended here, and so is the task.
            failed = ("stream_interrupted", "the proxy shut down before the stream ended", None)
        watch.sends += 1  # the end, too, waits for a client's full socket
        if failed is not None and error_frame is not None:
            frame = error_frame(*failed)
            await send(
                {"type": "http.response.body", "body": mask(frame) if mask else frame, "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        watch.sends += 1
    finally:
        # The response is complete (uvicorn then reports a disconnect) or abandoned: the close
        # must not be cut.
        watch.stop()
        await response.aclose()


def _still_cancelled(task: asyncio.Task[Any]) -> bool:
    """Whether `task` has cancellations pending besides the one just handled."""
    return task.uncancel() > 0


async def _masked_error(
    response: httpx2.Response, headers: Headers, mask: SecretMask
) -> tuple[Headers, AsyncIterator[bytes]]:
    """The headers and body of an error answer with `mask`'s secrets masked: an upstream's error
    text may quote the key it was sent. The body is held whole (up to `MASKED_BODY` bytes; an
    error body is small) and goes decoded when its coding decodes (the proxy offers upstream
    only codings it reads while it holds keys), with its new Content-Length. A body larger than
    that is passed on as it comes, unmasked; one with no bytes (HEAD, 204, 304) as it came."""
    pieces: list[bytes] = []
    size = 0
    chunks = _chunks(response)
    async for piece in chunks:
        pieces.append(piece)
        size += len(piece)
        if size > MASKED_BODY:
            return headers, _resumed(pieces, chunks)
    raw = b"".join(pieces)
    if not raw:
        return headers, _resumed([], chunks)
    dropped = {b"content-length"}
    try:
        body = httpx2.Response(
            200, headers=[(k, v) for k, v in headers if k == b"content-encoding"], content=raw
        ).content
        dropped.add(b"content-encoding")
    except httpx2.DecodingError:
        body = raw  # not in the coding it claims: as it came, its coding kept
    body = mask(body)
    kept = [(name, mask(value)) for name, value in headers if name not in dropped]
    return [*kept, (b"content-length", str(len(body)).encode())], _resumed([body], chunks)


async def _resumed(pieces: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`pieces`, then what `rest` still has."""
    for piece in pieces:
        yield piece
    async for piece in rest:
        yield piece


def _chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    """What to relay: an engine stream through its body's own reader (the one generator
    between client and upstream), anything else through `_body`."""
    if isinstance(response, StreamResponse):
        return response.aiter_bytes()
    return _body(response)


async def _body(response: httpx2.Response) -> AsyncIterator[bytes]:
    try:
        content = response.content  # an answer the engine already holds whole
    except httpx2.ResponseNotRead:
        # Straight from the stream: `aiter_raw` adds a re-chunking layer and a context manager
        # per chunk, and nothing here needs its bookkeeping; `relay` closes the response.
        stream: Any = response.stream
        async for chunk in stream:
            yield chunk
        return
    # In pieces, so that a slow client shows progress to `time_sends` while it takes a large one.
    for start in range(0, max(len(content), 1), PIECE):  # an empty answer: one empty piece
        yield content[start : start + PIECE]


async def send_json(
    send: Send,
    status: int,
    payload: object,
    *,
    close: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if close:  # the rest of the request body is unread: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# On an answer the engine gave after the attempts its policy allows: a client's SDK (its own
# retries on) must not start over, each of its rounds another set of the engine's attempts.
NO_RETRY: Final = ((b"x-should-retry", b"false"),)


def gave_up(
    error: StreamInterrupted | CircuitOpenError | httpx2.TransportError,
    mask: SecretMask | None = None,
    call_error: str | None = None,
) -> tuple[int, str, str, Mapping[str, Any] | None]:
    """The status, code and message of the error a client gets when the engine raised `error`,
    and the upstream's own error object when an error event ended the call (its code, type and
    param are the client's to branch on, as from the upstream itself); `mask`'s secrets masked
    in both, which carry the upstream's words. `call_error`: the call's error type, which names
    a retry the budget or the breaker refused after a connection failure, as a
    `StreamInterrupted`'s does."""
    if isinstance(error, StreamInterrupted):
        message, upstream = str(error), upstream_error(error)
        if mask:
            message = mask(message.encode()).decode()
            upstream = json.loads(mask(json.dumps(upstream).encode())) if upstream is not None else None
        return 502, error.error_type, message, upstream
    if isinstance(error, CircuitOpenError):
        return 503, "circuit_open", str(error), None
    if isinstance(error, httpx2.TimeoutException):
        status, code, message = 504, "timeout", f"upstream timed out ({type(error).__name__})"
    else:
        status, code, message = 502, "connection", f"upstream unreachable ({type(error).__name__})"
    if call_error in ("budget_exhausted", "circuit_open"):
        code, message = call_error, f"{message}; its retry was refused ({call_error})"
    return status, code, message, None


def gave_up_headers(
    error: StreamInterrupted | CircuitOpenError | httpx2.TransportError,
) -> list[tuple[bytes, bytes]]:
    """Headers of that error's answer: no retry (NO_RETRY), and for a call whose attempts were
    answered, how many there were and the last one's `x-request-id`, as on any other answer,
    and the background response the call created (`x-streamtap-response-id`), which may still
    run upstream."""
    headers = list(NO_RETRY)
    if isinstance(error, CircuitOpenError) and error.attempts:  # its fallbacks', which failed
        headers.append((b"x-streamtap-attempts", str(error.attempts).encode()))
    if isinstance(error, StreamInterrupted):
        headers.append((b"x-streamtap-attempts", str(error.attempts).encode()))
        if error.request_id:
            headers.append((b"x-request-id", field_value(error.request_id.encode())))
        if error.response_id:
            headers.append(
                (b"x-streamtap-response-id", field_value(error.response_id.encode("utf-8", "replace")))
            )
    return headers


def upstream_error(error: StreamInterrupted) -> Mapping[str, Any] | None:
    """The upstream's error object, when its error event is what ended the call (not a retry
    that the budget or the breaker then refused: that code is streamtap's to say)."""
    body = error.body
    if error.error_type != "upstream_error_event" or not isinstance(body, Mapping):
        return None
    return body if body.get("code") is not None else None


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    upstream: Mapping[str, Any] | None = None,
    close: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """An error in the OpenAI API's shape, so the official SDKs raise their usual exceptions;
    `upstream`: the upstream's own error object, given instead (`error_object`)."""
    error = error_object(code, message, upstream)
    await send_json(send, status, {"error": error}, close=close, extra=extra)

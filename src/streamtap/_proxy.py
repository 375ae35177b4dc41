"""Door 2: an OpenAI-compatible sidecar proxy (ASGI) driving the same engine as door 1.

Chat completions and responses go through the engine; every other /v1 path is passed through.
Streams are forwarded frame by frame as they arrive; a failure after commit ends the client's
stream with an SSE error event of its dialect, so the official SDKs raise instead of
mistaking a cut answer for a complete one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import httpx2

from ._async import send_async
from ._dialect import dialect_for
from ._engine import Engine, engine_api, parse_body
from ._errors import CircuitOpenError, StreamInterrupted
from ._events import Recorder
from ._proxy_config import ProxyConfig
from ._proxy_http import (
    Headers,
    authorized,
    declared_length,
    forward_request_headers,
    header,
    identity_body,
    response_headers,
    upstream_url,
)
from ._stream_response import StreamResponse
from ._taxonomy import Api
from ._upstream_pool import UpstreamTransport

log = logging.getLogger("streamtap.proxy")
_PIECE = 64 * 1024  # how much of an answer held whole goes to the client in one send

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class _ClientLeft(Exception):
    """The client disconnected before its request body was whole."""


class Proxy:
    """The ASGI application of `streamtap proxy`.

    Args:
        config: where to forward and what to protect.
        recorders: telemetry sinks (default: Prometheus on the global registry and OTel).
        transport: the upstream transport (default: `UpstreamTransport`, HTTP/1.1 with an O(1)
            keep-alive pool; asyncio only).
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        recorders: Sequence[Recorder] | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        # Its clients parse what the engine passes on where the engine cannot see them fail.
        self.engine = Engine(config.policy, config.fallbacks, recorders, verify_events=True)
        self.transport = transport if transport is not None else UpstreamTransport(max_keepalive=512)
        # A request passed through has no engine, hence no policy deadlines, to bound it.
        waits = config.pass_through_timeout
        self._pass_through_timeouts = {
            "timeout": {
                "connect": config.policy.connect_timeout,
                "read": waits,
                "write": waits,
            }
        }
        self._ready: tuple[float, bool, str] | None = None
        self._metrics: Callable[..., Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/healthz":
            await _json(send, 200, {"status": "ok"})
        elif path == "/readyz":
            ready, detail = await self._readiness()
            await _json(
                send, 200 if ready else 503, {"status": "ready" if ready else "not ready", "detail": detail}
            )
        elif path == "/metrics":
            await self._serve_metrics(scope, receive, send)
        else:
            await self._forward(scope, receive, send)

    async def ops(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of the `ops_listen` listener: /metrics, /healthz and /readyz only."""
        if scope["type"] != "http":
            return
        if scope["path"] in ("/metrics", "/healthz", "/readyz"):
            await self(scope, receive, send)
        else:
            await _error(send, 404, "not_found", "this listener serves /metrics, /healthz and /readyz only")

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config
        headers: Headers = list(scope["headers"])
        if not authorized(headers, config.client_token):
            await _error(send, 401, "invalid_api_key", "missing or wrong proxy token in Authorization")
            return
        url = upstream_url(
            config.upstream, scope.get("raw_path") or scope["path"].encode(), scope["query_string"]
        )
        if url is None:
            await _error(send, 404, "not_found", "the proxy forwards only /v1/... paths to its upstream")
            return
        routed = engine_api(scope["method"], scope["path"])
        if routed is None and _has_body(headers):
            await self._upload(scope, headers, url, receive, send)
            return
        try:
            # Before the first receive, which is when uvicorn answers `Expect: 100-continue`: a
            # body declared too large is refused before the client sends any of it.
            if declared_length(headers) > config.max_body:
                raise _BodyTooLarge
            async with asyncio.timeout(config.body_timeout):  # a third of anyio's scope's cost
                body = await _read_body(receive, config.max_body)
            if routed is not None:
                decoded = identity_body(headers, body, config.max_body)
                if decoded is None:
                    raise _BodyTooLarge
                headers, body = decoded
        except (_BodyTooLarge, _ClientLeft, TimeoutError) as error:
            await _refuse_body(send, error, config.max_body, f"took over {config.body_timeout} s")
            return
        # From here on nothing more is read from the client: one watcher, for the whole call,
        # stops the work (retries included) as soon as the client leaves.
        await _watching(
            receive,
            lambda watch: self._answer(scope, routed, headers, body, url, send, watch),
            config.body_timeout,
        )

    async def _answer(
        self,
        scope: Scope,
        routed: tuple[Api, str] | None,
        headers: Headers,
        body: bytes,
        url: str,
        send: Send,
        watch: _ClientWatch,
    ) -> None:
        payload = parse_body(body) if routed is not None else None
        forwarded = forward_request_headers(
            headers, upstream_key=self.config.upstream_api_key, decoded=payload is not None
        )
        if routed is None or payload is None:
            request = httpx2.Request(
                scope["method"],
                _parsed(url),
                headers=forwarded,
                content=body,
                extensions=self._pass_through_timeouts,
            )
            await self._pass_through(request, send, watch)
            return
        request = httpx2.Request(scope["method"], _parsed(url), headers=forwarded, content=body)
        api, suffix = routed
        with _trace_context(headers):
            call = self.engine.start_call(api, suffix, url, payload, body)
        try:
            response = await send_async(call, self.transport, request)
        except StreamInterrupted as error:
            await _error(send, 502, error.error_type, str(error))
            return
        except CircuitOpenError as error:
            await _error(send, 503, "circuit_open", str(error))
            return
        except httpx2.TimeoutException as error:
            await _error(send, 504, "timeout", f"upstream timed out ({type(error).__name__})")
            return
        except httpx2.TransportError as error:
            await _error(send, 502, "connection", f"upstream unreachable ({type(error).__name__})")
            return
        except asyncio.CancelledError:
            if watch.left:
                raise
            # The server's shutdown deadline (see `_relay`), before the first token: an error the
            # SDKs know, not uvicorn's plain-text 500 and a logged traceback.
            await _error(send, 503, "shutting_down", "the proxy shut down before the upstream answered")
            return
        # Only a stream the engine relays can be cut; an answer it holds whole goes in one piece.
        error_frame = dialect_for(api).error_frame if isinstance(response, StreamResponse) else None
        await _relay(response, send, watch, error_frame=error_frame)

    async def _upload(self, scope: Scope, headers: Headers, url: str, receive: Receive, send: Send) -> None:
        """Any other /v1 request with a body (file and audio uploads can be large): the body
        goes to the upstream as it arrives, bounded by `max_upload` and by `body_timeout`
        between its pieces, and is never held whole. Once it is whole, the client is watched
        while the upstream answers, as for any request."""
        await _watching(
            receive,
            lambda watch: self._send_upload(scope, headers, url, receive, send, watch),
            self.config.body_timeout,
            started=False,  # the body is read from the client first: `_streamed_body` starts it
        )

    async def _send_upload(
        self, scope: Scope, headers: Headers, url: str, receive: Receive, send: Send, watch: _ClientWatch
    ) -> None:
        config = self.config
        forwarded = forward_request_headers(headers, upstream_key=config.upstream_api_key)
        try:
            if declared_length(headers) > config.max_upload:
                raise _BodyTooLarge  # before the first receive, as in _forward
            body = _streamed_body(receive, config.max_upload, config.body_timeout, whole=watch.start)
            request = httpx2.Request(
                scope["method"],
                _parsed(url),
                headers=forwarded,
                content=body,
                extensions=self._pass_through_timeouts,
            )
            await self._pass_through(request, send, watch)
        except (_BodyTooLarge, _ClientLeft, TimeoutError) as error:
            # The upstream's connection, with the part sent on it, was dropped.
            await _refuse_body(send, error, config.max_upload, f"stalled for over {config.body_timeout} s")

    async def _pass_through(self, request: httpx2.Request, send: Send, watch: _ClientWatch) -> None:
        response = await self._upstream(request, send, watch)
        if response is not None:
            await _relay(response, send, watch, error_frame=None)

    async def _upstream(
        self, request: httpx2.Request, send: Send, watch: _ClientWatch
    ) -> httpx2.Response | None:
        """The upstream's answer to a request passed through; None when the client got an error."""
        try:
            return await self.transport.handle_async_request(request)
        except httpx2.TimeoutException:
            await _error(send, 504, "timeout", "upstream timed out")
        except httpx2.TransportError as error:
            await _error(send, 502, "connection", f"upstream unreachable ({type(error).__name__})")
        except asyncio.CancelledError:
            if watch.left:
                raise
            # The server's shutdown deadline, as for a call before its first token (`_answer`).
            await _error(send, 503, "shutting_down", "the proxy shut down before the upstream answered")
        return None

    async def _readiness(self) -> tuple[bool, str]:
        cached = self._ready
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.config.ready_cache:
            return cached[1], cached[2]
        from ._preflight import apreflight

        key = self.config.upstream_api_key
        report = await apreflight(api_key=key or "", base_url=self.config.upstream, timeout=5.0)
        # Without a key of its own the proxy can only prove the upstream is reachable.
        needed = (
            ("base_url", "dns", "tcp", "tls", "api_key", "models")
            if key
            else ("base_url", "dns", "tcp", "tls")
        )
        failed = [c for c in report.checks if c.name in needed and not c.ok]
        ready = not failed
        detail = (
            "upstream reachable" + (" and key accepted" if key else "")
            if ready
            else "; ".join(f"{c.name}: {c.detail}" for c in failed)
        )
        self._ready = (now, ready, detail)
        return ready, detail

    async def _serve_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._metrics is None:
            from ._exposition import metrics_asgi_app

            self._metrics = metrics_asgi_app()
        await self._metrics(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx2.URL:
    """The parsed upstream URL (immutable), kept: clients call a few paths over and over."""
    return httpx2.URL(url)


def _has_body(headers: Headers) -> bool:
    """Whether the client sends a request body (a declared length above 0, or chunks)."""
    return declared_length(headers) > 0 or header(headers, b"transfer-encoding") is not None


async def _streamed_body(
    receive: Receive, limit: int, idle: float, *, whole: Callable[[], None]
) -> AsyncIterator[bytes]:
    """The client's request body, piece by piece as it arrives, for an upstream request;
    `whole` is called once its last piece has arrived."""
    size = 0
    while True:
        async with asyncio.timeout(idle):
            message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientLeft
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        last = not message.get("more_body", False)
        if last:
            whole()
        if chunk:
            yield chunk
        if last:
            return


async def _refuse_body(send: Send, error: Exception, limit: int, too_slow: str) -> None:
    """Answer a request whose body was refused; a client that left gets nothing."""
    if isinstance(error, _BodyTooLarge):
        await _error(send, 413, "request_too_large", f"the request body exceeds {limit} bytes", close=True)
    elif isinstance(error, TimeoutError):
        await _error(send, 408, "request_timeout", f"the request body {too_slow}", close=True)


async def _read_body(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


class _ClientWatch:
    """Cancels the task serving a request when its client disconnects.

    Started once the request body is read, so a client that leaves while the engine still
    waits for a first token (or backs off between attempts) ends the call there: the upstream
    attempt is closed, the call finishes `cancelled`, and no further attempt is made. uvicorn's
    `send` ignores a gone client, hence the watch on `receive`. Plain asyncio, not an anyio
    task group: the proxy runs on uvicorn's asyncio loop, and the group's scopes cost more than
    the relay's own work on the way to the first content.
    """

    def __init__(self, receive: Receive, send_timeout: float, *, started: bool = True) -> None:
        task = asyncio.current_task()
        assert task is not None, "a request is served in a task"
        self._task = task
        self._left = False
        self._receive = receive
        self._watcher: asyncio.Future[None] | None = None
        if started:
            self.start()
        # Sends to the client begun plus those finished: odd while one is under way (`_relay`).
        self.sends = 0
        self._send_timeout = send_timeout
        self._send_timer: asyncio.TimerHandle | None = None

    def time_sends(self) -> None:
        """From now on, drop a client whose send stays under way for `send_timeout` seconds (up
        to twice that): it stopped reading and did not leave, its socket full. The call is then
        cancelled, as if it had left, rather than holding its upstream for as long as the
        client's connection lives."""
        loop = asyncio.get_running_loop()
        seen = -1

        def look() -> None:
            nonlocal seen
            if self.sends % 2 and self.sends == seen:  # the same send as at the last look
                log.warning("dropping a client that took nothing for over %g s", self._send_timeout)
                self._left = True
                self._task.cancel()
                return
            seen = self.sends
            self._send_timer = loop.call_later(self._send_timeout, look)

        self._send_timer = loop.call_later(self._send_timeout, look)

    def start(self) -> None:
        """Begin watching (once the request body is whole: from then on, only the watch reads
        from the client)."""
        if self._watcher is None:
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
        """Stop watching. Cancelled before it resumes, the watcher cancels nothing more."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self._send_timer is not None:
            self._send_timer.cancel()

    def ours(self) -> bool:
        """Whether the cancellation just caught was this watch's (the client left, and nothing
        is left to send) rather than anyone else's, which must go on."""
        return self._left and not _still_cancelled(self._task)


async def _watching(
    receive: Receive,
    serve: Callable[[_ClientWatch], Awaitable[None]],
    send_timeout: float,
    *,
    started: bool = True,
) -> None:
    """Run `serve` while a `_ClientWatch` ends it if the client leaves (or stops reading for
    `send_timeout`); only that end is quiet. Not `started`, the watch waits for `serve` to
    start it (see `_ClientWatch.start`)."""
    watch = _ClientWatch(receive, send_timeout, started=started)
    try:
        await serve(watch)
    except asyncio.CancelledError:
        if not watch.ours():
            raise
    finally:
        watch.stop()


async def _relay(
    response: httpx2.Response,
    send: Send,
    watch: _ClientWatch,
    *,
    error_frame: Callable[[str, str], bytes] | None,
) -> None:
    """Send a response to the client as it arrives; `watch` stops it when the client leaves.

    A call's stream (`error_frame` given) that fails, or that the server's shutdown deadline
    cuts, ends with an error event of its dialect, so the client's SDK raises."""
    headers = response_headers(response.headers.raw)
    watch.time_sends()
    try:
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        failed: tuple[str, str] | None = None
        try:
            async for chunk in _chunks(response):
                watch.sends += 1
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                watch.sends += 1
        except StreamInterrupted as error:
            failed = (error.error_type, str(error))
        except asyncio.CancelledError:
            if watch.left or error_frame is None:
                raise  # the client left: nothing more to send
            # The only other canceller is the server, once, at the end of the shutdown grace,
            # and it awaits nothing after: the answer is ended here, and so is the task.
            failed = ("stream_interrupted", "the proxy shut down before the stream ended")
        watch.sends += 1  # the end, too, waits for a client's full socket
        if failed is not None and error_frame is not None:
            await send({"type": "http.response.body", "body": error_frame(*failed), "more_body": True})
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
        # per chunk, and nothing here needs its bookkeeping; `_relay` closes the response.
        stream: Any = response.stream
        async for chunk in stream:
            yield chunk
        return
    # In pieces, so that a slow client shows progress to `time_sends` while it takes a large one.
    for start in range(0, max(len(content), 1), _PIECE):  # an empty answer: one empty piece
        yield content[start : start + _PIECE]


class _trace_context:
    """Continue the client's W3C trace context while the call's span starts."""

    def __init__(self, headers: Headers) -> None:
        self._headers = headers
        self._token: object | None = None

    def __enter__(self) -> None:
        traceparent = header(self._headers, b"traceparent")
        if traceparent is None:
            return
        from opentelemetry import context, propagate

        carrier = {"traceparent": traceparent.decode("latin-1")}
        state = header(self._headers, b"tracestate")
        if state is not None:
            carrier["tracestate"] = state.decode("latin-1")
        self._token = context.attach(propagate.extract(carrier))

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]


async def _json(send: Send, status: int, payload: object, *, close: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the request body is unread: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, code: str, message: str, *, close: bool = False) -> None:
    """An error in the OpenAI API's shape, so the official SDKs raise their usual exceptions."""
    error = {"message": message, "type": "streamtap_error", "param": None, "code": code}
    await _json(send, status, {"error": error}, close=close)

"""Door 2: an OpenAI-compatible sidecar proxy (ASGI) driving the same engine as door 1.

Chat completions and responses go through the engine; every other /v1 path is passed through.
Streams are forwarded frame by frame as they arrive; a failure after commit ends the client's
stream with an SSE error event of its dialect, so the official SDKs raise instead of
mistaking a cut answer for a complete one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar

import httpx2

from ._async import send_async
from ._dialect import dialect_for
from ._engine import Engine, engine_api, parse_body
from ._errors import CircuitOpenError, StreamInterrupted
from ._events import Recorder
from ._proxy_client import (
    BodyTooLarge,
    ClientLeft,
    ClientWatch,
    Message,
    Receive,
    Scope,
    Send,
    gave_up,
    gave_up_headers,
    has_body,
    read_body,
    refuse_body,
    relay,
    send_error,
    send_json,
    streamed_body,
    watching,
)
from ._proxy_config import ProxyConfig
from ._proxy_http import (
    Headers,
    authorized,
    declared_length,
    forward_request_headers,
    header,
    identity_body,
    length_header,
    upstream_url,
)
from ._proxy_protocol import ABORT
from ._secrets import SecretMask
from ._stream_response import StreamResponse
from ._taxonomy import Api
from ._upstream_pool import UpstreamTransport

_OPS_PATHS = ("/metrics", "/healthz", "/readyz")  # answered by the proxy itself, GET and HEAD only

log = logging.getLogger("streamtap.proxy")


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
        # Its clients get no StreamInterrupted text: a call keeps only what it needs of its answer.
        self.engine = Engine(config.policy, config.fallbacks, recorders, verify_events=True, keep_text=False)
        # The keys it holds, which its clients were never given: masked in the errors they get.
        self._mask = SecretMask([config.upstream_api_key or "", *(f.api_key or "" for f in config.fallbacks)])
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
        # The check in flight, which concurrent probes share instead of each starting one.
        self._checking: asyncio.Future[tuple[bool, str]] | None = None
        self._metrics: Callable[..., Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path not in _OPS_PATHS:
            await self._forward(scope, receive, send)
        elif scope["method"] not in ("GET", "HEAD"):
            message = f"{path} answers GET and HEAD only"
            await _refuse(scope, send, 405, "method_not_allowed", message, extra=[(b"allow", b"GET, HEAD")])
        else:
            # These answers read no body: with one, the connection closes after the answer, as
            # after a refusal. Kept open, it took the body's bytes as they came, with no timer.
            closing = _closing(send) if has_body(scope["headers"]) else send
            await self._serve_ops(path, scope, receive, closing)

    async def _serve_ops(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        if path == "/healthz":
            await send_json(send, 200, {"status": "ok"})
        elif path == "/readyz":
            ready, detail = await self._readiness()
            await send_json(
                send, 200 if ready else 503, {"status": "ready" if ready else "not ready", "detail": detail}
            )
        else:
            await self._serve_metrics(scope, receive, send)

    async def ops(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of the `ops_listen` listener: /metrics, /healthz and /readyz only."""
        if scope["type"] != "http":
            return
        if scope["path"] in _OPS_PATHS:
            await self(scope, receive, send)
        else:
            await _refuse(
                scope, send, 404, "not_found", "this listener serves /metrics, /healthz and /readyz only"
            )

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config
        headers: Headers = list(scope["headers"])
        if not authorized(headers, config.client_token):
            await _refuse(
                scope, send, 401, "invalid_api_key", "missing or wrong proxy token in Authorization"
            )
            return
        url = upstream_url(
            config.upstream, scope.get("raw_path") or scope["path"].encode(), scope["query_string"]
        )
        if url is None:
            await _refuse(
                scope,
                send,
                404,
                "not_found",
                "the proxy forwards only /v1/... paths to its upstream, and none that climbs out of it "
                "(a dot segment, encoded or with ;parameters, or an encoded percent sign)",
            )
            return
        routed = engine_api(scope["method"], scope["path"])
        if routed is None and has_body(headers):
            await self._upload(scope, headers, url, receive, send)
            return
        try:
            # Before the first receive, which is when uvicorn answers `Expect: 100-continue`: a
            # body declared too large is refused before the client sends any of it.
            if declared_length(headers) > config.max_body:
                raise BodyTooLarge
            async with asyncio.timeout(config.body_timeout):  # a third of anyio's scope's cost
                body = await read_body(receive, config.max_body)
            if routed is not None:
                decoded = identity_body(headers, body, config.max_body)
                if decoded is None:
                    raise BodyTooLarge
                headers, body = decoded
        except (BodyTooLarge, ClientLeft, TimeoutError) as error:
            await refuse_body(send, error, config.max_body, f"took over {config.body_timeout} s")
            return
        # From here on nothing more is read from the client: one watcher, for the whole call,
        # stops the work (retries included) as soon as the client leaves.
        await watching(
            receive,
            lambda watch: self._answer(scope, routed, headers, body, url, send, watch),
            config.body_timeout,
            abort=scope.get(ABORT),
        )

    async def _answer(
        self,
        scope: Scope,
        routed: tuple[Api, str] | None,
        headers: Headers,
        body: bytes,
        url: str,
        send: Send,
        watch: ClientWatch,
    ) -> None:
        payload = parse_body(body) if routed is not None else None
        forwarded = forward_request_headers(
            headers,
            upstream_key=self.config.upstream_api_key,
            decoded=payload is not None or bool(self._mask),
        )
        if routed is None or payload is None:
            await self._pass_through(scope["method"], url, forwarded, body, send, watch)
            return
        request = httpx2.Request(scope["method"], _parsed(url), headers=forwarded, content=body)
        api, suffix = routed
        with _trace_context(headers):
            call = self.engine.start_call(api, suffix, url, payload, body)
        call.caller = watch  # stopped while the client is still there, the call failed it
        try:
            response = await send_async(call, self.transport, request)
        except (StreamInterrupted, CircuitOpenError, httpx2.TransportError) as error:
            status, code, message, upstream = gave_up(error, self._mask, call.error_type)
            await send_error(send, status, code, message, upstream=upstream, extra=gave_up_headers(error))
            return
        except asyncio.CancelledError:
            if watch.left:
                raise
            # The server's shutdown deadline (see `relay`), before the first token: an error the
            # SDKs know, not uvicorn's plain-text 500 and a logged traceback.
            await send_error(send, 503, "shutting_down", "the proxy shut down before the upstream answered")
            return
        # Only a stream the engine relays can be cut; an answer it holds whole goes in one piece.
        error_frame = dialect_for(api).error_frame if isinstance(response, StreamResponse) else None
        await relay(response, send, watch, error_frame=error_frame, mask=self._mask)

    async def _upload(self, scope: Scope, headers: Headers, url: str, receive: Receive, send: Send) -> None:
        """Any other /v1 request with a body (file and audio uploads can be large): the body
        goes to the upstream as it arrives, bounded by `max_upload` and by `body_timeout`
        between its pieces, and is never held whole. Once it is whole, the client is watched
        while the upstream answers, as for any request."""
        await watching(
            receive,
            lambda watch: self._send_upload(scope, headers, url, receive, send, watch),
            self.config.body_timeout,
            started=False,  # the body is read from the client first: `streamed_body` starts it
            abort=scope.get(ABORT),
        )

    async def _send_upload(
        self, scope: Scope, headers: Headers, url: str, receive: Receive, send: Send, watch: ClientWatch
    ) -> None:
        config = self.config
        forwarded = forward_request_headers(
            headers, upstream_key=config.upstream_api_key, decoded=bool(self._mask)
        )
        forwarded += length_header(headers)
        try:
            if declared_length(headers) > config.max_upload:
                raise BodyTooLarge  # before the first receive, as in _forward
            body = streamed_body(receive, config.max_upload, config.body_timeout, whole=watch.start)
            await self._pass_through(scope["method"], url, forwarded, body, send, watch)
        except (BodyTooLarge, ClientLeft, TimeoutError) as error:
            # The upstream's connection, with the part sent on it, was dropped.
            await refuse_body(send, error, config.max_upload, f"stalled for over {config.body_timeout} s")

    async def _pass_through(
        self,
        method: str,
        url: str,
        headers: Headers,
        content: bytes | AsyncIterator[bytes],
        send: Send,
        watch: ClientWatch,
    ) -> None:
        """Any other /v1 request, as it came, bounded by the pass-through timeouts."""
        request = httpx2.Request(
            method, _parsed(url), headers=headers, content=content, extensions=self._pass_through_timeouts
        )
        response = await self._upstream(request, send, watch)
        if response is not None:
            await relay(response, send, watch, error_frame=None, mask=self._mask)

    async def _upstream(
        self, request: httpx2.Request, send: Send, watch: ClientWatch
    ) -> httpx2.Response | None:
        """The upstream's answer to a request passed through; None when the client got an error."""
        try:
            return await self.transport.handle_async_request(request)
        except httpx2.TimeoutException:
            await send_error(send, 504, "timeout", "upstream timed out")
        except httpx2.TransportError as error:
            await send_error(send, 502, "connection", f"upstream unreachable ({type(error).__name__})")
        except asyncio.CancelledError:
            if watch.left:
                raise
            # The server's shutdown deadline, as for a call before its first token (`_answer`).
            await send_error(send, 503, "shutting_down", "the proxy shut down before the upstream answered")
        return None

    async def _readiness(self) -> tuple[bool, str]:
        cached = self._ready
        if cached is not None and time.monotonic() - cached[0] < self.config.ready_cache:
            return cached[1], cached[2]
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check_readiness())
        # Shielded: a probe that hangs up leaves the check running for the others and the cache.
        return await asyncio.shield(self._checking)

    async def _check_readiness(self) -> tuple[bool, str]:
        from ._preflight import apreflight
        from ._preflight_report import readiness

        try:
            key = self.config.upstream_api_key
            # An empty environment: the calls go straight to the upstream (no HTTP(S)_PROXY) and
            # send no OPENAI_ORG_ID / OPENAI_PROJECT_ID header, so the check must not either.
            report = await apreflight(
                api_key=key or "",
                base_url=self.config.upstream,
                timeout=5.0,
                environ={},
                key_source="upstream_api_key",
                url_source="upstream",
            )
        finally:
            self._checking = None
        # Without a key of its own the proxy can only prove the upstream is reachable.
        needed = ("base_url", "dns", "tcp", "tls") + (("api_key", "models") if key else ())
        ready, detail = readiness(report, needed)
        if ready:
            detail = "upstream reachable" + (" and key accepted" if key else "")
        self._ready = (time.monotonic(), ready, detail)
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
                if self._checking is not None:
                    self._checking.cancel()  # ends by itself within its timeouts; no need to wait
                await self.transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _refuse(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A refusal before the request's body is read: the connection closes when there is one, so
    its bytes (sent now, or after an `Expect: 100-continue` the refusal never granted) are not
    read as the next request."""
    await send_error(send, status, code, message, close=has_body(scope["headers"]), extra=extra)


def _closing(send: Send) -> Send:
    """`send`, its answer closing the connection (`connection: close`)."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return closing


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx2.URL:
    """The parsed upstream URL (immutable), kept: clients call a few paths over and over."""
    return httpx2.URL(url)


# The OpenTelemetry propagator logs a warning for each trace header it refuses (a traceparent
# over 512 characters, a tracestate member out of format), quoting the client's value: any
# client could add a line to the proxy's log with every request. A header the propagator
# refuses is ignored, as a malformed one always was, and silently.
_EXTRACTING: ContextVar[bool] = ContextVar("streamtap_extracting_trace_context", default=False)
_PROPAGATION_LOGGERS = ("opentelemetry.trace.propagation.tracecontext", "opentelemetry.trace.span")


class _QuietWhileExtracting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _EXTRACTING.get()


for _name in _PROPAGATION_LOGGERS:  # the filter drops nothing outside the proxy's own extraction
    logging.getLogger(_name).addFilter(_QuietWhileExtracting())


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
        quiet = _EXTRACTING.set(True)
        try:
            extracted = propagate.extract(carrier)
        finally:
            _EXTRACTING.reset(quiet)
        self._token = context.attach(extracted)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]

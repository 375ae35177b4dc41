"""Door 1: httpx2 transports that run chat completions and responses calls through the engine.

Every other request passes through to the wrapped transport untouched, and the SDK retries it
by its own rules. The engine's calls it never retries: an error status the engine gives up
with says `x-should-retry: false`, and a transport error it gives up with is raised as the
SDK's own `APIConnectionError` or `APITimeoutError` (`sdk_final`), which the SDK raises as they
come. So every attempt of a call is the engine's, and retries never stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import httpx2
import openai

from ._async import send_async
from ._engine import Engine, engine_api, parse_body
from ._errors import CONNECTION_ERRORS
from ._events import Recorder
from ._fallback import Fallback
from ._policy import Policy
from ._sync import send_sync


def _engine(
    owner: str,
    engine: Engine | None,
    policy: Policy | None,
    fallbacks: Iterable[Fallback],
    recorders: Sequence[Recorder] | None,
) -> Engine:
    if engine is None:
        return Engine(policy, fallbacks, recorders)
    if not isinstance(engine, Engine):
        raise TypeError(f"{owner} engine must be a streamtap.Engine or None, got {engine!r}")
    no_fallbacks = isinstance(fallbacks, tuple | list) and not fallbacks
    if policy is not None or recorders is not None or not no_fallbacks:
        # The engine keeps its own: these would be dropped without a word.
        raise TypeError(
            f"{owner} takes either engine= or policy=, fallbacks= and recorders= (the engine has "
            "its own), not both"
        )
    return engine


def _inner(owner: str, transport: object, method: str, example: str) -> None:
    """A TypeError unless `transport` can send as this transport will ask it to (`method`)."""
    if not callable(getattr(transport, method, None)):
        raise TypeError(
            f"{owner} transport must be an httpx2 transport with {method}() (e.g. {example}) or None, "
            f"got {transport!r}"
        )


def sdk_final(error: BaseException, request: httpx2.Request) -> openai.APIConnectionError:
    """The error the SDK raises, as it comes, for the transport error `error` a call gave up
    with: what the SDK makes of one it will not retry, so it does not retry this one either."""
    if isinstance(error, httpx2.TimeoutException):
        return openai.APITimeoutError(request=request)
    return openai.APIConnectionError(request=request)


def _route(engine: Engine, request: httpx2.Request, content: bytes):  # type: ignore[no-untyped-def]
    routed = engine_api(request.method, request.url.path)
    if routed is None:
        return None
    body = parse_body(content)
    if body is None:
        return None
    api, suffix = routed
    return engine.start_call(api, suffix, str(request.url), body, content)


class StreamtapTransport(httpx2.BaseTransport):
    """A sync httpx2 transport that adds streamtap's retries, timeouts, fallbacks and telemetry.

    Args:
        transport: the transport that talks to the upstream (default `httpx2.HTTPTransport()`).
        policy: retries, timeouts, budget and breaker (default `Policy()`).
        fallbacks: tried in order when the primary route fails before the first content.
        recorders: telemetry sinks (default: Prometheus and OpenTelemetry on the global providers).
        engine: share one engine (and so its budget and breakers) between transports.
    """

    def __init__(
        self,
        transport: httpx2.BaseTransport | None = None,
        *,
        policy: Policy | None = None,
        fallbacks: Iterable[Fallback] = (),
        recorders: Sequence[Recorder] | None = None,
        engine: Engine | None = None,
    ) -> None:
        if transport is not None:  # else the first request fails, far from the mistake
            _inner("StreamtapTransport", transport, "handle_request", "httpx2.HTTPTransport()")
        self.engine = _engine("StreamtapTransport", engine, policy, fallbacks, recorders)
        self._transport = transport if transport is not None else httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        call = _route(self.engine, request, request.read())
        if call is None:
            return self._transport.handle_request(request)
        try:
            return send_sync(call, self._transport, request)
        except CONNECTION_ERRORS as error:
            raise sdk_final(error, request) from error

    def close(self) -> None:
        self._transport.close()


class AsyncStreamtapTransport(httpx2.AsyncBaseTransport):
    """The asyncio/trio twin of `StreamtapTransport` (same arguments)."""

    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport | None = None,
        *,
        policy: Policy | None = None,
        fallbacks: Iterable[Fallback] = (),
        recorders: Sequence[Recorder] | None = None,
        engine: Engine | None = None,
    ) -> None:
        if transport is not None:
            _inner(
                "AsyncStreamtapTransport", transport, "handle_async_request", "httpx2.AsyncHTTPTransport()"
            )
        self.engine = _engine("AsyncStreamtapTransport", engine, policy, fallbacks, recorders)
        self._transport = transport if transport is not None else httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        call = _route(self.engine, request, await request.aread())
        if call is None:
            return await self._transport.handle_async_request(request)
        try:
            return await send_async(call, self._transport, request)
        except CONNECTION_ERRORS as error:
            raise sdk_final(error, request) from error

    async def aclose(self) -> None:
        await self._transport.aclose()

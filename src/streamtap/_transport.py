"""Door 1: httpx2 transports that run chat completions and responses calls through the engine.

Every other request passes through to the wrapped transport untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import httpx2

from ._async import send_async
from ._engine import Engine, engine_api, parse_body
from ._events import Recorder
from ._fallback import Fallback
from ._policy import Policy
from ._sync import send_sync


def _engine(
    engine: Engine | None,
    policy: Policy | None,
    fallbacks: Iterable[Fallback],
    recorders: Sequence[Recorder] | None,
) -> Engine:
    if engine is not None:
        return engine
    return Engine(policy, fallbacks, recorders)


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
        self.engine = _engine(engine, policy, fallbacks, recorders)
        self._transport = transport if transport is not None else httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        call = _route(self.engine, request, request.read())
        if call is None:
            return self._transport.handle_request(request)
        return send_sync(call, self._transport, request)

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
        self.engine = _engine(engine, policy, fallbacks, recorders)
        self._transport = transport if transport is not None else httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        call = _route(self.engine, request, await request.aread())
        if call is None:
            return await self._transport.handle_async_request(request)
        return await send_async(call, self._transport, request)

    async def aclose(self) -> None:
        await self._transport.aclose()

"""Transports that send each request the way a given httpx2 client would send it.

`instrument()` puts streamtap's transport in front of a user's HTTP client. Wrapping only
that client's default transport would skip its mounts: the `proxy=` it was built with, the
HTTP(S)_PROXY / ALL_PROXY of the environment it read at construction (`trust_env`), and any
`mounts=`. These routers ask the client which of its transports serves each URL (httpx2's
own `_transport_for_url`, the one place that decision is made), so every attempt, including
a fallback to another upstream URL, goes out as the user's client would send it, over the
user's pools.
"""

from __future__ import annotations

import httpx2


class ClientRouter(httpx2.BaseTransport):
    """Sends each request through the transport `client` would pick for its URL.

    Closing the router closes `client` (its transport and every mount): the pools are the
    client's, and the router is how the instrumented copy reaches them.

    Args:
        client: the user's `httpx2.Client`; kept alive as long as the router.
    """

    def __init__(self, client: httpx2.Client) -> None:
        self.client = client

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.client._transport_for_url(request.url).handle_request(request)

    def close(self) -> None:
        self.client.close()


class AsyncClientRouter(httpx2.AsyncBaseTransport):
    """The `httpx2.AsyncClient` twin of `ClientRouter`."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self.client = client

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self.client._transport_for_url(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        await self.client.aclose()

"""`streamtap.instrument(client)`: a copy of an OpenAI client whose HTTP goes through the engine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import httpx2
import openai

from ._client_router import AsyncClientRouter, ClientRouter
from ._engine import Engine
from ._events import Recorder
from ._fallback import Fallback
from ._policy import Policy
from ._transport import AsyncStreamtapTransport, StreamtapTransport

ClientT = TypeVar("ClientT", openai.OpenAI, openai.AsyncOpenAI)


def instrument(
    client: ClientT,
    *,
    policy: Policy | None = None,
    fallbacks: Iterable[Fallback] = (),
    recorders: Sequence[Recorder] | None = None,
    capture_content: bool | None = None,
) -> ClientT:
    """Return a copy of `client` whose chat completions and responses calls go through streamtap.

    The copy has the SDK's own retries turned off (streamtap's retries see every attempt) and,
    like the SDK's own `client.copy()`, shares the original's connection pool: closing either
    closes the pool. The original's behaviour is left untouched. Everything the SDK
    offers keeps working: the returned streams are ordinary `openai.Stream` objects.

    Args:
        client: an `openai.OpenAI` or `openai.AsyncOpenAI` (or a subclass such as Azure's).
        policy: retries, timeouts, retry budget and circuit breaker (default `Policy()`).
        fallbacks: tried in order when a call fails before its first content, e.g.
            `[Fallback.model("gpt-4o-mini"), Fallback.non_streaming(), Fallback.cached()]`.
        recorders: telemetry sinks; None means Prometheus on the global registry and
            OpenTelemetry on the global tracer and meter providers.
        capture_content: record prompts and answers in spans; None reads
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.
    """
    if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        raise TypeError(
            f"streamtap.instrument takes an openai.OpenAI or openai.AsyncOpenAI, got {type(client).__name__}"
        )
    engine = Engine(policy, fallbacks, recorders, capture_content=capture_content)
    return client.copy(http_client=streamtap_http_client(client._client, engine), max_retries=0)


def streamtap_http_client(http: object, engine: Engine) -> Any:
    """A new httpx2 client that sends through `engine`, each attempt routed as `http` routes it.

    Each request goes out through the transport `http` picks for its URL: its pool, or the
    proxy it was given (`proxy=`, `mounts=`, or HTTP(S)_PROXY when it trusts the environment).
    Keeps every setting of `http`: headers, auth, params, cookies, event hooks, timeout and
    redirects. Shared by `instrument()` and the OpenTelemetry instrumentor, which installs it
    into clients in place.

    Args:
        http: the SDK client's own `httpx2.Client` or `httpx2.AsyncClient`.
        engine: the engine the new client's transport drives.
    """
    # A client already routed through streamtap (e.g. by the OpenTelemetry instrumentor)
    # keeps its route: this engine replaces that one instead of stacking a second on top.
    routed = getattr(http, "_transport", None)
    if isinstance(http, httpx2.AsyncClient):
        inner = routed._transport if isinstance(routed, AsyncStreamtapTransport) else AsyncClientRouter(http)
        transport = AsyncStreamtapTransport(inner, engine=engine)
        return httpx2.AsyncClient(transport=transport, **_settings(http))
    if isinstance(http, httpx2.Client):
        sync_inner = routed._transport if isinstance(routed, StreamtapTransport) else ClientRouter(http)
        sync = StreamtapTransport(sync_inner, engine=engine)
        return httpx2.Client(transport=sync, **_settings(http))
    raise TypeError(
        f"streamtap needs an OpenAI client built on httpx2 (openai 3.x), got {type(http).__name__}"
    )


def _settings(http: httpx2.Client | httpx2.AsyncClient) -> dict[str, Any]:
    """What `http` adds to each request it sends, for the new client that replaces it.

    The rest (TLS, HTTP/2, limits, proxies) lives in `http`'s transports, which the router
    uses. `trust_env` is copied as is: httpx2 reads the environment's proxies only for a
    client built without a transport, and the router already applies the ones `http` read.
    """
    return {
        "auth": http.auth,
        "params": http.params,
        "headers": http.headers,
        "cookies": http.cookies,
        "timeout": http.timeout,
        "follow_redirects": http.follow_redirects,
        "max_redirects": http.max_redirects,
        "event_hooks": http.event_hooks,
        "base_url": http.base_url,
        "trust_env": http.trust_env,
        "default_encoding": http._default_encoding,
    }

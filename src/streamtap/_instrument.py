"""`streamtap.instrument(client)`: a copy of an OpenAI client whose HTTP goes through the engine."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import httpx2
import openai

from ._client_router import AsyncClientRouter, ClientRouter
from ._engine import Engine
from ._events import Recorder
from ._fallback import Fallback
from ._policy import Policy
from ._transport import AsyncStreamtapTransport, StreamtapTransport

log = logging.getLogger("streamtap")
_warned_twice = False

# Bound, not constrained: `instrument(AzureOpenAI(...))` is typed as an AzureOpenAI, not an OpenAI.
ClientT = TypeVar("ClientT", bound=openai.OpenAI | openai.AsyncOpenAI)


def instrument(
    client: ClientT,
    *,
    policy: Policy | None = None,
    fallbacks: Iterable[Fallback] = (),
    recorders: Sequence[Recorder] | None = None,
    capture_content: bool | None = None,
) -> ClientT:
    """Return a copy of `client` whose chat completions and responses calls go through streamtap.

    streamtap's `Policy` alone decides the retries of those calls: the SDK never retries what
    the engine answers or raises, so every attempt is seen and retries never stack. The SDK's
    own retries (`max_retries`) still apply to every other request (models, files, embeddings,
    retrieving a response, ...), which passes through. So does every copy made with `copy()`
    or `with_options()`: a new `http_client` given there is routed through streamtap too.
    Like the SDK's own `client.copy()`, the
    copy shares the original's connection pool: closing either closes the pool. The
    original's behaviour is left untouched. Everything the SDK offers keeps working: the
    returned streams are ordinary `openai.Stream` objects.

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
    warn_if_instrumented_twice()
    # `copy()` returns Self, but mypy widens a union-bound type variable's Self to the union.
    copied = cast(ClientT, client.copy(http_client=streamtap_http_client(client._client, engine)))
    install(copied, engine)
    return copied


def other_instrumentation() -> str | None:
    """The module of an OpenTelemetry instrumentation wrapping the SDK's create(), if any.

    The contrib OpenAI instrumentations wrap these methods with wrapt, whose wrappers keep
    the wrapper function as `_self_wrapper`.
    """
    from openai.resources.chat.completions import AsyncCompletions, Completions
    from openai.resources.responses import AsyncResponses, Responses

    for cls in (Completions, AsyncCompletions, Responses, AsyncResponses):
        wrapper = getattr(cls.__dict__.get("create"), "_self_wrapper", None)
        module = getattr(wrapper, "__module__", None)
        if isinstance(module, str) and module.startswith("opentelemetry.instrumentation."):
            return module
    return None


def warn_if_instrumented_twice() -> None:
    """Log once per process when another OpenTelemetry OpenAI instrumentation is active too.

    Both would record every call: two GenAI client spans, one inside the other, and each call
    counted twice in the `gen_ai.client.*` metrics, which have the same names.
    """
    global _warned_twice
    if _warned_twice:
        return
    module = other_instrumentation()
    if module is not None:
        _warned_twice = True
        log.warning(
            "streamtap: %s instruments the OpenAI SDK too, so every call gets two GenAI spans and "
            "is counted twice in the gen_ai.client.* metrics; keep one (with opentelemetry-instrument: "
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai)",
            module,
        )


def install(client: openai.OpenAI | openai.AsyncOpenAI, engine: Engine) -> None:
    """Route `client`'s HTTP through `engine`, in place, and so every copy it makes
    (`_install_in_copies`).

    A client already routed through streamtap (e.g. made by `copy()` or `with_options()` of
    an instrumented client, which pass its HTTP client on) keeps its route. Used by
    `instrument()` and by the OpenTelemetry instrumentor for every new client: its copies stay
    installed after `uninstrument()` puts the SDK's constructor back.
    """
    http = client._client
    if not isinstance(getattr(http, "_transport", None), StreamtapTransport | AsyncStreamtapTransport):
        # The SDK's own HTTP client stays alive as long as the routed one, which sends through
        # it (the SDK's wrapper closes its pools when collected).
        client._client = streamtap_http_client(http, engine)
    _install_in_copies(client, engine)


def _install_in_copies(client: openai.OpenAI | openai.AsyncOpenAI, engine: Engine) -> None:
    """Make `client.copy()` and `client.with_options()` return clients `install`ed on `engine`.

    The SDK's copies pass the original's HTTP client on, routed already, unless given one of
    their own (`with_options(http_client=...)`), whose calls would bypass streamtap. The class
    is left alone (`type(copy) is openai.OpenAI` stays true); these two bound methods of the
    instance are replaced, and so on down the copies.
    """
    for name in ("copy", "with_options"):
        setattr(client, name, _installing(getattr(client, name), engine))


def _installing(make_copy: Callable[..., Any], engine: Engine) -> Callable[..., Any]:
    @functools.wraps(make_copy)
    def copy(*args: Any, **kwargs: Any) -> Any:
        copied = make_copy(*args, **kwargs)
        install(copied, engine)
        return copied

    return copy


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

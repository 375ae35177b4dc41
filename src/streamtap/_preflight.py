"""`preflight`: is this machine able to call the OpenAI API with this key? Step by step, with hints.

The steps run in order and each is skipped when one it needs failed: the key is present and
well-formed, the base URL parses, DNS resolves its host, TCP connects, TLS verifies (https),
and an authenticated ``GET {base_url}/models`` succeeds. The key never appears in the report,
the logs or any exception text: at most its fingerprint (``sk-...XYZ9``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2

from ._preflight_net import (
    Address,
    Deadline,
    cert_hint,
    check_dns,
    check_tcp,
    check_tls,
    deadline_transport,
    ssl_context,
)
from ._preflight_report import Check, PreflightReport, skipped
from ._preflight_rules import (
    DEFAULT_BASE_URL,
    NETWORK_HINT,
    PROXY_AUTH_HINT,
    Target,
    check_header_id,
    check_key,
    parse_base_url,
    proxy_for,
    proxy_target,
    redact,
    status_hint,
)
from ._secrets import shown_variable
from ._version import __version__

if TYPE_CHECKING:
    import openai

logger = logging.getLogger("streamtap.preflight")
Clock = Callable[[], float]
T = TypeVar("T")
PROVIDER = "the client's api_key provider"


def preflight(
    client: openai.OpenAI | openai.AsyncOpenAI | None = None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 5.0,
    api_key_env: str = "OPENAI_API_KEY",
    environ: Mapping[str, str] | None = None,
    clock: Clock = time.perf_counter,
    key_source: str | None = None,
    url_source: str | None = None,
) -> PreflightReport:
    """Check the key, the base URL, DNS, TCP, TLS and an authenticated ``GET /models``.

    Blocking, even for an `openai.AsyncOpenAI` client (only its key, base URL, organization
    and project are read); from async code use `apreflight`. The network steps use the
    environment's proxy and CA settings (HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE) like the SDK's
    default HTTP client, not a custom ``http_client`` the client may have been given.

    Args:
        client: the SDK client whose key and base URL to check; None reads the environment.
        api_key: overrides the client's key and the environment.
        base_url: overrides the client's base URL and OPENAI_BASE_URL.
        timeout: seconds allowed to each network step (> 0).
        api_key_env: the environment variable holding the key when no client or api_key is given.
        environ: the environment to read (default `os.environ`).
        clock: a monotonic clock in seconds, for the timings.
        key_source, url_source: how the details and hints name where the key and the base URL
            came from (e.g. ``upstream``), when not where they were read.

    Returns:
        A `PreflightReport` with one `Check` per step; ``report.ok`` when all passed.
    """
    _check_arguments(client, api_key, base_url, timeout, api_key_env, environ)
    provider = _provider(client, api_key)
    provided = None if provider is None else _call_provider(provider)
    return _preflight(
        client, api_key, base_url, timeout, api_key_env, environ, clock, key_source, url_source, provided
    )


def _check_arguments(
    client: object, api_key: object, base_url: object, timeout: object, api_key_env: object, environ: object
) -> None:
    """Refuse, naming the parameter, what `preflight` cannot read: else an AttributeError about
    its insides (a key passed as the client, `preflight("sk-...")`)."""
    import openai

    if client is not None and not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        hint = " (a key goes as api_key=)" if isinstance(client, str) else ""
        raise TypeError(
            f"client must be an openai.OpenAI or openai.AsyncOpenAI client, or None, got {type(client).__name__}{hint}"
        )
    for name, value in (("api_key", api_key), ("base_url", base_url)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string or None, got {type(value).__name__}")
    if not isinstance(api_key_env, str):
        raise TypeError(
            f"api_key_env must be the name of an environment variable, got {type(api_key_env).__name__}"
        )
    if environ is not None and not isinstance(environ, Mapping):
        raise TypeError(
            f"environ must be a mapping of names to values (like os.environ) or None, got {type(environ).__name__}"
        )
    if isinstance(timeout, bool) or not (
        isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0
    ):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")


def _preflight(
    client: Any,
    api_key: str | None,
    base_url: str | None,
    timeout: float,
    api_key_env: str,
    environ: Mapping[str, str] | None,
    clock: Clock,
    key_source: str | None,
    url_source: str | None,
    provided: tuple[str | None, Check | None] | None,
) -> PreflightReport:
    """`preflight` once the key is known: `provided` is (key, failure) from the client's api_key
    provider when the key comes from one (called, or awaited, by the caller), else None."""
    env = os.environ if environ is None else environ
    key, read_key_from, url, read_url_from, headers = _inputs(client, api_key, base_url, api_key_env, env)
    key_failure: Check | None = None
    if provided is not None:
        (key, key_failure), read_key_from = provided, PROVIDER
    key_source = key_source or read_key_from
    url_source = url_source or read_url_from
    # An organization or project that no header can carry fails the request before it is sent.
    id_failure = next(
        (
            found
            for source, value in _ids(client, env)
            if value and (found := check_header_id(value, source=source))
        ),
        None,
    )
    checks: list[Check] = []

    def add(check: Check) -> Check:
        logger.debug("preflight %s %s: %s", check.name, check.status, check.detail)
        checks.append(check)
        return check

    url_check, target = _timed(clock, lambda: parse_base_url(url, source=url_source))
    key_check = add(
        key_failure
        or _timed(
            clock, lambda: (check_key(key, source=key_source, host=target.host if target else None), None)
        )[0]
    )
    add(url_check)
    if target is None:
        for name in ("dns", "tcp", "tls"):
            add(skipped(name, "needs base_url"))
        add(
            id_failure
            or skipped("models", "needs api_key, base_url" if not key_check.ok else "needs base_url")
        )
        return PreflightReport.from_checks(checks)
    # One decision for every step, httpx2's: the SDK's requests go the way the checks do.
    proxy = proxy_for(target, environ)
    network = proxy_target(proxy) if proxy else target
    via = f"proxy {network.host}:{network.port}: " if proxy and network else ""
    sock: socket.socket | None = None
    context: ssl.SSLContext | None = None
    try:
        if network is None:
            hint = "fix the proxy URL in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY"
            dns, addresses = (
                Check("dns", False, "the proxy URL from the environment is invalid", hint),
                list[Address](),
            )
        else:
            dns, addresses = _timed(clock, lambda: check_dns(network, timeout, via=via))
        add(dns)
        if dns.ok and network is not None:
            tcp, sock = _timed(clock, lambda: check_tcp(network, addresses, timeout, via=via))
        else:
            tcp = skipped("tcp", "needs dns")
        add(tcp)
        # The SDK's HTTP client loads the CA certificates even for http://, and fails without them.
        # Checked for another environment than this process's (the proxy's readiness gives its
        # own), an http:// upstream needs none: the proxy loads them only for https://.
        no_tls = skipped("tls", "http:// has no TLS" + (" (the proxy forwards it)" if proxy else ""), ok=True)
        if target.scheme == "http" and environ is not None:
            tls, context = no_tls, ssl.create_default_context()
        else:
            tls, context = _timed(clock, lambda: _loaded(ssl_context()))
        if context is None or tls.skipped:
            pass  # `tls` says what is wrong with them, or is no_tls
        elif target.scheme == "http":
            tls = no_tls
        elif proxy:
            tls = skipped("tls", "tunnelled through the proxy: the models request verifies it", ok=True)
        elif sock is not None:
            connected, trusted = sock, context
            tls = _timed(clock, lambda: (check_tls(connected, target.host, timeout, trusted), None))[0]
        else:
            tls = skipped("tls", "needs tcp")
        add(tls)
    finally:
        if sock is not None:
            sock.close()
    # Name the root causes only: a step skipped for an earlier failure is not one.
    needs = [c.name for c in (key_check, dns, tcp, tls) if c.status == "fail"]
    if id_failure is not None:
        add(id_failure)
    elif any(not c.ok for c in (key_check, dns, tcp, tls)):
        add(skipped("models", f"needs {', '.join(needs)}"))
    else:
        assert key is not None  # key_check passed
        assert isinstance(context, ssl.SSLContext)  # tls passed
        verify = context
        add(
            _timed(
                clock,
                lambda: (
                    check_models(
                        target, key, headers, timeout, proxy=proxy, key_source=key_source, context=verify
                    ),
                    None,
                ),
            )[0]
        )
    return PreflightReport.from_checks(checks)


async def apreflight(
    client: openai.OpenAI | openai.AsyncOpenAI | None = None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 5.0,
    api_key_env: str = "OPENAI_API_KEY",
    environ: Mapping[str, str] | None = None,
    key_source: str | None = None,
    url_source: str | None = None,
) -> PreflightReport:
    """`preflight` in a worker thread, for async code (asyncio or trio); same arguments.

    An `openai.AsyncOpenAI` client's api_key provider (``api_key=`` an async callable) is
    awaited here, in the caller's event loop, within `timeout`. Cancelling abandons the thread,
    which ends by itself within the step timeouts.
    """
    import anyio
    import anyio.to_thread
    import openai

    _check_arguments(client, api_key, base_url, timeout, api_key_env, environ)
    provider = _provider(client, api_key)
    if provider is None or not isinstance(client, openai.AsyncOpenAI):
        # A sync client's provider is a blocking call, like the rest: the worker thread makes it.
        run = functools.partial(
            preflight,
            client,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            api_key_env=api_key_env,
            environ=environ,
            key_source=key_source,
            url_source=url_source,
        )
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    provided: tuple[str | None, Check | None]
    try:
        with anyio.fail_after(timeout):
            value = provider()
            if inspect.isawaitable(value):
                value = await value
    except TimeoutError:
        detail = f"{PROVIDER} did not return in {timeout:g} s"
        provided = None, Check("api_key", False, detail, _PROVIDER_HINT)
    except Exception as err:
        provided = _provider_failed(err)
    else:
        provided = _provided(value)
    run = functools.partial(
        _preflight,
        client,
        api_key,
        base_url,
        timeout,
        api_key_env,
        environ,
        time.perf_counter,
        key_source,
        url_source,
        provided,
    )
    return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)


_PROVIDER_HINT = "fix the provider: the SDK calls it for the key before every request, and fails as it does"


def _provider(client: Any, api_key: str | None) -> Callable[[], Any] | None:
    """The client's api_key provider (the SDK's ``api_key=`` a callable, kept in
    ``_api_key_provider``) when the key comes from it, else None."""
    if api_key is not None or client is None:
        return None
    provider = getattr(client, "_api_key_provider", None)
    return provider if callable(provider) else None


def _call_provider(provider: Callable[[], Any]) -> tuple[str | None, Check | None]:
    """(key, None) from the provider, or (None, the failed ``api_key`` check); an async one is
    run to its end here, unless this thread runs an event loop (then use `apreflight`)."""
    try:
        value = provider()
        if inspect.isawaitable(value):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                value = asyncio.run(_awaited(value))
            else:
                getattr(value, "close", lambda: None)()  # never awaited: no warning for it
                detail = f"{PROVIDER} is async, and preflight blocks inside a running event loop"
                return None, Check("api_key", False, detail, "use `await apreflight(client)` from async code")
    except Exception as err:
        return _provider_failed(err)
    return _provided(value)


async def _awaited(value: Any) -> Any:
    return await value


def _provided(value: object) -> tuple[str | None, Check | None]:
    if isinstance(value, str):
        return value, None
    detail = f"{PROVIDER} returned {type(value).__name__}, not a str"
    return None, Check("api_key", False, detail, "make the provider return the key itself, a str")


def _provider_failed(err: BaseException) -> tuple[None, Check]:
    # Its text is the provider's own, as free as a server's: anything shaped like a key is masked.
    text = redact(str(err), None)[:200]
    detail = f"{PROVIDER} raised {type(err).__name__}" + (f": {text}" if text else "")
    return None, Check("api_key", False, detail, _PROVIDER_HINT)


def _inputs(
    client: Any, api_key: str | None, base_url: str | None, api_key_env: str, env: Mapping[str, str]
) -> tuple[str | None, str, str, str, dict[str, str]]:
    """(key, its source, base URL, its source, extra headers), the way the SDK picks them."""
    key: str | None
    if api_key is not None:
        key, key_source = api_key, "the given api_key"
    elif client is not None:
        key, key_source = client.api_key, "the client's api_key"
    else:
        key, key_source = env.get(api_key_env), shown_variable(api_key_env, "api_key_env")
    if base_url is not None:
        url, url_source = base_url, "the given base URL"
    elif client is not None:
        url, url_source = str(client.base_url), "the client's base_url"
    elif "OPENAI_BASE_URL" in env:
        url, url_source = env["OPENAI_BASE_URL"], "OPENAI_BASE_URL"
    else:
        url, url_source = DEFAULT_BASE_URL, "the default"
    # A wrong organization or project header makes a good key fail: send what the SDK sends.
    headers = {"user-agent": f"streamtap-preflight/{__version__}"}
    for (_, value), header in zip(_ids(client, env), ("openai-organization", "openai-project"), strict=True):
        if value:
            headers[header] = value
    return key, key_source, url, url_source, headers


def _ids(client: Any, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """[(where the organization came from, it), (the same for the project)], "" when unset."""
    if client is not None:
        return [
            ("the client's organization", client.organization or ""),
            ("the client's project", client.project or ""),
        ]
    return [
        ("OPENAI_ORG_ID", env.get("OPENAI_ORG_ID", "")),
        ("OPENAI_PROJECT_ID", env.get("OPENAI_PROJECT_ID", "")),
    ]


def _loaded(context: ssl.SSLContext | Check) -> tuple[Check, ssl.SSLContext | None]:
    """(the failed ``tls`` check, None) when the CA certificates did not load, else (a
    placeholder, the context)."""
    if isinstance(context, Check):
        return context, None
    return Check("tls", True, "CA certificates loaded"), context


def _timed(clock: Clock, step: Callable[[], tuple[Check, T]]) -> tuple[Check, T]:
    """Run `step` and stamp its Check with the elapsed seconds; returns (check, extra)."""
    start = clock()
    check, extra = step()
    return dataclasses.replace(check, seconds=clock() - start), extra


def check_models(
    target: Target,
    key: str,
    headers: Mapping[str, str],
    timeout: float,
    *,
    transport: httpx2.BaseTransport | None = None,
    proxy: str | None = None,
    key_source: str = "OPENAI_API_KEY",
    context: ssl.SSLContext | None = None,
) -> Check:
    """Step 6: an authenticated ``GET {base_url}/models`` answers 200 with a model list.

    Args:
        target: the parsed base URL.
        key: the API key, sent as ``Authorization: Bearer``; never part of the result.
        headers: extra request headers (user agent, organization, project).
        timeout: seconds for the whole request, head and body: one deadline, not one per read.
        transport: an httpx2 transport (tests); default one through `proxy`, under the deadline.
        proxy: the proxy to send the request through (`proxy_for`, as the earlier steps took
            it), None for none.
        key_source: where the key came from, named in the hint when it is rejected.
        context: the SSL context to verify with; default httpx2's (SSL_CERT_FILE, SSL_CERT_DIR).
    """
    deadline: Deadline | None = None
    if transport is None:
        if context is None:
            loaded = ssl_context()
            if isinstance(loaded, Check):
                return dataclasses.replace(loaded, name="models")
            context = loaded
        # Not the client's own reading of the environment: the steps before went one way,
        # this request must not go another.
        transport, deadline = deadline_transport(proxy, context, timeout)
    request_headers = {**headers, "authorization": f"Bearer {key}"}
    try:
        with httpx2.Client(timeout=timeout, transport=transport, follow_redirects=False) as http:
            response = http.get(target.models_url, headers=request_headers)
    except httpx2.ProxyError as err:
        hint = "the proxy failed: check HTTPS_PROXY / HTTP_PROXY, or NO_PROXY for this host"
        if str(err).startswith("407"):
            hint = PROXY_AUTH_HINT
        return Check("models", False, redact(f"GET /models via the proxy failed: {err}", key), hint)
    except httpx2.TimeoutException:
        if deadline is not None and deadline.received:
            hint = (
                f"answered too slowly ({deadline.received} bytes in {timeout:g} s, not the whole answer): "
                "check a proxy or gateway in the way, or raise --timeout"
            )
            return Check("models", False, f"GET {target.models_url} took more than {timeout:g} s", hint)
        hint = f"no answer in {timeout:g} s: raise --timeout, or check a firewall or proxy (HTTPS_PROXY)"
        return Check("models", False, f"GET {target.models_url} timed out", hint)
    except httpx2.HTTPError as err:
        text = redact(str(err), key)
        hint = cert_hint(text) if "CERTIFICATE_VERIFY_FAILED" in text else NETWORK_HINT
        return Check("models", False, f"GET {target.models_url} failed: {text}", hint)
    # The reason phrase is the server's text, as free as a body: a server may echo the key in it.
    status = redact(f"{response.status_code} {response.reason_phrase}".strip(), key)
    body = _json(response)
    if response.status_code == 200:
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list):
            return Check("models", True, f"GET /models: {status}, {len(data)} models")
        hint = f"this is not an OpenAI-compatible API: {target.source} should be its root, like .../v1"
        return Check("models", False, f"GET /models: {status} but no model list in the body", hint)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    detail = f"GET /models: {status}"
    if isinstance(message, str) and message:
        detail += f": {redact(message, key)[:200]}"
    if 300 <= response.status_code < 400 and "location" in response.headers:
        detail += f" → {redact(response.headers['location'], key)}"
    hint = status_hint(
        response.status_code,
        code if isinstance(code, str) else None,
        key_source=key_source,
        url_source=target.source,
    )
    return Check("models", False, detail, hint)


def _json(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None

"""Fallbacks: constructors, request rewriting, the answer cache and its key."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest

from streamtap._fallback import (
    Fallback,
    MemoryCache,
    Route,
    cache_key,
    cache_scope,
    carries_credentials,
    fallback_route,
    shown_url,
    upstream_of,
)

URL = "http://up:8080/v1/chat/completions"
BODY: dict[str, Any] = {
    "model": "gpt-x",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.2,
}
PRIMARY = Route(URL, "http://up:8080", "gpt-x", BODY, True)
SCOPE = cache_scope(URL, httpx2.Headers({"authorization": "Bearer sk-a"}))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- constructors ----------------------------------------------------------------------------------


def test_constructors() -> None:
    assert Fallback.model("gpt-y") == Fallback(kind="model", to_model="gpt-y")
    assert Fallback.upstream("https://other/v1/", api_key="sk-2", model="m") == Fallback(
        kind="upstream", to_model="m", base_url="https://other/v1", api_key="sk-2"
    )
    assert Fallback.non_streaming() == Fallback(kind="non_streaming")
    cache = MemoryCache()
    assert Fallback.cached(cache) == Fallback(kind="cache", cache=cache)
    assert isinstance(Fallback.cached().cache, MemoryCache)


@pytest.mark.parametrize("name", ["", "  ", None, 3])
def test_model_needs_a_name(name: Any) -> None:
    with pytest.raises(ValueError, match=r"Fallback\.model needs a non-empty model name, got "):
        Fallback.model(name)


@pytest.mark.parametrize("base_url", ["other/v1", "ftp://x", "", None])
def test_upstream_needs_an_http_url(base_url: Any) -> None:
    with pytest.raises(ValueError, match=r"Fallback\.upstream base_url must start with http:// or https://"):
        Fallback.upstream(base_url)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda: Fallback.upstream("https://other/v1", api_key=3),
            r"Fallback\.upstream api_key must be a non-empty string or None .*got int$",
            id="key-not-text",
        ),
        pytest.param(
            lambda: Fallback.upstream("https://other/v1", api_key=""),
            r"Fallback\.upstream api_key must be a non-empty string",
            id="key-empty",
        ),
        pytest.param(
            lambda: Fallback.upstream("https://other/v1", model=""),
            r"Fallback\.upstream model must be a non-empty model name or None, got ''",
            id="model-empty",
        ),
        pytest.param(
            lambda: Fallback.cached({}),
            r"Fallback\.cached cache must be an AnswerCache, with get\(key\) .* and set\(key, text\) .*got \{\}",
            id="cache-without-set",
        ),
        pytest.param(
            lambda: Fallback("model"),
            r"Fallback\.model needs a non-empty model name, got None",
            id="direct-model-without-name",
        ),
        pytest.param(
            lambda: Fallback("modle"),
            r"Fallback\.kind must be one of model, upstream, non_streaming, cache, got 'modle'",
            id="direct-unknown-kind",
        ),
    ],
)
def test_a_fallback_that_cannot_be_routed_is_refused_when_built(make: Any, message: str) -> None:
    """Before, these were accepted and failed at the first call that needed them (or every call)."""
    with pytest.raises(ValueError, match=message):
        make()


def test_an_upstream_key_loses_the_whitespace_around_it() -> None:
    assert Fallback.upstream("https://other/v1", api_key=" sk-2\n").api_key == "sk-2"
    assert Fallback.upstream("https://other/v1", api_key="sk-2\r\n") == Fallback.upstream(
        "https://other/v1", api_key="sk-2"
    )


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (" \n ", "a non-empty string, got only whitespace"),
        ("", "a non-empty string, got an empty one"),  # it said "got only whitespace"
        ("sk-in\nside-0042", "a string without control characters"),
        ("sk-\x00-0042", "a string without control characters"),
        ("sk-tab\t-0042", "a string without control characters"),
    ],
)
def test_an_upstream_key_no_header_can_carry_is_refused_unseen(key: str, why: str) -> None:
    with pytest.raises(ValueError, match=rf"^Fallback\.upstream api_key must be {why}") as refused:
        Fallback.upstream("https://other/v1", api_key=key)
    assert "0042" not in str(refused.value)


@pytest.mark.parametrize("base_url", ["http://", "https:///", "http:///v1"])
def test_an_upstream_url_without_a_host_says_so_as_given(base_url: str) -> None:
    """`http://` was reported as "must start with http:// or https://, got 'http:'": its
    trailing / was stripped before the check."""
    message = rf"^Fallback\.upstream base_url must be an http:// or https:// base URL .*, got {re.escape(repr(base_url))}: it has no host$"
    with pytest.raises(ValueError, match=message):
        Fallback.upstream(base_url)


@pytest.mark.parametrize("base_url", ["HTTP://h/v1", "Https://h/v1/", "hTTp://h:8080/v1"])
def test_an_upstream_scheme_is_case_insensitive(base_url: str) -> None:
    """`Fallback.upstream("HTTP://h/v1")` was refused while `proxy --upstream HTTP://h/v1` was
    accepted (RFC 3986: schemes are case-insensitive); both are taken, in lower case."""
    from streamtap._proxy_config import ProxyConfig

    scheme, _, rest = base_url.rstrip("/").partition("://")
    expected = f"{scheme.lower()}://{rest}"
    assert Fallback.upstream(base_url).base_url == expected
    assert ProxyConfig(upstream=base_url).upstream == expected


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        (
            "https://user:hunter2pw@backup.example.com/v1",
            "must not carry credentials (user:password@), got "
            "'https://backup.example.com/v1': pass the key as api_key=",
        ),
        ("https://:hunter2pw@backup.example.com/v1", "must not carry credentials"),
        ("https://hunter2pw@backup.example.com/v1", "must not carry credentials"),
        (
            "ftp://user:hunter2pw@backup.example.com/v1",
            "must start with http:// or https://, got 'ftp://backup.example.com/v1'",
        ),
        ("https://user:hunter2pw@backup.example.com:99999/v1", "must not carry credentials"),
    ],
)
def test_an_upstream_url_with_credentials_is_refused_unseen(url: str, refused: str) -> None:
    """They were accepted, then silently ignored (the caller's Authorization went instead), and
    repr() showed them."""
    with pytest.raises(ValueError, match=rf"^Fallback\.upstream base_url {re.escape(refused)}") as raised:
        Fallback.upstream(url)
    assert "hunter2pw" not in str(raised.value)


def test_a_shown_url_has_no_credentials_and_no_query() -> None:
    assert shown_url("https://u:p@host:8443/v1?x=@y#@z") == "https://host:8443/v1?..."
    assert shown_url("u:p@host/v1") == "host/v1"
    assert shown_url("https://a@b@host") == "https://host"
    assert shown_url("not a url") == "not a url"
    assert shown_url("https://host/v1?api-key=QUERYSECRET") == "https://host/v1?..."
    assert shown_url("https://host/v1#k=SECRET") == "https://host/v1#..."
    assert shown_url("https://[::1]:8443/v1") == "https://[::1]:8443/v1"
    # A password holding an unescaped ? # or / ends the authority early as parsers read it: an
    # @ after the authority hides all before it, digits that read as a port too.
    for cut in "?#/":
        assert shown_url(f"https://user:ab{cut}PASSWORD@host/v1") == "https://...@host/v1"
    assert shown_url("https://admin:20240611?PASSWORD@host/v1") == "https://...@host/v1"
    # Over-cautious with an @ in the path or query: hidden up to it.
    assert shown_url("https://host/v1/@team/openai") == "https://...@team/openai"


def test_credentials_are_an_at_in_the_authority_or_after_one_that_is_no_host() -> None:
    for url in ("https://u:p@host/v1", "u:p@host", "https://user:ab?P@host/v1", "https://user:a/b@host/v1"):
        assert carries_credentials(url), url
    # An @ in the path of a URL whose authority is a host is the path's (gateways route so).
    for url in (
        "https://host/v1/@team/openai",
        "https://gw.example/accounts/a@b.example/v1",
        "https://host/v1",
    ):
        assert not carries_credentials(url), url


def test_repr_never_shows_the_key() -> None:
    fallback = Fallback.upstream("https://other/v1", api_key="sk-secret")
    assert repr(fallback) == "Fallback.upstream('https://other/v1')"
    assert "sk-secret" not in repr(fallback) and "sk-secret" not in str(fallback)
    assert repr(Fallback.model("gpt-y")) == "Fallback.model('gpt-y')"
    assert repr(Fallback.non_streaming()) == "Fallback.non_streaming()"
    # The URL, not the model in its place; and the constructor's names.
    upstream = Fallback.upstream("https://other/v1", api_key="sk-secret", model="gpt-4o-mini")
    assert repr(upstream) == "Fallback.upstream('https://other/v1', model='gpt-4o-mini')"
    assert repr(Fallback.cached()) == "Fallback.cached()"


def test_memory_cache_repr_shows_its_settings() -> None:
    assert repr(MemoryCache()) == "MemoryCache(max_entries=1024, ttl=3600.0, max_bytes=67108864)"
    assert (
        repr(MemoryCache(max_entries=3, ttl=5, max_bytes=80))
        == "MemoryCache(max_entries=3, ttl=5.0, max_bytes=80)"
    )


# -- routes -----------------------------------------------------------------------------------------


def test_model_route() -> None:
    route = fallback_route(PRIMARY, Fallback.model("gpt-y"), "/chat/completions")
    assert route == Route(URL, "http://up:8080", "gpt-y", {**BODY, "model": "gpt-y"}, True, "model")
    assert BODY["model"] == "gpt-x"  # the caller's body is not modified


@pytest.mark.parametrize(
    ("url", "suffix", "sent_to"),
    [
        (  # Azure OpenAI: the deployment in the path serves the call, whatever the body says
            "https://r.openai.azure.com/openai/deployments/gpt-x/chat/completions?api-version=2024-10-21",
            "/chat/completions",
            "https://r.openai.azure.com/openai/deployments/gpt%2Fy/chat/completions?api-version=2024-10-21",
        ),
        (
            "http://h/openai/deployments/d1/chat/completions",
            "/chat/completions",
            "http://h/openai/deployments/gpt%2Fy/chat/completions",
        ),
        ("http://h/v1/chat/completions?x=/deployments/a", "/chat/completions", None),  # not in the path
        ("http://h/openai/responses?api-version=preview", "/responses", None),  # body's model decides
        ("http://h/deployments//chat/completions", "/chat/completions", None),
    ],
)
def test_model_route_to_an_azure_deployment(url: str, suffix: str, sent_to: str | None) -> None:
    """None: the URL names no deployment and is kept."""
    primary = Route(url, upstream_of(url), "gpt-x", BODY, True)
    route = fallback_route(primary, Fallback.model("gpt/y"), suffix)
    assert route is not None
    assert route.url == (sent_to or url)
    assert route.body["model"] == "gpt/y"


def test_upstream_route() -> None:
    route = fallback_route(
        PRIMARY, Fallback.upstream("https://other:8443/v1", api_key="sk-2"), "/chat/completions"
    )
    assert route == Route(
        "https://other:8443/v1/chat/completions",
        "https://other:8443",
        "gpt-x",
        BODY,
        True,
        "upstream",
        "sk-2",
    )
    with_model = fallback_route(PRIMARY, Fallback.upstream("http://o/v1", model="llama"), "/responses")
    assert with_model is not None
    assert (with_model.url, with_model.model, with_model.body["model"], with_model.api_key) == (
        "http://o/v1/responses",
        "llama",
        "llama",
        None,
    )


def test_non_streaming_route() -> None:
    route = fallback_route(PRIMARY, Fallback.non_streaming(), "/chat/completions")
    body = {"model": "gpt-x", "messages": BODY["messages"], "temperature": 0.2}
    assert route == Route(URL, "http://up:8080", "gpt-x", body, False, "non_streaming")
    plain = Route(URL, "http://up:8080", "gpt-x", {"model": "gpt-x"}, False)
    assert fallback_route(plain, Fallback.non_streaming(), "/chat/completions") is None


def test_non_streaming_route_of_a_background_response_asks_for_the_finished_answer() -> None:
    """A background request is answered at once, queued and without output."""
    body = {"model": "gpt-x", "input": "hi", "stream": True, "background": True}
    primary = Route("http://up:8080/v1/responses", "http://up:8080", "gpt-x", body, True)
    route = fallback_route(primary, Fallback.non_streaming(), "/responses")
    assert route is not None and route.body == {"model": "gpt-x", "input": "hi"}


def test_cache_route() -> None:
    route = fallback_route(PRIMARY, Fallback.cached(), "/chat/completions")
    assert route == Route(URL, "http://up:8080", "gpt-x", BODY, True, "cache")


@pytest.mark.parametrize(
    ("url", "upstream"),
    [
        ("http://up:8080/v1/chat/completions", "http://up:8080"),
        ("https://api.openai.com/v1/responses", "https://api.openai.com"),
        ("http://[::1]:9/v1", "http://[::1]:9"),
        ("http://host", "http://host"),
    ],
)
def test_upstream_of(url: str, upstream: str) -> None:
    assert upstream_of(url) == upstream


# -- cache key --------------------------------------------------------------------------------------


def test_cache_key_ignores_fields_that_do_not_change_the_answer() -> None:
    key = cache_key("chat_completions", BODY, SCOPE)
    assert len(key) == 64 and int(key, 16) >= 0
    same = {
        **{k: v for k, v in BODY.items() if k not in ("stream", "stream_options")},
        "user": "u1",
        "metadata": {"a": "b"},
        "store": True,
        "service_tier": "flex",
        "background": True,
    }
    assert cache_key("chat_completions", same, SCOPE) == key
    # key order does not matter
    assert cache_key("chat_completions", dict(reversed(list(BODY.items()))), SCOPE) == key


@pytest.mark.parametrize(
    "change",
    [{"model": "gpt-y"}, {"temperature": 0.3}, {"messages": [{"role": "user", "content": "ho"}]}],
)
def test_cache_key_changes_with_the_request(change: dict[str, Any]) -> None:
    assert cache_key("chat_completions", {**BODY, **change}, SCOPE) != cache_key(
        "chat_completions", BODY, SCOPE
    )


def test_cache_key_depends_on_the_api() -> None:
    assert cache_key("responses", BODY, SCOPE) != cache_key("chat_completions", BODY, SCOPE)


def test_cache_key_depends_on_whose_request_it_is() -> None:
    other = cache_scope(URL, httpx2.Headers({"authorization": "Bearer sk-b"}))
    assert cache_key("chat_completions", BODY, other) != cache_key("chat_completions", BODY, SCOPE)


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        pytest.param(URL, {"authorization": "Bearer sk-b"}, id="another-key"),
        pytest.param(URL, {}, id="no-key"),
        pytest.param(URL, {"authorization": "Bearer sk-a", "openai-project": "p2"}, id="another-project"),
        pytest.param(URL, {"authorization": "Bearer sk-a", "openai-organization": "o2"}, id="another-org"),
        pytest.param(URL, {"api-key": "sk-a"}, id="azure-header"),
        pytest.param(
            "http://other:8080/v1/chat/completions", {"authorization": "Bearer sk-a"}, id="another-upstream"
        ),
        pytest.param(URL + "?api-version=2", {"authorization": "Bearer sk-a"}, id="another-query"),
    ],
)
def test_cache_scope_differs_by_credential_and_url(url: str, headers: dict[str, str]) -> None:
    assert cache_scope(url, httpx2.Headers(headers)) != SCOPE


@pytest.mark.parametrize(
    "name",
    [
        "x-api-key",
        "Ocp-Apim-Subscription-Key",
        "cf-aig-authorization",
        "helicone-auth",
        "cookie",
        "x-portkey-api-key",
        "x-authtoken",
        "accesskey",
        "x-authentication",
    ],
)
def test_a_gateways_own_credential_header_scopes_the_cache_too(name: str) -> None:
    # Behind a gateway that takes its key in a header of its own, two tenants' requests differ
    # only there: one's cached answer must never serve the other.
    def scope(key: str) -> str:
        return cache_scope(URL, httpx2.Headers({"authorization": "Bearer sk-a", name: key}))

    assert scope("tenant-a") != scope("tenant-b")
    assert scope("tenant-a") not in (SCOPE, scope("tenant-b")) and scope("tenant-a") == scope("tenant-a")


def test_cache_scope_is_a_digest_that_ignores_other_headers() -> None:
    # Per-request values (retry counts, idempotency keys, sessions, traces) would give every
    # request a scope of its own: the cache would never serve.
    others = {
        "x-stainless-retry-count": "2",
        "idempotency-key": "stainless-1",
        "x-idempotency-key": "i-2",
        "helicone-session-id": "s-3",
        "x-session-id": "s-4",
        "x-portkey-trace-id": "t-5",
        "x-portkey-provider": "openai",
        "x-max-tokens": "100",
        "x-author": "someone",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    headers = httpx2.Headers({"Authorization": "Bearer sk-a", **others})
    assert cache_scope(URL, headers) == SCOPE  # header names without regard to case; others ignored
    assert len(SCOPE) == 64 and "sk-a" not in SCOPE


# -- MemoryCache ------------------------------------------------------------------------------------


def test_memory_cache_get_set() -> None:
    cache = MemoryCache(clock=Clock())
    assert cache.get("k") is None
    cache.set("k", "v")
    assert cache.get("k") == "v"
    cache.set("k", "w")
    assert (cache.get("k"), len(cache)) == ("w", 1)


def test_memory_cache_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(ttl=10.0, clock=clock)
    cache.set("k", "v")
    clock.now = 9.999
    assert cache.get("k") == "v"
    clock.now = 10.0
    assert cache.get("k") is None
    assert len(cache) == 0  # an expired entry is dropped when read
    cache.set("k", "again")  # setting again restarts the ttl
    clock.now = 19.0
    assert cache.get("k") == "again"


def test_memory_cache_lru_eviction() -> None:
    cache = MemoryCache(max_entries=2, clock=Clock())
    cache.set("a", "1")
    cache.set("b", "2")
    assert cache.get("a") == "1"  # a is now the most recently used
    cache.set("c", "3")
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == ("1", None, "3", 2)
    cache.set("a", "1'")  # re-setting refreshes recency too
    cache.set("d", "4")
    assert (cache.get("a"), cache.get("c"), cache.get("d")) == ("1'", None, "4")


def test_memory_cache_keeps_at_most_max_bytes_of_text() -> None:
    # By entries alone, 1,024 answers of 684 KB took a proxy's memory to 771 MB.
    clock = Clock()
    cache = MemoryCache(max_bytes=80, clock=clock)  # an answer of at most 10 bytes is kept
    for key in "abcdefg":
        cache.set(key, key * 10)
    cache.set("h", "é" * 5)  # 10 bytes of UTF-8 (5 characters): 80 in all, nothing evicted
    assert len(cache) == 8
    assert cache.get("a") == "a" * 10  # now the most recently used
    cache.set("i", "i" * 10)  # 90: the least recently used goes (b)
    assert cache.get("b") is None and cache.get("a") == "a" * 10 and len(cache) == 8
    cache.set("big", "x" * 11)  # over an eighth of max_bytes: served, not kept
    assert cache.get("big") is None and len(cache) == 8
    cache.set("a", "x" * 11)  # too large now: the key's old answer goes too
    assert cache.get("a") is None and len(cache) == 7
    clock.now = 4000.0  # expired answers, once read, give their bytes back
    assert [cache.get(key) for key in "cdefghi"] == [None] * 7 and len(cache) == 0
    for key in "jklmnopq":
        cache.set(key, key * 10)
    assert len(cache) == 8  # 80 bytes: every removal gave its bytes back


@pytest.mark.parametrize("max_bytes", [0, -1, 1.5, True, "3"])
def test_memory_cache_rejects_bad_max_bytes(max_bytes: Any) -> None:
    with pytest.raises(ValueError, match=r"MemoryCache\.max_bytes must be an integer >= 1, got "):
        MemoryCache(max_bytes=max_bytes)


@pytest.mark.parametrize("max_entries", [0, -1, 1.5, True, "3"])
def test_memory_cache_rejects_bad_max_entries(max_entries: Any) -> None:
    with pytest.raises(ValueError, match=r"MemoryCache\.max_entries must be an integer >= 1, got "):
        MemoryCache(max_entries=max_entries)


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), True, "60"])
def test_memory_cache_rejects_bad_ttl(ttl: Any) -> None:
    with pytest.raises(ValueError, match=r"MemoryCache\.ttl must be a number of seconds > 0, got "):
        MemoryCache(ttl=ttl)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:abc/v1", "Port could not be cast to integer value as 'abc'"),
        ("http://127.0.0.1:99999/v1", "Port out of range 0-65535"),
        ("http://127.0.0.1:0/v1", "its port is 0"),
        ("http://[::1/v1", "Invalid IPv6 URL"),
        ("http://api.example/v1\n", "it has spaces or control characters"),
        ("http:///v1", "it has no host"),
    ],
)
def test_an_upstream_fallback_base_url_every_request_could_not_parse_is_refused(url: str, why: str) -> None:
    # A bad port was accepted, then every request routed there failed as an InvalidURL.
    with pytest.raises(ValueError, match=r"^Fallback\.upstream base_url must be an http") as refused:
        Fallback.upstream(url)
    message = str(refused.value)
    assert message.startswith(
        "Fallback.upstream base_url must be an http:// or https:// base URL with a host"
    )
    assert message.endswith(f"got {url.rstrip('/')!r}: {why}")
    assert Fallback.upstream("http://[::1]:8080/v1/").base_url == "http://[::1]:8080/v1"


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"kind": "non_streaming", "to_model": "x"}, "Fallback of kind 'non_streaming' takes no to_model"),
        (
            {"kind": "model", "to_model": "m", "api_key": "sk-12345678"},
            "Fallback of kind 'model' takes no api_key",
        ),
        ({"kind": "cache", "base_url": "http://h/v1"}, "Fallback of kind 'cache' takes no base_url"),
        (
            {"kind": "upstream", "base_url": "http://h/v1", "cache": {}},
            "Fallback of kind 'upstream' takes no cache",
        ),
    ],
)
def test_a_field_its_kind_takes_no_value_of_is_refused(fields: dict[str, object], refused: str) -> None:
    """Not ignored: `Fallback(kind="non_streaming", to_model="x")` showed as a call that is none."""
    with pytest.raises(ValueError, match=f"^{re.escape(refused)}; build one with Fallback\\."):
        Fallback(**fields)  # type: ignore[arg-type]

"""Fallbacks: what to try, in order, when the primary route cannot serve a call before commit.

Pure request rewriting; the answer synthesis lives in the dialects.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from ._secrets import clean_secret
from ._taxonomy import FALLBACK_KINDS, FallbackKind

# Request fields that do not change the answer: a cached answer is keyed without them.
_NOT_IN_KEY = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "background",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)
# Request fields a non-streaming fallback drops.
_NOT_IN_NON_STREAMING = frozenset({"stream", "stream_options", "background"})
# Who a request is from: its credential (`Authorization`, Azure's `api-key`) and the account it
# bills (OpenAI's organization and project headers).
IDENTITY_HEADERS = ("authorization", "api-key", "openai-organization", "openai-project")
# A gateway's own credential goes in a header of its choosing (Azure API Management's
# `Ocp-Apim-Subscription-Key`, `x-api-key`, Cloudflare AI Gateway's `cf-aig-authorization`,
# Helicone's `helicone-auth`, a cookie): a header one of whose words (split at `-` and `_`) is a
# credential's is whose the request is, too, a word joined of two (`x-authtoken`, `accesskey`)
# among them. Whole words: `x-portkey-provider` or `x-max-tokens` is none, nor is a session or
# an idempotency id, which name a visit or a request, not its sender.
_CREDENTIAL_WORDS = frozenset(
    {"auth", "authorization", "authentication", "credential", "credentials", "secret", "password"}
    | {"cookie", "subscription", "key", "token"}
    | {
        prefix + suffix
        for prefix in ("api", "access", "auth", "secret", "bearer", "id", "refresh", "session", "private")
        for suffix in ("key", "token")
    }
)
_WORD = re.compile(r"[-_]")


def is_identity(name: str) -> bool:
    """Whether a request header (by its lower-case name) says who sends the request."""
    if name in IDENTITY_HEADERS:
        return True
    words = set(_WORD.split(name))
    return not words.isdisjoint(_CREDENTIAL_WORDS) and "idempotency" not in words


class AnswerCache(Protocol):
    """Where last good answers are kept; bring your own (Redis, ...) or use `MemoryCache`."""

    def get(self, key: str) -> str | bytes | None:
        """The text kept for `key` (UTF-8 `bytes` are read as text, as a Redis client without
        ``decode_responses`` returns it), or None."""
        ...

    def set(self, key: str, text: str) -> None: ...


class MemoryCache:
    """An in-memory LRU of the last good answers, each valid for `ttl` seconds. Thread-safe.

    Args:
        max_entries: how many answers to keep (>= 1).
        ttl: seconds an answer stays usable (> 0).
        max_bytes: the most text to keep, in UTF-8 bytes (>= 1; 64 MiB): the least recently used
            answers go first, and an answer over an eighth of it is not kept (it would push out
            many). Without it 1,024 long answers held as many times their size.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        max_entries: int = 1024,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int = 64 * 2**20,
    ):
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            raise ValueError(f"MemoryCache.max_entries must be an integer >= 1, got {max_entries!r}")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not ttl > 0:
            raise ValueError(f"MemoryCache.ttl must be a number of seconds > 0, got {ttl!r}")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise ValueError(f"MemoryCache.max_bytes must be an integer >= 1, got {max_bytes!r}")
        self._max = max_entries
        self._ttl = float(ttl)
        self._max_bytes = max_bytes
        self._bytes = 0  # the UTF-8 size of the texts kept
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, str, int]] = OrderedDict()

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                self._bytes -= entry[2]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def set(self, key: str, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            if size > self._max_bytes // 8:
                return  # too large to keep: the answer was served all the same
            self._entries[key] = (self._clock() + self._ttl, text, size)
            self._bytes += size
            while len(self._entries) > self._max or self._bytes > self._max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][2]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self._max}, ttl={self._ttl}, max_bytes={self._max_bytes})"


@dataclass(frozen=True, slots=True)
class Fallback:
    """One way to serve a call when the primary route fails before its first content.

    Build them with the class methods; pass them, in the order to try, to `instrument`.
    Each fallback is tried once; fallbacks never apply after content was delivered.
    """

    kind: FallbackKind
    to_model: str | None = None  # `model` is the constructor's name
    base_url: str | None = None
    api_key: str | None = None
    cache: AnswerCache | None = None

    def __post_init__(self) -> None:
        # Checked here, not only in the class methods, so that every Fallback the engine gets
        # can be routed; a mistake would otherwise surface on the first failing call.
        kind = self.kind
        if kind not in FALLBACK_KINDS:
            raise ValueError(
                f"Fallback.kind must be one of {', '.join(FALLBACK_KINDS)}, got {kind!r} (build one with "
                "Fallback.model(), .upstream(), .non_streaming() or .cached())"
            )
        # A field its kind takes no value of is refused, not ignored (its repr would not be a call).
        takes = {"model": ("to_model",), "upstream": ("to_model", "base_url", "api_key"), "cache": ("cache",)}
        for name in ("to_model", "base_url", "api_key", "cache"):
            if getattr(self, name) is not None and name not in takes.get(kind, ()):
                raise ValueError(
                    f"Fallback of kind {kind!r} takes no {name}; build one with Fallback.{_MAKER[kind]}()"
                )
        if kind == "model" and not _is_name(self.to_model):
            raise ValueError(f"Fallback.model needs a non-empty model name, got {self.to_model!r}")
        if kind == "upstream":
            _check_upstream_url(self.base_url)
            assert self.base_url is not None
            object.__setattr__(self, "base_url", lower_scheme(self.base_url))
            if self.to_model is not None and not _is_name(self.to_model):
                raise ValueError(
                    f"Fallback.upstream model must be a non-empty model name or None, got {self.to_model!r}"
                )
            if self.api_key is not None:
                if not isinstance(self.api_key, str):  # the key itself is never echoed, only its type
                    raise ValueError(
                        "Fallback.upstream api_key must be a non-empty string or None (None: the "
                        f"caller's key), got {type(self.api_key).__name__}"
                    )
                # A key read from a file ends in its newline: sent so, every attempt of the
                # fallback would fail in the HTTP library, with the key in its error.
                object.__setattr__(self, "api_key", clean_secret(self.api_key, "Fallback.upstream api_key"))
        if kind == "cache" and not (
            callable(getattr(self.cache, "get", None)) and callable(getattr(self.cache, "set", None))
        ):
            raise ValueError(
                "Fallback.cached cache must be an AnswerCache, with get(key) -> str | bytes | None and "
                f"set(key, text) methods, or None for a MemoryCache; got {self.cache!r}"
            )

    @classmethod
    def model(cls, name: str) -> Fallback:
        """The same request, to another model (e.g. "gpt-4o-mini")."""
        return cls(kind="model", to_model=name)  # checked in __post_init__

    @classmethod
    def upstream(cls, base_url: str, *, api_key: str | None = None, model: str | None = None) -> Fallback:
        """The same request to another OpenAI-compatible base URL (and optionally key and model)."""
        # Checked as given ("http://" has no host; stripped, it would be "http:"), then again,
        # stripped, in __post_init__.
        _check_upstream_url(base_url)
        url = base_url.rstrip("/")
        return cls(kind="upstream", base_url=url, api_key=api_key, to_model=model)

    @classmethod
    def non_streaming(cls) -> Fallback:
        """The request without streaming; its answer is delivered as a synthesized stream."""
        return cls(kind="non_streaming")

    @classmethod
    def cached(cls, cache: AnswerCache | None = None) -> Fallback:
        """The last good answer to the same request (an in-memory LRU+TTL unless you bring one)."""
        return cls(kind="cache", cache=cache if cache is not None else MemoryCache())

    def __repr__(self) -> str:  # as the constructor is called, but never with the key
        if self.kind == "upstream":
            model = f", model={self.to_model!r}" if self.to_model is not None else ""
            return f"Fallback.upstream({self.base_url!r}{model})"
        if self.kind == "cache":
            return "Fallback.cached()"
        return f"Fallback.{self.kind}({self.to_model!r})" if self.to_model else f"Fallback.{self.kind}()"


def _is_name(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_upstream_url(url: object) -> None:
    """Refuse a base URL an upstream fallback could not send every request to; the URL is
    shown without its user:password and query (`shown_url`), which the error must not spread."""
    # Schemes are case-insensitive (RFC 3986 3.1), as base_url_problem and httpx2 read them.
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        shown = shown_url(url) if isinstance(url, str) else url
        raise ValueError(f"Fallback.upstream base_url must start with http:// or https://, got {shown!r}")
    shown = shown_url(url)
    if carries_credentials(url):
        # httpx2 would send them as Basic auth, but the caller's Authorization (or the
        # fallback's key) replaces that header: they would be silently ignored.
        raise ValueError(
            f"Fallback.upstream base_url must not carry credentials (user:password@), got {shown!r}: "
            "pass the key as api_key="
        )
    if "?" in url or "#" in url:  # the API path is appended to it
        raise ValueError(f"Fallback.upstream base_url must not carry a query or fragment, got {shown!r}")
    problem = base_url_problem(url)
    if problem is not None:
        raise ValueError(f"Fallback.upstream base_url must be {BASE_URL_ACCEPTED}, got {shown!r}: {problem}")


_MAKER = {"model": "model", "upstream": "upstream", "non_streaming": "non_streaming", "cache": "cached"}


@dataclass(frozen=True, slots=True)
class Route:
    """Where one attempt goes and what it asks for."""

    url: str
    upstream: str  # scheme://host[:port], the breaker's key
    model: str
    body: Mapping[str, Any]
    stream: bool
    fallback: FallbackKind | None = None
    api_key: str | None = None  # replaces the caller's key (upstream fallback)
    content: bytes | None = None  # `body` as the caller encoded it, sent as is when unchanged


BASE_URL_ACCEPTED = "an http:// or https:// base URL with a host and, optionally, a port in 1..65535"
FORWARDING_URL_ACCEPTED = (
    "an http:// or https:// base URL with a host, optionally a port in 1..65535, and no query or credentials"
)


def base_url_problem(url: str) -> str | None:
    """What keeps `url` from being a base URL every request can be sent to (None: nothing),
    checked as httpx2 will parse each request's URL: else a bad port is a crash per request."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "it has spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # a port that is no number in 0..65535, a broken [IPv6] host
        return parse_failure(url, error)
    if parts.scheme not in ("http", "https"):
        return "its scheme is not http or https"
    if not parts.hostname:
        return "it has no host"
    if port == 0:
        return "its port is 0"
    return None


def shown_url(url: str) -> str:
    """`url` as a message may show it, even when it does not parse: without a user:password@
    and without its query or fragment, where keys go too (Azure's `?api-key=`), shown as `?...`
    (`#...`). A password may hold an unescaped / ? or #, which ends the authority early as
    parsers read it: an @ after such an authority (`split_url`) hides all before it, as `...@`."""
    scheme, sep, authority, rest = split_url(url)
    if "@" in authority:
        authority = authority.rpartition("@")[2]
    elif "@" in rest:
        authority, rest = "...@", rest.rpartition("@")[2]
    query = min((i for i in map(rest.find, "?#") if i >= 0), default=-1)
    if query >= 0:
        rest = rest[: query + 1] + "..."
    return f"{scheme}{sep}{authority}{rest}"


def carries_credentials(url: str) -> bool:
    """Whether `url` may carry a user:password@: an @ in its authority, or after one that is no
    host[:port] (a password holding an unescaped / ? or #). An @ in the path of a URL whose
    authority is a host is the path's."""
    _, _, authority, rest = split_url(url)
    return "@" in authority or ("@" in rest and not _HOST_PORT.fullmatch(authority))


def split_url(url: str) -> tuple[str, str, str, str]:
    """Scheme, "://", the authority as parsers read it (up to the first / ? or #), the rest;
    even for a URL that does not parse."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # no scheme: the authority comes first
        scheme, rest = "", url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    return scheme, sep, rest[:end], rest[end:]


_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:@\[\]]*)(:[0-9]*)?")


def forwarding_problem(url: str) -> str | None:
    """What keeps `url` from being a base URL a proxy forwards every path to (None: nothing):
    `base_url_problem`'s, or a user:password@ or a query or fragment, which no path appends to."""
    problem = base_url_problem(url)
    if problem is None and carries_credentials(url):
        problem = "it carries credentials (user:password@)"
    if problem is None and ("?" in url or "#" in url):
        problem = "it carries a query or fragment"
    return problem


def parse_failure(url: str, error: ValueError) -> str:
    """Why `url` does not parse (`error`, from `urlsplit`), in words that never quote its
    user:password, as the parser's own may (it quotes a broken [IPv6] host from the @ on, and
    a port that a password's unescaped ? cut short)."""
    if not carries_credentials(url):
        return str(error)
    try:
        _ = urlsplit(shown_url(url)).port
    except ValueError as own:
        return str(own)
    return "its user:password does not parse"


def lower_scheme(url: str) -> str:
    """`url` with its scheme in lower case (`HTTP://h` is `http://h`), as breakers and labels
    name an upstream and as the engine reads its default port."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.lower()}{sep}{rest}" if sep else url


def upstream_of(url: str) -> str:
    """scheme://host[:port] of a URL, without user info: what breakers, labels and errors name."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rpartition('@')[2]}"


def fallback_route(primary: Route, fallback: Fallback, api_suffix: str) -> Route | None:
    """The route a fallback takes, or None when it does not apply to this call."""
    if fallback.kind == "model":
        assert fallback.to_model is not None
        return Route(
            _with_deployment(primary.url, api_suffix, fallback.to_model),
            primary.upstream,
            fallback.to_model,
            {**primary.body, "model": fallback.to_model},
            primary.stream,
            "model",
        )
    if fallback.kind == "upstream":
        assert fallback.base_url is not None
        model = fallback.to_model or primary.model
        url = fallback.base_url + api_suffix
        return Route(
            url,
            upstream_of(url),
            model,
            {**primary.body, "model": model},
            primary.stream,
            "upstream",
            fallback.api_key,
        )
    if fallback.kind == "non_streaming":
        if not primary.stream:
            return None
        # Without `background` too: a background request is answered at once, queued, with no
        # output yet; the fallback needs the finished answer.
        body = {k: v for k, v in primary.body.items() if k not in _NOT_IN_NON_STREAMING}
        return Route(primary.url, primary.upstream, primary.model, body, False, "non_streaming")
    return Route(
        primary.url,
        primary.upstream,
        primary.model,
        primary.body,
        primary.stream,
        "cache",
        None,
        primary.content,
    )


def _with_deployment(url: str, api_suffix: str, name: str) -> str:
    """`url` sent to deployment `name` when it names an Azure OpenAI deployment, else `url`.

    Azure serves `.../deployments/{deployment}/chat/completions?api-version=...` from the
    deployment in the path, whatever model the body asks for: another model is another
    deployment, named as `AzureOpenAI` names it from `model=` (the query is kept).
    """
    path, mark, query = url.partition("?")
    head, found, deployment = path.removesuffix(api_suffix).rpartition("/deployments/")
    if not found or not deployment or "/" in deployment or not path.endswith(api_suffix):
        return url
    return f"{head}/deployments/{quote(name, safe='')}{api_suffix}{mark}{query}"


def cache_scope(url: str, headers: Mapping[str, str]) -> str:
    """Whose answers a request may share: a digest of where it goes and the credential it carries.

    One engine serves every key and base URL of a client (`with_options`) and every client of
    the proxy; an answer made with one key or upstream must never serve a request of another
    (a key out of quota, or without access to the model). Only the digest is kept, never the
    credential. The credential is in the identity headers (`IDENTITY_HEADERS`) or any other
    named like one (`is_identity`: a gateway's own).

    Args:
        url: the request's URL (its upstream, path and query).
        headers: the request's headers, looked up without regard to case (`httpx2.Headers`).
    """
    identity: list[object] = [url, *(headers.get(name) or "" for name in IDENTITY_HEADERS)]
    lowered = ((name.lower(), value) for name, value in headers.items())
    identity += sorted(pair for pair in lowered if pair[0] not in IDENTITY_HEADERS and is_identity(pair[0]))
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


# Request fields that make an answer one turn of a conversation the upstream keeps: a cached
# answer to another turn would be wrong for this one, and its made-up id is no turn the
# upstream knows (a next turn's previous_response_id would fail).
_STATEFUL = ("conversation", "previous_response_id")


def cacheable_request(body: Mapping[str, Any]) -> bool:
    """Whether a request's answer may be kept in, and served from, the answer cache."""
    return not any(body.get(field) for field in _STATEFUL)


def cache_key(api: str, body: Mapping[str, Any], scope: str) -> str:
    """The key of a request's answer: the request without fields that do not change it, and
    whose it is (`cache_scope`)."""
    kept = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    canonical = json.dumps([api, scope, kept], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()

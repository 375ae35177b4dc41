"""The sidecar proxy's settings: flags, STREAMTAP_* variables and a TOML file. Pure.

A file holds what flags cannot say well (the policy and the fallbacks)::

    upstream = "https://api.openai.com/v1"
    listen = "127.0.0.1:8787"

    [policy]
    max_attempts = 4
    first_token_timeout = 10

    [[fallbacks]]
    kind = "model"
    model = "gpt-4o-mini"

    [[fallbacks]]
    kind = "non_streaming"
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._fallback import (
    FORWARDING_URL_ACCEPTED,
    Fallback,
    carries_credentials,
    forwarding_problem,
    lower_scheme,
    shown_url,
)
from ._policy import Policy
from ._secrets import clean_secret

_FALLBACK_TEXT = ("model", "base_url", "api_key")
# The keys each kind of [[fallbacks]] entry takes: any other is refused, not silently dropped.
_FALLBACK_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("kind", "model"),
    "upstream": ("kind", "base_url", "api_key", "model"),
    "non_streaming": ("kind",),
    "cache": ("kind",),
}
# The string settings, with what each accepts (for the error that names it).
_TEXT_FIELDS = {
    "upstream": "an http:// or https:// base URL string",
    "listen": 'a "host:port" string',
    "ops_listen": 'a "host:port" string',
    "upstream_api_key": "a string (the key itself)",
    "client_token": "a string (the token itself)",
}
_OPTIONAL = frozenset({"ops_listen", "upstream_api_key", "client_token"})
_SECRET = frozenset({"upstream_api_key", "client_token"})
# Where the CLI takes each secret from, for the errors that name it.
_SECRET_FLAGS = {"upstream_api_key": "--upstream-api-key-env", "client_token": "--client-token-env"}


class SettingError(ValueError):
    """A setting's value is refused; `setting` names it, so an error can say where it came from."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class ProxyConfig:
    """How the proxy listens, where it forwards, and what it protects.

    Args:
        upstream: the OpenAI-compatible base URL every request goes to (e.g. https://api.openai.com/v1).
        listen: host:port to listen on; loopback unless told otherwise.
        ops_listen: an optional second host:port serving only /metrics, /healthz and /readyz, so
            a scraper and probes can reach them on the pod's address while the API stays on
            loopback.
        upstream_api_key: when set, the proxy sends this key upstream and requires
            `client_token` from its clients instead of forwarding theirs.
        client_token: the bearer token clients must present; only with `upstream_api_key` (else
            the token would be forwarded upstream as the client's key).
        max_body: the largest request body of a call the engine serves (chat completions,
            responses), in bytes: held whole, to parse and to resend on a retry.
        max_upload: the largest request body of any other /v1 request (file and audio
            uploads), in bytes: streamed to the upstream as it arrives, never held whole.
        body_timeout: seconds a client may take to send a request body the proxy holds, to
            send each next piece of one it streams, and to take each piece of an answer (a
            client that takes nothing for that long, up to twice it, is dropped and its call
            cancelled).
        pass_through_timeout: seconds a request passed through (any /v1 path but chat
            completions and responses) waits for the upstream to take each piece of its body, to
            begin its answer, and to send each next piece of it; its connect timeout is the
            policy's `connect_timeout`. (The engine's calls have the policy's timeouts.)
        shutdown_grace: seconds streams in flight may take to finish on shutdown, rounded up to
            a whole second; 0 waits for none (each is ended at once, as when the grace runs out).
        ready_cache: seconds a /readyz result is reused.
        policy: the engine's retries, timeouts, budget and breaker.
        fallbacks: tried in order before the first content.
    """

    upstream: str = "https://api.openai.com/v1"
    listen: str = "127.0.0.1:8787"
    ops_listen: str | None = None
    upstream_api_key: str | None = field(default=None, repr=False)
    client_token: str | None = field(default=None, repr=False)
    max_body: int = 10 * 1024 * 1024
    max_upload: int = 512 * 1024 * 1024  # the Files API's largest single upload
    body_timeout: float = 30.0
    pass_through_timeout: float = 600.0  # the OpenAI SDKs' default timeout
    shutdown_grace: float = 30.0
    ready_cache: float = 30.0
    policy: Policy = field(default_factory=Policy)
    fallbacks: tuple[Fallback, ...] = ()

    def __post_init__(self) -> None:
        for name, accepted in _TEXT_FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, str) and not (value is None and name in _OPTIONAL):
                shown = type(value).__name__ if name in _SECRET else repr(value)  # a secret is not echoed
                raise SettingError(name, f"{name} must be {accepted}, got {shown}")
        object.__setattr__(self, "upstream", _base_url(self.upstream))
        for name in _SECRET_FLAGS:
            object.__setattr__(self, name, _secret(name, getattr(self, name)))
        _ = self.host_port, self.ops_host_port  # validates both
        if self.upstream_api_key is not None and not self.client_token:
            raise SettingError(
                "upstream_api_key",
                "upstream_api_key needs client_token: the proxy must not lend its key to anyone",
            )
        if self.client_token is not None and self.upstream_api_key is None:
            raise SettingError(
                "client_token",
                "client_token (--client-token-env) needs upstream_api_key (--upstream-api-key-env): "
                "without a key of its own the proxy forwards the client's Authorization upstream, "
                "and with it the proxy's token",
            )
        for name in ("max_body", "max_upload"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingError(name, f"{name} must be an integer >= 1, got {value!r}")
        # No time at all for a body would refuse every body not already in the first read.
        # Finite, as their flags are: infinity would crash uvicorn's int (shutdown_grace), and
        # elsewhere mean a slow client held for ever or a readiness never checked again.
        _check_seconds("body_timeout", self.body_timeout, positive=True, finite=True)
        _check_seconds("pass_through_timeout", self.pass_through_timeout, positive=True, finite=True)
        _check_seconds("shutdown_grace", self.shutdown_grace, finite=True)
        _check_seconds("ready_cache", self.ready_cache, finite=True)

    @property
    def host_port(self) -> tuple[str, int]:
        return _host_port("listen", self.listen)

    @property
    def ops_host_port(self) -> tuple[str, int] | None:
        return None if self.ops_listen is None else _host_port("ops_listen", self.ops_listen)


def _base_url(value: str) -> str:
    """The upstream, checked as every request will parse it; without a trailing slash."""
    problem = forwarding_problem(value)
    if problem is not None:
        shown = shown_url(value)  # the password and the query are not spread by the error
        raise SettingError(
            "upstream",
            f"upstream must be {FORWARDING_URL_ACCEPTED}, got {shown!r}: {problem}",
        )
    return lower_scheme(value.rstrip("/"))


def _secret(name: str, value: str | None) -> str | None:
    """A key or token without the whitespace around it: a Kubernetes secret made from a file
    ends in its newline, which no header may carry. Errors never show the value."""
    if value is None:
        return None
    try:
        return clean_secret(value, f"{name} ({_SECRET_FLAGS[name]})")
    except ValueError as error:
        raise SettingError(name, str(error)) from None


def _check_seconds(name: str, value: object, *, positive: bool = False, finite: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value > 0 or (value == 0 and not positive))  # NaN is neither
        or (finite and not math.isfinite(value))
    ):
        what = "a finite number" if finite else "a number"
        raise SettingError(
            name, f"{name} must be {what} of seconds {'> 0' if positive else '>= 0'}, got {value!r}"
        )


def _host_port(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    # isdigit() alone takes "²" and other digits int() refuses.
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise SettingError(name, f"{name} must be host:port with a port in 0..65535, got {value!r}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise SettingError(name, f"{name}: an IPv6 address goes in brackets, as [::1]:8787, got {value!r}")
    return host.strip("[]"), int(port)


def fallbacks_from_data(value: object) -> tuple[Fallback, ...]:
    """The `fallbacks` of a config file: an array of tables, each one `[[fallbacks]]` entry."""
    # A value of a fallback is never quoted: an entry may hold its api_key.
    if not isinstance(value, list):
        hint = " (write [[fallbacks]], in double brackets)" if isinstance(value, Mapping) else ""
        raise ValueError(
            f"fallbacks must be an array of tables (one [[fallbacks]] entry per fallback), got "
            f"{_toml_kind(value)}{hint}"
        )
    return tuple(fallback_from_mapping(entry, index) for index, entry in enumerate(value))


def fallback_from_mapping(data: object, index: int) -> Fallback:
    where = f"fallbacks[{index}]"
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where} must be a table with a kind (a [[fallbacks]] entry), got {_toml_kind(data)}"
        )
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _FALLBACK_KEYS:  # a table or array: unhashable
        raise ValueError(f"{where}.kind must be one of {', '.join(_FALLBACK_KEYS)}, got {kind!r}")
    allowed = _FALLBACK_KEYS[kind]
    for key in data:
        if key not in allowed:
            known = any(key in keys for keys in _FALLBACK_KEYS.values())
            what = f"does not apply to kind {kind!r}" if known else "is not a fallback key"
            raise ValueError(f"{where}: key {key!r} {what}; kind {kind!r} takes: {', '.join(allowed)}")
    for key in _FALLBACK_TEXT:
        if key in data and not isinstance(data[key], str):
            raise ValueError(f"{where}.{key} must be a string, got {type(data[key]).__name__}")
    # Named as the file names them, before Fallback names them as Python does.
    api_key = clean_secret(data["api_key"], f"{where}.api_key") if "api_key" in data else None
    base_url = data.get("base_url", "")
    if carries_credentials(base_url):
        raise ValueError(
            f"{where}.base_url must not carry credentials (user:password@), got "
            f"{shown_url(base_url)!r}: put the key in the entry's api_key"
        )
    try:
        if kind == "model":
            return Fallback.model(data.get("model", ""))
        if kind == "upstream":
            return Fallback.upstream(base_url, api_key=api_key, model=data.get("model"))
        if kind == "non_streaming":
            return Fallback.non_streaming()
        return Fallback.cached()
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _toml_kind(value: object) -> str:
    """What a TOML value is, in TOML's words, for an error that must not quote it."""
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
             (list, "an array"), (Mapping, "a table"))  # fmt: skip
    return next((kind for t, kind in kinds if isinstance(value, t)), "a date or time")


def load_config(path: str | None, **overrides: Any) -> ProxyConfig:
    """Settings from a TOML file (if any), then flags and environment (`overrides`, None = unset)."""
    data: dict[str, Any] = {}
    if path:
        with open(path, "rb") as file:
            try:
                data = tomllib.load(file)
            except tomllib.TOMLDecodeError as error:  # it says where, not in which file
                raise ValueError(f"{path}: not valid TOML: {error}") from None
            except UnicodeDecodeError as error:  # TOML is UTF-8; the codec's message names no file
                raise ValueError(
                    f"{path}: not valid TOML: not UTF-8 text ({error.reason} at byte {error.start})"
                ) from None
    known = set(ProxyConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; accepted keys: {', '.join(sorted(known))}")
    try:
        if "policy" in data:
            data["policy"] = Policy.from_mapping(data["policy"])
        if "fallbacks" in data:
            data["fallbacks"] = fallbacks_from_data(data["fallbacks"])
    except ValueError as error:  # these two come only from the file: say which
        raise ValueError(f"{path}: {error}") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        # Validated once, whole: a key from a flag and a token from the file belong together.
        return ProxyConfig(**{**data, **given})
    except SettingError as error:
        # An error about a setting the file gave (and no flag or variable replaced) says so.
        if path and error.setting in data and error.setting not in given:
            raise ValueError(f"{path}: {error}") from None
        raise

"""Preflight decisions without I/O: key and base-URL validation, proxy choice, fix hints."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2
from httpx2._utils import URLPattern, get_environment_proxies

from ._fallback import parse_failure, shown_url
from ._preflight_report import Check
from ._secrets import fingerprint

OPENAI_HOST = "api.openai.com"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEYS_PAGE = "https://platform.openai.com/api-keys"
# Anything shaped like an OpenAI key inside server text is masked too, not only the key in use.
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_\-*]{6,}")
_ENDPOINTS = ("/chat/completions", "/responses", "/completions", "/embeddings", "/models")


def redact(text: str, key: str | None) -> str:
    """`text` with `key` and anything shaped like an OpenAI key replaced by fingerprints."""
    if key and key.strip():
        text = text.replace(key, fingerprint(key)).replace(key.strip(), fingerprint(key))
    return _KEY_LIKE.sub(lambda m: fingerprint(m.group(0)), text)


def check_key(key: str | None, *, source: str, host: str | None) -> Check:
    """Step 1: the key is present and well-formed.

    Args:
        key: the API key, or None when none was found.
        source: where it came from, e.g. ``OPENAI_API_KEY`` or ``the client``; named in the detail.
        host: the base URL's host; a key without ``sk-`` fails for api.openai.com and is a
            warning for any other server.
    """
    name = "api_key"
    if key is None:
        return Check(
            name,
            False,
            f"no API key ({source} is not set)",
            f"set {source} (or pass api_key= in Python, --api-key-env NAME to `streamtap check`); "
            f"create a key at {KEYS_PAGE}",
        )
    label = f"{fingerprint(key)} ({len(key)} chars, from {source})"
    if not key.strip():
        hint = f"{source} is set but empty: put the key itself there (create one at {KEYS_PAGE})"
        return Check(name, False, f"the API key from {source} is empty", hint)
    if key.strip().lower().startswith("bearer "):
        return Check(
            name, False, f"{label} starts with 'Bearer '", "drop the 'Bearer ' prefix: the client adds it"
        )
    if any(c.isspace() for c in key):
        where = "inside" if key.strip() == key else "at its start or end"
        kind = "a newline" if ("\n" in key or "\r" in key) else "whitespace"
        hint = "remove it: a key copied from a file, .env or a terminal often keeps a line ending or a space"
        return Check(name, False, f"{label} has {kind} {where}", hint)
    if key[0] in "\"'`" or key[-1] in "\"'`":
        return Check(name, False, f"{label} is wrapped in quotes", "remove the quotes around the key")
    for position, char in enumerate(key):
        if not (char.isascii() and char.isprintable()):
            hint = (
                "re-copy the key from its source: copy-paste can bring in look-alike or invisible characters"
            )
            return Check(
                name, False, f"{label} has a non-ASCII or control character at position {position}", hint
            )
    if not key.startswith("sk-"):
        if host == OPENAI_HOST:
            hint = f"OpenAI API keys start with 'sk-': this looks like another provider's key or an ID; create a key at {KEYS_PAGE}"
            return Check(name, False, f"{label} does not start with 'sk-'", hint)
        hint = "OpenAI keys start with 'sk-'; fine if this server uses its own keys"
        return Check(name, True, f"{label}, no 'sk-' prefix", hint)
    if host == OPENAI_HOST and len(key) < 40:
        return Check(name, True, label, "OpenAI keys are longer than 40 characters: is the key truncated?")
    return Check(name, True, label)


@dataclass(frozen=True)
class Target:
    """Where the checks go: the parsed base URL.

    Args:
        url: the base URL as given, for display (user:password removed).
        scheme: ``http`` or ``https``.
        host: the host name or IP address (IPv6 without brackets).
        port: the TCP port, the scheme's default if none is given.
        models_url: ``{base_url}/models``.
        source: what to fix when the URL is wrong, named in hints: where it came from
            (``the given base URL``, ``the client's base_url``), OPENAI_BASE_URL otherwise.
        default: the URL is the default one, which nobody typed (no typo to look for).
    """

    url: str
    scheme: str
    host: str
    port: int
    models_url: str
    source: str = "OPENAI_BASE_URL"
    default: bool = False


def parse_base_url(url: str, *, source: str) -> tuple[Check, Target | None]:
    """Step 2: the base URL is ``http(s)://host[:port][/path]``.

    Args:
        url: the base URL, e.g. ``https://api.openai.com/v1``.
        source: where it came from (``OPENAI_BASE_URL``, ``the client``, ...); named in hints.
    """
    name = "base_url"
    if not url.strip():
        hint = f"{source} is set but empty: unset it to use {DEFAULT_BASE_URL} or set your server's URL"
        return Check(name, False, f"the base URL from {source} is empty", hint), None
    # A refused URL is shown, and rewritten in hints, without its user:password.
    shown = shown_url(url.strip())
    if url.strip() != url or any(c.isspace() for c in url):
        return Check(name, False, f"{shown!r} has whitespace", f"remove the whitespace from {source}"), None
    broken = _broken_scheme(url)
    if broken is not None:
        prefix, repaired = broken
        hint = f"write it as {shown_url(repaired)} in {source}"
        scheme = repaired.partition(":")[0]
        detail = f"the base URL starts with {prefix!r} instead of '{scheme}://'"
        return Check(name, False, detail, hint), None
    if "://" not in url:
        return Check(
            name, False, f"{shown!r} has no scheme", f"write it as https://{shown} in {source}"
        ), None
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        return Check(
            name,
            False,
            f"{shown!r} is not a valid URL ({parse_failure(url, error)})",
            f"write it like {DEFAULT_BASE_URL}",
        ), None
    if parts.scheme not in ("http", "https"):
        hint = f"the scheme must be http or https, e.g. {DEFAULT_BASE_URL}"
        return Check(name, False, f"{shown!r} has scheme {parts.scheme!r}", hint), None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return Check(name, False, f"{shown!r} has an invalid port", "the port must be a number 1-65535"), None
    if not parts.hostname:
        return Check(name, False, f"{shown!r} has no host", f"write it like {DEFAULT_BASE_URL}"), None
    netloc = parts.netloc.rpartition("@")[2]
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    # The default URL is fixed by setting OPENAI_BASE_URL.
    fix_in = "OPENAI_BASE_URL" if source == "the default" else source
    models_url = shown.rstrip("/") + "/models"
    target = Target(shown, parts.scheme, parts.hostname, port, models_url, fix_in, source == "the default")
    path = parts.path.rstrip("/")
    warning: str | None = None
    if path.endswith(_ENDPOINTS):
        warning = f"the base URL is the API root (like {DEFAULT_BASE_URL}), not an endpoint: remove {path.rsplit('/v1', 1)[-1] or path}"
    elif parts.hostname == OPENAI_HOST and path != "/v1":
        warning = f"the OpenAI API lives under /v1: use {DEFAULT_BASE_URL}"
    elif parts.hostname == OPENAI_HOST and parts.scheme == "http":
        warning = f"use https: {DEFAULT_BASE_URL}"
    return Check(name, True, f"{shown} (from {source})", warning), target


# `https//host`, `https:/host`, `http:host`, `https:` alone: a scheme whose `://` lost a character.
_BROKEN_SCHEME = re.compile(r"(https?)(:/?|/{1,2})([^/].*)?", re.IGNORECASE | re.DOTALL)


def _broken_scheme(url: str) -> tuple[str, str] | None:
    """(the broken start of `url`, `url` repaired) when its scheme's ``://`` is malformed, else None."""
    match = _BROKEN_SCHEME.fullmatch(url)
    if match is None:
        return None
    scheme, rest = match[1].lower(), match[3] or ""
    repaired = f"{scheme}://{rest or 'HOST/v1'}"
    return url[: match.end(2)], repaired


def check_header_id(value: str, *, source: str) -> Check | None:
    """The failed ``models`` check for an organization or project ID (`source` names it) that
    no HTTP header can carry as it is: whitespace, a control or a non-ASCII character. None
    when it is fine."""
    shown = "".join(c if c.isascii() and c.isprintable() else "?" for c in value)
    if not value.strip():
        problem, hint = "is only whitespace", f"unset {source} or put the ID itself there"
    elif any(c.isspace() for c in value):
        where = "inside" if value.strip() == value else "at its start or end"
        kind = "a newline" if ("\n" in value or "\r" in value) else "whitespace"
        problem = f"has {kind} {where}"
        hint = "remove it: an ID copied from a file, .env or a terminal often keeps a line ending or a space"
    else:
        bad = next((i for i, c in enumerate(value) if not (c.isascii() and c.isprintable())), None)
        if bad is None:
            return None
        problem = f"has a non-ASCII or control character at position {bad}"
        hint = (
            "re-copy the ID from the platform's settings page: copy-paste can bring in look-alike characters"
        )
    return Check("models", False, f"{source} ({shown!r}) {problem}: no request can send it", hint)


def proxy_for(target: Target, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL the SDK's HTTP client (httpx2) sends `target`'s requests through, or None.

    httpx2's own decision, not a copy of it: the mounts `httpx2.Client` builds from the proxy
    variables (`http_proxy`, `https_proxy`, `all_proxy`, lower case first, and `no_proxy`
    entries that are `*`, hosts, domains, IP addresses, CIDR networks or `host:port`), the most
    specific that matches the request's URL winning.

    Args:
        target: the parsed base URL.
        environ: the environment to read; None reads the process's, as httpx2 does (through
            `urllib.request.getproxies`, system proxy settings included).
    """
    url = httpx2.URL(target.models_url)
    mounts = sorted(
        ((URLPattern(key), proxy) for key, proxy in _environment_proxies(environ).items()),
        key=lambda mount: mount[0],  # as httpx2.Client sorts its mounts: most specific first
    )
    return next((proxy for pattern, proxy in mounts if pattern.matches(url)), None)


def _environment_proxies(environ: Mapping[str, str] | None) -> dict[str, str | None]:
    """httpx2's mounts (URL pattern -> proxy URL, None: direct) from the proxy variables."""
    if environ is None:
        return get_environment_proxies()
    found = _proxy_variables(environ)
    # httpx2's function reads the variables through urllib's `getproxies`, from os.environ
    # only: it runs here as it is, with `getproxies` answering from `environ`.
    from_environ = types.FunctionType(
        get_environment_proxies.__code__, {**get_environment_proxies.__globals__, "getproxies": lambda: found}
    )
    mounts: dict[str, str | None] = from_environ()
    return mounts


def _proxy_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """`urllib.request.getproxies_environment()` of `environ`: scheme -> value of `{scheme}_proxy`,
    a lower-case name winning (an empty one unsets), `HTTP_PROXY` ignored under CGI."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        if value and name.lower().endswith("_proxy"):
            found[name.lower()[:-6]] = value
    if "REQUEST_METHOD" in environ:  # CVE-2016-1000110: a client's Proxy: header, under CGI
        found.pop("http", None)
    for name, value in environ.items():
        if name.endswith("_proxy"):
            if value:
                found[name[:-6].lower()] = value
            else:
                found.pop(name[:-6].lower(), None)
    return found


def proxy_target(proxy: str) -> Target | None:
    """The proxy's own host and port (None if unparseable); its user:password never shown."""
    check, target = parse_base_url(proxy, source="the proxy variable")
    return target if check.ok else None


def status_hint(
    status: int, code: str | None, *, key_source: str = "OPENAI_API_KEY", url_source: str = "OPENAI_BASE_URL"
) -> str:
    """The fix hint for an error status of ``GET /models``.

    Args:
        status: the HTTP status code.
        code: the ``error.code`` of the API's error JSON, if any.
        key_source: where the key came from (an environment variable, ``the given api_key``).
        url_source: where the base URL came from (`Target.source`).
    """
    if status == 401:
        if code == "mismatched_organization":
            return "the key does not belong to the organization sent: check OPENAI_ORG_ID / organization="
        if code == "mismatched_project":
            return "the key does not belong to the project sent: check OPENAI_PROJECT_ID / project="
        return f"the key was rejected: create a new key at {KEYS_PAGE} or check {key_source}"
    if status == 403:
        if code == "unsupported_country_region_territory":
            return "the API is not available from your country or region (or your VPN's exit)"
        return "the key is valid but not allowed: check the key's permissions (listing models needs Models: Read) and its project (OPENAI_PROJECT_ID)"
    if status == 404:
        return f"the server has no /models here: the base URL likely lacks /v1 or has a typo ({url_source})"
    if status == 407:
        return PROXY_AUTH_HINT
    if status == 429:
        if code == "insufficient_quota":
            return "the account is out of credit: add billing at https://platform.openai.com/settings/organization/billing"
        return "rate limited: wait and retry; check the usage limits at https://platform.openai.com/settings/organization/limits"
    if status in (502, 504):
        return f"a gateway or proxy on the way answered {status}: retry, then check https://status.openai.com or the proxy"
    if status >= 500:
        return "the server failed: retry, and check https://status.openai.com (or your gateway's logs)"
    if 300 <= status < 400:
        return f"the base URL redirects: use the final URL (https, with /v1) in {url_source}"
    return f"unexpected status {status}: check {url_source} points at an OpenAI-compatible API"


PROXY_AUTH_HINT = (
    "the proxy wants credentials: put them in the proxy URL, like http://user:password@proxy:port "
    "(HTTPS_PROXY / HTTP_PROXY / ALL_PROXY)"
)
NETWORK_HINT = (
    "check the network: HTTPS_PROXY / HTTP_PROXY / NO_PROXY if you need a proxy, "
    "a firewall or VPN blocking the port, and typos in the base URL (its source is on the base_url line)"
)

"""Preflight decisions without I/O: key and base-URL validation, proxy choice, fix hints."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._fallback import parse_failure, without_userinfo
from ._preflight_report import Check

OPENAI_HOST = "api.openai.com"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEYS_PAGE = "https://platform.openai.com/api-keys"
# Anything shaped like an OpenAI key inside server text is masked too, not only the key in use.
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_\-*]{6,}")
_ENDPOINTS = ("/chat/completions", "/responses", "/completions", "/embeddings", "/models")


def fingerprint(key: str) -> str:
    """A safe label for `key`: ``sk-...XYZ9`` (the last 4 characters only for keys of 16+ characters).

    Args:
        key: the API key; it never appears in the result.
    """
    # Label the key the way its owner knows it: without the quotes or "Bearer " around it.
    key = key.strip().strip("\"'`")
    if key.lower().startswith("bearer "):
        key = key[7:].strip()
    head = "sk-" if key.startswith("sk-") else ""
    if len(key) < 16:
        return f"{head}..."
    tail = "".join(c if c.isascii() and c.isprintable() and not c.isspace() else "?" for c in key[-4:])
    return f"{head}...{tail}"


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
    """

    url: str
    scheme: str
    host: str
    port: int
    models_url: str
    source: str = "OPENAI_BASE_URL"


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
    shown = without_userinfo(url.strip())
    if url.strip() != url or any(c.isspace() for c in url):
        return Check(name, False, f"{shown!r} has whitespace", f"remove the whitespace from {source}"), None
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
    target = Target(shown, parts.scheme, parts.hostname, port, shown.rstrip("/") + "/models", fix_in)
    path = parts.path.rstrip("/")
    warning: str | None = None
    if path.endswith(_ENDPOINTS):
        warning = f"the base URL is the API root (like {DEFAULT_BASE_URL}), not an endpoint: remove {path.rsplit('/v1', 1)[-1] or path}"
    elif parts.hostname == OPENAI_HOST and path != "/v1":
        warning = f"the OpenAI API lives under /v1: use {DEFAULT_BASE_URL}"
    elif parts.hostname == OPENAI_HOST and parts.scheme == "http":
        warning = f"use https: {DEFAULT_BASE_URL}"
    return Check(name, True, f"{shown} (from {source})", warning), target


def proxy_for(target: Target, environ: Mapping[str, str]) -> str | None:
    """The proxy URL the HTTP client takes from the environment for `target`, or None.

    Reads ``{scheme}_proxy`` then ``all_proxy`` (lower case first, like urllib) and honours
    ``no_proxy`` entries that are ``*``, the host, or a parent domain of it.
    """

    def env(name: str) -> str:
        return environ.get(name.lower()) or environ.get(name.upper()) or ""

    proxy = env(f"{target.scheme}_proxy") or env("all_proxy")
    if not proxy:
        return None
    for entry in (e.strip().lower().lstrip(".") for e in env("no_proxy").split(",")):
        host = target.host.lower()
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    return proxy if "://" in proxy else f"http://{proxy}"


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
        return f"the key was rejected: create a new key at {KEYS_PAGE} or check {key_source}"
    if status == 403:
        if code == "unsupported_country_region_territory":
            return "the API is not available from your country or region (or your VPN's exit)"
        return "the key is valid but not allowed: check the key's permissions (listing models needs Models: Read) and its project (OPENAI_PROJECT_ID)"
    if status == 404:
        return f"the server has no /models here: the base URL likely lacks /v1 or has a typo ({url_source})"
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


NETWORK_HINT = (
    "check the network: HTTPS_PROXY / HTTP_PROXY / NO_PROXY if you need a proxy, "
    "a firewall or VPN blocking the port, and typos in the base URL (its source is on the base_url line)"
)

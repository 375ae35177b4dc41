"""Preflight decisions without sockets: key and base-URL rules, proxies, hints, the models step, the report."""

from __future__ import annotations

import functools
import itertools
import json
import socket
from collections.abc import Callable

import anyio
import httpx2
import openai
import pytest

from streamtap._preflight import _inputs, apreflight, check_models, preflight
from streamtap._preflight_net import check_dns, dns_hint
from streamtap._preflight_report import Check, PreflightReport, skipped
from streamtap._preflight_rules import (
    NETWORK_HINT,
    PROXY_AUTH_HINT,
    Target,
    check_header_id,
    check_key,
    fingerprint,
    parse_base_url,
    proxy_for,
    proxy_target,
    redact,
    status_hint,
)

KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdXYZ9"
KEYS_HINT = (
    "the key was rejected: create a new key at https://platform.openai.com/api-keys or check OPENAI_API_KEY"
)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param(KEY, "sk-...XYZ9", id="long-sk"),
        pytest.param("sk-test-123", "sk-...", id="short-sk-no-tail"),
        pytest.param("gsk_abcdefghijklmnop1234", "...1234", id="other-provider"),
        pytest.param("sk-abcdefghijklmnop12\t", "sk-...op12", id="stripped-first"),
        pytest.param(f'"Bearer {KEY}"', "sk-...XYZ9", id="quotes-and-bearer-dropped"),
        pytest.param("sk-abcdefghijklmnop1\u00e92", "sk-...p1?2", id="non-ascii-masked"),
    ],
)
def test_fingerprint(key: str, expected: str) -> None:
    assert fingerprint(key) == expected


def test_redact_masks_the_key_and_key_shaped_text() -> None:
    text = f"Incorrect API key provided: {KEY}. Also sk-abc*********wxyz and {KEY}\n"
    assert redact(text, KEY) == "Incorrect API key provided: sk-...XYZ9. Also sk-...wxyz and sk-...XYZ9\n"
    assert redact("no key here", None) == "no key here"


KEYS_PAGE = "https://platform.openai.com/api-keys"


@pytest.mark.parametrize(
    ("key", "host", "ok", "detail", "hint"),
    [
        pytest.param(
            None,
            "api.openai.com",
            False,
            "no API key (OPENAI_API_KEY is not set)",
            "set OPENAI_API_KEY (or pass api_key= in Python, --api-key-env NAME to `streamtap check`); "
            f"create a key at {KEYS_PAGE}",
            id="missing",
        ),
        pytest.param(
            "",
            "api.openai.com",
            False,
            "the API key from OPENAI_API_KEY is empty",
            f"OPENAI_API_KEY is set but empty: put the key itself there (create one at {KEYS_PAGE})",
            id="empty",
        ),
        pytest.param(
            "  ",
            None,
            False,
            "the API key from OPENAI_API_KEY is empty",
            f"OPENAI_API_KEY is set but empty: put the key itself there (create one at {KEYS_PAGE})",
            id="blank",
        ),
        pytest.param(
            "Bearer " + KEY,
            "api.openai.com",
            False,
            "sk-...XYZ9 (59 chars, from OPENAI_API_KEY) starts with 'Bearer '",
            "drop the 'Bearer ' prefix: the client adds it",
            id="bearer",
        ),
        pytest.param(
            KEY + "\n",
            "api.openai.com",
            False,
            "sk-...XYZ9 (53 chars, from OPENAI_API_KEY) has a newline at its start or end",
            "remove it: a key copied from a file, .env or a terminal often keeps a line ending or a space",
            id="trailing-newline",
        ),
        pytest.param(
            KEY[:10] + " " + KEY[10:],
            "api.openai.com",
            False,
            "sk-...XYZ9 (53 chars, from OPENAI_API_KEY) has whitespace inside",
            "remove it: a key copied from a file, .env or a terminal often keeps a line ending or a space",
            id="inner-space",
        ),
        pytest.param(
            f'"{KEY}"',
            "api.openai.com",
            False,
            "sk-...XYZ9 (54 chars, from OPENAI_API_KEY) is wrapped in quotes",
            "remove the quotes around the key",
            id="quoted",
        ),
        pytest.param(
            "sk-" + "\u2010" + KEY[3:],
            "api.openai.com",
            False,
            "sk-...XYZ9 (53 chars, from OPENAI_API_KEY) has a non-ASCII or control character at position 3",
            "re-copy the key from its source: copy-paste can bring in look-alike or invisible characters",
            id="look-alike-hyphen",
        ),
        pytest.param(
            "gsk_" + KEY[3:],
            "api.openai.com",
            False,
            "...XYZ9 (53 chars, from OPENAI_API_KEY) does not start with 'sk-'",
            "OpenAI API keys start with 'sk-': this looks like another provider's key or an ID; "
            f"create a key at {KEYS_PAGE}",
            id="no-sk-openai-fails",
        ),
        pytest.param(
            "gsk_" + KEY[3:],
            "llm.internal",
            True,
            "...XYZ9 (53 chars, from OPENAI_API_KEY), no 'sk-' prefix",
            "OpenAI keys start with 'sk-'; fine if this server uses its own keys",
            id="no-sk-elsewhere-warns",
        ),
        pytest.param(
            "sk-abcdefghijklmnop1234",
            "api.openai.com",
            True,
            "sk-...1234 (23 chars, from OPENAI_API_KEY)",
            "OpenAI keys are longer than 40 characters: is the key truncated?",
            id="short-for-openai-warns",
        ),
        pytest.param(
            KEY, "api.openai.com", True, "sk-...XYZ9 (52 chars, from OPENAI_API_KEY)", None, id="good"
        ),
        pytest.param(
            "sk-test-123", "127.0.0.1", True, "sk-... (11 chars, from OPENAI_API_KEY)", None, id="good-local"
        ),
    ],
)
def test_check_key(key: str | None, host: str | None, ok: bool, detail: str, hint: str | None) -> None:
    check = check_key(key, source="OPENAI_API_KEY", host=host)
    assert check == Check("api_key", ok, detail, hint)
    if key and key.strip():
        assert key.strip() not in check.detail


@pytest.mark.parametrize(
    ("url", "detail", "hint"),
    [
        pytest.param(
            "",
            "the base URL from OPENAI_BASE_URL is empty",
            "OPENAI_BASE_URL is set but empty: unset it to use https://api.openai.com/v1 or set your server's URL",
            id="empty",
        ),
        pytest.param(
            "https://api.openai.com/v1\n",
            "'https://api.openai.com/v1' has whitespace",
            "remove the whitespace from OPENAI_BASE_URL",
            id="newline",
        ),
        pytest.param(
            "api.openai.com/v1",
            "'api.openai.com/v1' has no scheme",
            "write it as https://api.openai.com/v1 in OPENAI_BASE_URL",
            id="no-scheme",
        ),
        pytest.param(
            "https//gw.example/v1",
            "the base URL starts with 'https//' instead of 'https://'",
            "write it as https://gw.example/v1 in OPENAI_BASE_URL",
            id="scheme-without-colon",
        ),
        pytest.param(
            "https:/gw.example/v1",
            "the base URL starts with 'https:/' instead of 'https://'",
            "write it as https://gw.example/v1 in OPENAI_BASE_URL",
            id="scheme-one-slash",
        ),
        pytest.param(
            "HTTP:localhost:8000/v1",
            "the base URL starts with 'HTTP:' instead of 'http://'",
            "write it as http://localhost:8000/v1 in OPENAI_BASE_URL",
            id="scheme-no-slash",
        ),
        pytest.param(
            "https//user:secret@gw.example/v1",
            "the base URL starts with 'https//' instead of 'https://'",
            "write it as https://gw.example/v1 in OPENAI_BASE_URL",
            id="scheme-typo-credentials-hidden",
        ),
        pytest.param(
            "ftp://example.com/v1",
            "'ftp://example.com/v1' has scheme 'ftp'",
            "the scheme must be http or https, e.g. https://api.openai.com/v1",
            id="bad-scheme",
        ),
        pytest.param(
            "http://[::1/v1",
            "'http://[::1/v1' is not a valid URL (Invalid IPv6 URL)",
            "write it like https://api.openai.com/v1",
            id="unclosed-ipv6",
        ),
        pytest.param(
            "http://localhost:99999/v1",
            "'http://localhost:99999/v1' has an invalid port",
            "the port must be a number 1-65535",
            id="bad-port",
        ),
        pytest.param(
            "https:///v1",
            "'https:///v1' has no host",
            "write it like https://api.openai.com/v1",
            id="no-host",
        ),
    ],
)
def test_parse_base_url_failures(url: str, detail: str, hint: str) -> None:
    assert parse_base_url(url, source="OPENAI_BASE_URL") == (Check("base_url", False, detail, hint), None)


@pytest.mark.parametrize(
    ("url", "detail", "hint"),
    [
        pytest.param(
            "ftp://user:hunter2pw@api.example.com/v1",
            "'ftp://api.example.com/v1' has scheme 'ftp'",
            "the scheme must be http or https, e.g. https://api.openai.com/v1",
            id="scheme",
        ),
        pytest.param(
            "user:hunter2pw@api.example.com/v1",
            "'api.example.com/v1' has no scheme",
            "write it as https://api.example.com/v1 in OPENAI_BASE_URL",
            id="no-scheme",
        ),
        pytest.param(
            "http://user:hunter2pw@api.example.com:99999/v1",
            "'http://api.example.com:99999/v1' has an invalid port",
            "the port must be a number 1-65535",
            id="port",
        ),
        pytest.param(
            "http://user:hunter2pw@api.example.com/v1 ",
            "'http://api.example.com/v1' has whitespace",
            "remove the whitespace from OPENAI_BASE_URL",
            id="whitespace",
        ),
        pytest.param(
            "http://user:hunter2pw@/v1",
            "'http:///v1' has no host",
            "write it like https://api.openai.com/v1",
            id="no-host",
        ),
        pytest.param(
            # The parser's own reason quotes the authority from the bracket on.
            "http://user:hunter2[pw@[zz]/v1",
            "'http://[zz]/v1' is not a valid URL ('zz' does not appear to be an IPv4 or IPv6 address)",
            "write it like https://api.openai.com/v1",
            id="broken-host",
        ),
        pytest.param(
            "http://user:hunter2[pw@api.example.com/v1",
            "'http://api.example.com/v1' is not a valid URL (its user:password does not parse)",
            "write it like https://api.openai.com/v1",
            id="broken-user-info",
        ),
    ],
)
def test_a_refused_base_url_is_shown_without_its_credentials(url: str, detail: str, hint: str) -> None:
    """Every failure printed the URL whole, password included, and a hint rewrote it so."""
    assert parse_base_url(url, source="OPENAI_BASE_URL") == (Check("base_url", False, detail, hint), None)


@pytest.mark.parametrize(
    ("url", "target", "hint"),
    [
        pytest.param(
            "https://api.openai.com/v1",
            Target(
                "https://api.openai.com/v1",
                "https",
                "api.openai.com",
                443,
                "https://api.openai.com/v1/models",
            ),
            None,
            id="openai",
        ),
        pytest.param(
            "http://user:secret@127.0.0.1:8600/v1/",
            Target("http://127.0.0.1:8600/v1/", "http", "127.0.0.1", 8600, "http://127.0.0.1:8600/v1/models"),
            None,
            id="credentials-hidden",
        ),
        pytest.param(
            "http://[::1]/v1",
            Target("http://[::1]/v1", "http", "::1", 80, "http://[::1]/v1/models"),
            None,
            id="ipv6",
        ),
        pytest.param(
            "https://api.openai.com",
            Target("https://api.openai.com", "https", "api.openai.com", 443, "https://api.openai.com/models"),
            "the OpenAI API lives under /v1: use https://api.openai.com/v1",
            id="openai-without-v1",
        ),
        pytest.param(
            "http://api.openai.com/v1",
            Target(
                "http://api.openai.com/v1", "http", "api.openai.com", 80, "http://api.openai.com/v1/models"
            ),
            "use https: https://api.openai.com/v1",
            id="openai-over-http",
        ),
        pytest.param(
            "https://gw.example/v1/chat/completions",
            Target(
                "https://gw.example/v1/chat/completions",
                "https",
                "gw.example",
                443,
                "https://gw.example/v1/chat/completions/models",
            ),
            "the base URL is the API root (like https://api.openai.com/v1), not an endpoint: "
            "remove /chat/completions",
            id="endpoint-not-root",
        ),
    ],
)
def test_parse_base_url_targets(url: str, target: Target, hint: str | None) -> None:
    check, parsed = parse_base_url(url, source="OPENAI_BASE_URL")
    assert parsed == target
    assert check == Check("base_url", True, f"{target.url} (from OPENAI_BASE_URL)", hint)
    assert "secret" not in check.detail


HTTPS = Target(
    "https://api.openai.com/v1", "https", "api.openai.com", 443, "https://api.openai.com/v1/models"
)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, None, id="none"),
        pytest.param({"HTTPS_PROXY": "proxy.corp:3128"}, "http://proxy.corp:3128", id="upper-no-scheme"),
        pytest.param(
            {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"}, "http://a:1", id="lower-case-first"
        ),
        pytest.param({"HTTP_PROXY": "http://p:1"}, None, id="other-scheme-only"),
        pytest.param({"ALL_PROXY": "socks5://p:1"}, "socks5://p:1", id="all-proxy"),
        pytest.param({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None, id="no-proxy-star"),
        pytest.param(
            {"HTTPS_PROXY": "http://p:1", "no_proxy": "x.org, .openai.com"}, None, id="no-proxy-parent"
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ai.com"}, "http://p:1", id="no-proxy-not-suffix"
        ),
    ],
)
def test_proxy_for(environ: dict[str, str], expected: str | None) -> None:
    assert proxy_for(HTTPS, environ) == expected


LOCAL_8600 = Target("http://127.0.0.1:8600/v1", "http", "127.0.0.1", 8600, "http://127.0.0.1:8600/v1/models")
IPV6 = Target("http://[::1]:8600/v1", "http", "::1", 8600, "http://[::1]:8600/v1/models")
GATEWAY = Target(
    "https://gw.corp.example/v1", "https", "gw.corp.example", 443, "https://gw.corp.example/v1/models"
)
# NO_PROXY entries as curl and httpx2 read them; each case is checked against httpx2 itself.
NO_PROXY_CASES = [
    pytest.param(LOCAL_8600, "127.0.0.1:8600", id="host-and-port"),
    pytest.param(LOCAL_8600, "127.0.0.1:8601", id="host-and-other-port"),
    pytest.param(LOCAL_8600, "127.0.0.0/8", id="cidr"),
    pytest.param(LOCAL_8600, "10.0.0.0/8", id="other-cidr"),
    pytest.param(LOCAL_8600, "127.0.0.1", id="ip"),
    pytest.param(LOCAL_8600, "localhost", id="localhost-is-not-127.0.0.1"),
    pytest.param(IPV6, "::1", id="ipv6"),
    pytest.param(IPV6, "::/0", id="ipv6-cidr"),
    pytest.param(GATEWAY, "corp.example", id="parent-domain"),
    pytest.param(GATEWAY, "*.corp.example", id="wildcard-domain"),
    pytest.param(GATEWAY, ".gw.corp.example", id="dot-is-subdomains-only"),
    pytest.param(GATEWAY, "gw.corp.example:443", id="default-port-written"),
    pytest.param(GATEWAY, "http://gw.corp.example", id="other-scheme"),
    pytest.param(GATEWAY, "  x.org , gw.corp.example ", id="list-with-spaces"),
]


@pytest.mark.parametrize(("target", "no_proxy"), NO_PROXY_CASES)
def test_proxy_for_decides_as_httpx2_does(
    target: Target, no_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's HTTP client is the judge: check must go where the SDK's requests go."""
    environ = {
        "HTTP_PROXY": "http://proxy.corp:3128",
        "HTTPS_PROXY": "http://proxy.corp:3128",
        "NO_PROXY": no_proxy,
    }
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with httpx2.Client() as sdk_like:  # as the SDK makes its client: proxies from the environment
        direct = sdk_like._transport_for_url(httpx2.URL(target.models_url)) is sdk_like._transport
    expected = None if direct else "http://proxy.corp:3128"
    assert proxy_for(target, environ) == expected
    assert proxy_for(target) == expected  # read from the process's environment, by httpx2 itself


def test_proxy_for_decides_by_port_and_network() -> None:
    through = {"HTTP_PROXY": "http://p:1"}
    assert proxy_for(LOCAL_8600, {**through, "NO_PROXY": "127.0.0.1:8600"}) is None
    assert proxy_for(LOCAL_8600, {**through, "NO_PROXY": "127.0.0.1:8601"}) == "http://p:1"
    assert proxy_for(LOCAL_8600, {**through, "NO_PROXY": "127.0.0.0/8"}) is None
    assert proxy_for(LOCAL_8600, {**through, "no_proxy": "", "NO_PROXY": "127.0.0.1"}) == "http://p:1"


def test_proxy_target_hides_credentials() -> None:
    assert proxy_target("http://me:pw@proxy.corp:3128") == Target(
        "http://proxy.corp:3128",
        "http",
        "proxy.corp",
        3128,
        "http://proxy.corp:3128/models",
        "the proxy variable",
    )
    assert proxy_target("http://proxy.corp:notaport") is None


@pytest.mark.parametrize(
    ("status", "code", "hint"),
    [
        pytest.param(401, "invalid_api_key", KEYS_HINT, id="401"),
        pytest.param(
            401,
            "mismatched_organization",
            "the key does not belong to the organization sent: check OPENAI_ORG_ID / organization=",
            id="401-org",
        ),
        pytest.param(
            403,
            "unsupported_country_region_territory",
            "the API is not available from your country or region (or your VPN's exit)",
            id="403-region",
        ),
        pytest.param(
            403,
            None,
            "the key is valid but not allowed: check the key's permissions (listing models needs "
            "Models: Read) and its project (OPENAI_PROJECT_ID)",
            id="403",
        ),
        pytest.param(
            404,
            None,
            "the server has no /models here: the base URL likely lacks /v1 or has a typo (OPENAI_BASE_URL)",
            id="404",
        ),
        pytest.param(
            429,
            "insufficient_quota",
            "the account is out of credit: add billing at https://platform.openai.com/settings/organization/billing",
            id="429-quota",
        ),
        pytest.param(
            429,
            "rate_limit_exceeded",
            "rate limited: wait and retry; check the usage limits at https://platform.openai.com/settings/organization/limits",
            id="429",
        ),
        pytest.param(
            502,
            None,
            "a gateway or proxy on the way answered 502: retry, then check https://status.openai.com or the proxy",
            id="502",
        ),
        pytest.param(
            500,
            None,
            "the server failed: retry, and check https://status.openai.com (or your gateway's logs)",
            id="500",
        ),
        pytest.param(
            301,
            None,
            "the base URL redirects: use the final URL (https, with /v1) in OPENAI_BASE_URL",
            id="301",
        ),
        pytest.param(
            401,
            "mismatched_project",
            "the key does not belong to the project sent: check OPENAI_PROJECT_ID / project=",
            id="401-project",
        ),
        pytest.param(
            407,
            None,
            "the proxy wants credentials: put them in the proxy URL, like http://user:password@proxy:port "
            "(HTTPS_PROXY / HTTP_PROXY / ALL_PROXY)",
            id="407",
        ),
        pytest.param(
            418,
            None,
            "unexpected status 418: check OPENAI_BASE_URL points at an OpenAI-compatible API",
            id="418",
        ),
    ],
)
def test_status_hint(status: int, code: str | None, hint: str) -> None:
    assert status_hint(status, code) == hint


LOCAL = Target("http://gw.test/v1", "http", "gw.test", 80, "http://gw.test/v1/models")
Handler = Callable[[httpx2.Request], httpx2.Response]


def _models(handler: Handler, key: str = KEY) -> Check:
    headers = {"user-agent": "streamtap-preflight/test", "openai-organization": "org-1"}
    return check_models(LOCAL, key, headers, 1.0, transport=httpx2.MockTransport(handler))


def _error(status: int, code: str | None, message: str) -> Handler:
    return lambda _: httpx2.Response(status, json={"error": {"message": message, "type": "x", "code": code}})


def test_models_ok_sends_the_key_and_headers() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"object": "list", "data": [{"id": "a"}, {"id": "b"}]})

    assert _models(handler) == Check("models", True, "GET /models: 200 OK, 2 models")
    assert [(r.method, str(r.url)) for r in seen] == [("GET", "http://gw.test/v1/models")]
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["openai-organization"] == "org-1"
    assert seen[0].headers["user-agent"] == "streamtap-preflight/test"


@pytest.mark.parametrize(
    ("handler", "detail", "hint"),
    [
        pytest.param(
            _error(401, "invalid_api_key", f"Incorrect API key provided: {KEY}."),
            "GET /models: 401 Unauthorized: Incorrect API key provided: sk-...XYZ9.",
            KEYS_HINT,
            id="401-key-masked",
        ),
        pytest.param(
            _error(429, "insufficient_quota", "You exceeded your current quota."),
            "GET /models: 429 Too Many Requests: You exceeded your current quota.",
            status_hint(429, "insufficient_quota"),
            id="429-quota",
        ),
        pytest.param(
            lambda _: httpx2.Response(503, text="<html>down</html>"),
            "GET /models: 503 Service Unavailable",
            status_hint(503, None),
            id="503-html",
        ),
        pytest.param(
            lambda _: httpx2.Response(308, headers={"location": "https://gw.test/v1/models"}),
            "GET /models: 308 Permanent Redirect → https://gw.test/v1/models",
            status_hint(308, None),
            id="redirect",
        ),
        pytest.param(
            lambda _: httpx2.Response(200, text="<html>welcome to the hotel wifi</html>"),
            "GET /models: 200 OK but no model list in the body",
            "this is not an OpenAI-compatible API: OPENAI_BASE_URL should be its root, like .../v1",
            id="200-not-json",
        ),
    ],
)
def test_models_failures(handler: Handler, detail: str, hint: str) -> None:
    assert _models(handler) == Check("models", False, detail, hint)


def _raise(error: Exception) -> Handler:
    def handler(_: httpx2.Request) -> httpx2.Response:
        raise error

    return handler


@pytest.mark.parametrize(
    ("error", "detail", "hint"),
    [
        pytest.param(
            httpx2.ConnectError("[Errno 111] Connection refused"),
            "GET http://gw.test/v1/models failed: [Errno 111] Connection refused",
            NETWORK_HINT,
            id="connect",
        ),
        pytest.param(
            httpx2.ReadTimeout("timed out"),
            "GET http://gw.test/v1/models timed out",
            "no answer in 1 s: raise --timeout, or check a firewall or proxy (HTTPS_PROXY)",
            id="timeout",
        ),
        pytest.param(
            httpx2.ProxyError("407 Proxy Authentication Required"),
            "GET /models via the proxy failed: 407 Proxy Authentication Required",
            PROXY_AUTH_HINT,
            id="proxy-407",
        ),
        pytest.param(
            httpx2.ProxyError("502 Bad Gateway"),
            "GET /models via the proxy failed: 502 Bad Gateway",
            "the proxy failed: check HTTPS_PROXY / HTTP_PROXY, or NO_PROXY for this host",
            id="proxy",
        ),
        pytest.param(
            httpx2.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed"),
            "GET http://gw.test/v1/models failed: "
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed",
            "the certificate is not signed by a CA this machine trusts (self-signed, or a TLS-inspecting "
            "proxy): set SSL_CERT_FILE to a bundle with your organization's CA",
            id="cert",
        ),
    ],
)
def test_models_transport_errors(error: Exception, detail: str, hint: str) -> None:
    assert _models(_raise(error)) == Check("models", False, detail, hint)


def test_inputs_from_a_client_sync_or_async() -> None:
    for cls in (openai.OpenAI, openai.AsyncOpenAI):
        client = cls(api_key=KEY, base_url="http://gw.test/v1", organization="org-9", project="proj-3")
        key, key_source, url, url_source, headers = _inputs(client, None, None, "OPENAI_API_KEY", {})
        assert (key, key_source, url, url_source) == (
            KEY,
            "the client's api_key",
            "http://gw.test/v1/",
            "the client's base_url",
        )
        assert headers["openai-organization"] == "org-9"
        assert headers["openai-project"] == "proj-3"


def test_inputs_from_the_environment_and_overrides() -> None:
    env = {"MY_KEY": "sk-a", "OPENAI_BASE_URL": "http://x/v1", "OPENAI_ORG_ID": "org-e"}
    key, key_source, url, url_source, headers = _inputs(None, None, None, "MY_KEY", env)
    assert (key, key_source, url, url_source) == ("sk-a", "MY_KEY", "http://x/v1", "OPENAI_BASE_URL")
    assert headers["openai-organization"] == "org-e"
    assert "openai-project" not in headers
    key, key_source, url, url_source, _ = _inputs(None, "sk-b", "http://y/v1", "MY_KEY", env)
    assert (key, key_source, url, url_source) == (
        "sk-b",
        "the given api_key",
        "http://y/v1",
        "the given base URL",
    )
    key, key_source, url, url_source, _ = _inputs(None, None, None, "OPENAI_API_KEY", {})
    assert (key, key_source, url, url_source) == (
        None,
        "OPENAI_API_KEY",
        "https://api.openai.com/v1",
        "the default",
    )


def test_preflight_bad_base_url_skips_the_network_with_exact_timings() -> None:
    ticks = itertools.count()
    report = preflight(api_key=KEY, base_url="ftp://x", environ={}, clock=lambda: float(next(ticks)))
    assert report == PreflightReport(
        (
            Check("api_key", True, "sk-...XYZ9 (52 chars, from the given api_key)", seconds=1.0),
            Check(
                "base_url",
                False,
                "'ftp://x' has scheme 'ftp'",
                "the scheme must be http or https, e.g. https://api.openai.com/v1",
                seconds=1.0,
            ),
            skipped("dns", "needs base_url"),
            skipped("tcp", "needs base_url"),
            skipped("tls", "needs base_url"),
            skipped("models", "needs base_url"),
        ),
        ok=False,
    )


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), True])
def test_preflight_rejects_bad_timeouts(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a finite number of seconds > 0, got "):
        preflight(api_key=KEY, timeout=timeout, environ={})


@pytest.mark.parametrize(
    ("arguments", "refused"),
    [
        ({"client": KEY}, r"^client must be an openai\.OpenAI .*, got str \(a key goes as api_key=\)$"),
        ({"client": object()}, r"^client must be .*, got object$"),
        ({"api_key": 123}, r"^api_key must be a string or None, got int$"),
        ({"base_url": 5}, r"^base_url must be a string or None, got int$"),
        ({"api_key_env": None}, r"^api_key_env must be the name of an environment variable, got NoneType$"),
        ({"environ": []}, r"^environ must be a mapping .*, got list$"),
    ],
)
def test_preflight_names_an_argument_it_cannot_read(arguments: dict[str, object], refused: str) -> None:
    """Not an AttributeError about its insides (`preflight("sk-...")`, the key as the client)."""
    for check in (preflight, lambda **kw: anyio.run(functools.partial(apreflight, **kw))):
        with pytest.raises(TypeError, match=refused):
            check(**{"environ": {}, **arguments})


REPORT = PreflightReport.from_checks(
    [
        Check("api_key", True, "sk-...XYZ9 (51 chars, from OPENAI_API_KEY)", seconds=0.0001),
        Check("base_url", True, "http://h/v1 (from the default)", "use https", seconds=0.0),
        Check("dns", True, "h → 10.0.0.1", seconds=0.0123),
        Check("tcp", False, "connection to h:80 refused", "nothing listens on h:80", seconds=0.0021),
        skipped("tls", "http:// has no TLS", ok=True),
        skipped("models", "needs tcp"),
    ]
)


def test_report_text() -> None:
    assert str(REPORT) == (
        "✓ api_key   sk-...XYZ9 (51 chars, from OPENAI_API_KEY) (0 ms)\n"
        "! base_url  http://h/v1 (from the default) (0 ms)\n"
        "            hint: use https\n"
        "✓ dns       h → 10.0.0.1 (12 ms)\n"
        "✗ tcp       connection to h:80 refused (2 ms)\n"
        "            hint: nothing listens on h:80\n"
        "- tls       skipped: http:// has no TLS\n"
        "- models    skipped: needs tcp\n"
        "preflight FAILED: tcp"
    )
    passed = PreflightReport.from_checks([Check("api_key", True, "fine", seconds=0.5)])
    assert str(passed) == "✓ api_key  fine (500 ms)\npreflight passed"


def test_report_accessors_and_json() -> None:
    assert REPORT.ok is False
    assert [c.status for c in REPORT.checks] == ["ok", "warn", "ok", "fail", "skip", "skip"]
    assert [c.name for c in REPORT.failures] == ["tcp", "models"]
    assert REPORT.check("dns").detail == "h → 10.0.0.1"
    with pytest.raises(KeyError, match="no check named 'x'"):
        REPORT.check("x")
    data = json.loads(REPORT.to_json())
    assert data == REPORT.to_dict()
    assert data["ok"] is False
    assert data["checks"][3] == {
        "name": "tcp",
        "status": "fail",
        "ok": False,
        "skipped": False,
        "detail": "connection to h:80 refused",
        "hint": "nothing listens on h:80",
        "seconds": 0.0021,
    }


def test_dns_hint_blames_a_typo_only_in_a_host_the_user_gave() -> None:
    """Before: api.openai.com, the default nobody typed, got "check 'api.openai.com' for typos"."""
    _, default = parse_base_url("https://api.openai.com/v1", source="the default")
    _, given = parse_base_url("https://api.openai.com/v1", source="OPENAI_BASE_URL")
    assert default is not None and given is not None
    assert (default.default, given.default) == (True, False)
    missing = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert dns_hint(default, missing) == (
        "this machine cannot resolve public names (api.openai.com is the default, not a typo): "
        "it is offline, or on a network that needs a proxy (set HTTPS_PROXY)"
    )
    assert dns_hint(given, missing) == (
        "check 'api.openai.com' for typos (OPENAI_BASE_URL), then this machine's DNS and network"
    )
    unreachable = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert (
        dns_hint(default, unreachable)
        == "DNS is unreachable: are you offline? behind a proxy, set HTTPS_PROXY"
    )


def test_a_default_host_that_does_not_resolve_is_not_called_a_typo() -> None:
    target = Target(
        "http://streamtap-preflight.invalid/v1", "http", "streamtap-preflight.invalid", 80, "", default=True
    )
    check, addresses = check_dns(target, 5)
    assert (check.ok, addresses) == (False, [])
    assert check.hint == (
        "this machine cannot resolve public names (streamtap-preflight.invalid is the default, not a typo): "
        "it is offline, or on a network that needs a proxy (set HTTPS_PROXY)"
    )


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("org-abc\n", "OPENAI_ORG_ID ('org-abc?') has a newline at its start or end: no request can send it"),
        ("org a", "OPENAI_ORG_ID ('org a') has whitespace inside: no request can send it"),
        (
            "org-\u00e9",
            "OPENAI_ORG_ID ('org-?') has a non-ASCII or control character at position 4: no request can send it",
        ),
        ("  ", "OPENAI_ORG_ID ('  ') is only whitespace: no request can send it"),
    ],
)
def test_check_header_id(value: str, detail: str) -> None:
    check = check_header_id(value, source="OPENAI_ORG_ID")
    assert check is not None and (check.name, check.ok, check.detail) == ("models", False, detail)
    assert check_header_id("org-AbC_123", source="OPENAI_ORG_ID") is None

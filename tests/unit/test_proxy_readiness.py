"""/readyz: one pre-flight check at a time, shared by the probes that arrive during it, its
result reused for `ready_cache` seconds; a probe that hangs up does not stop it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import streamtap._preflight
from streamtap._preflight import Check, PreflightReport
from streamtap._proxy import Proxy
from streamtap._proxy_config import ProxyConfig


class SlowPreflight:
    """A pre-flight check that takes `seconds` and counts how often it ran."""

    def __init__(self, seconds: float, ok: bool = True, hint: str | None = None) -> None:
        self.seconds = seconds
        self.ok = ok
        self.hint = hint
        self.runs = 0

    async def __call__(self, **_kwargs: Any) -> PreflightReport:
        self.runs += 1
        await asyncio.sleep(self.seconds)
        detail = "connected" if self.ok else "refused"
        return PreflightReport.from_checks([Check("tcp", self.ok, detail, self.hint)])


async def _probe(proxy: Proxy) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await proxy({"type": "http", "method": "GET", "path": "/readyz", "headers": []}, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def _proxy(monkeypatch: pytest.MonkeyPatch, check: SlowPreflight, ready_cache: float) -> Proxy:
    monkeypatch.setattr(streamtap._preflight, "apreflight", check)
    return Proxy(ProxyConfig(upstream="http://127.0.0.1:9/v1", ready_cache=ready_cache), recorders=[])


def test_concurrent_probes_share_one_check(monkeypatch: pytest.MonkeyPatch) -> None:
    check = SlowPreflight(0.05, ok=False)
    proxy = _proxy(monkeypatch, check, ready_cache=30)

    async def main() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(_probe(proxy) for _ in range(5))))

    answers = asyncio.run(main())
    assert check.runs == 1
    assert answers == [(503, {"status": "not ready", "detail": "tcp: refused"})] * 5


def test_the_result_is_reused_for_ready_cache_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    check = SlowPreflight(0)
    cached = _proxy(monkeypatch, check, ready_cache=30)
    fresh = _proxy(monkeypatch, check, ready_cache=0)

    async def main() -> None:
        for _ in range(3):
            assert await _probe(cached) == (200, {"status": "ready", "detail": "upstream reachable"})
        assert check.runs == 1
        for _ in range(3):
            await _probe(fresh)
        assert check.runs == 4

    asyncio.run(main())


def test_a_probe_that_hangs_up_leaves_the_check_to_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    check = SlowPreflight(0.05)
    proxy = _proxy(monkeypatch, check, ready_cache=30)

    async def main() -> tuple[int, dict[str, Any]]:
        leaving = asyncio.ensure_future(_probe(proxy))
        staying = asyncio.ensure_future(_probe(proxy))
        await asyncio.sleep(0.01)
        leaving.cancel()
        answer = await staying
        assert await _probe(proxy) == answer  # from the cache the shared check filled
        return answer

    assert asyncio.run(main()) == (200, {"status": "ready", "detail": "upstream reachable"})
    assert check.runs == 1


def test_readiness_ignores_http_proxy_as_the_calls_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy's upstream client connects straight to its upstream, whatever HTTP(S)_PROXY
    says; a readiness check that went through that proxy would answer for another route (here
    503 while every call is served)."""
    from streamtap.fake import FakeConfig, FakeUpstream

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    key = "sk-test-readiness-0123456789"
    with FakeUpstream(FakeConfig(api_key=key)) as fake:
        config = ProxyConfig(
            upstream=fake.base_url, upstream_api_key=key, client_token="token", ready_cache=0
        )
        proxy = Proxy(config, recorders=[])
        answer = asyncio.run(_probe(proxy))
    assert answer == (200, {"status": "ready", "detail": "upstream reachable and key accepted"})


def test_readiness_of_an_http_upstream_needs_no_ca_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy loads them only for an https:// upstream: a bad SSL_CERT_FILE made /readyz 503
    while every call to its http:// upstream was served. (`streamtap check` still names it: the
    SDK's own client loads them for http:// too.)"""
    from streamtap.fake import FakeConfig, FakeUpstream

    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    key = "sk-test-readiness-0123456789"
    with FakeUpstream(FakeConfig(api_key=key)) as fake:
        config = ProxyConfig(
            upstream=fake.base_url, upstream_api_key=key, client_token="token", ready_cache=0
        )
        answer = asyncio.run(_probe(Proxy(config, recorders=[])))
    assert answer == (200, {"status": "ready", "detail": "upstream reachable and key accepted"})


def test_a_failure_comes_with_the_hint_check_gives_it(monkeypatch: pytest.MonkeyPatch) -> None:
    check = SlowPreflight(0, ok=False, hint="is the server running?")
    proxy = _proxy(monkeypatch, check, ready_cache=0)
    assert asyncio.run(_probe(proxy)) == (
        503,
        {"status": "not ready", "detail": "tcp: refused (hint: is the server running?)"},
    )


def test_an_upstream_without_v1_is_not_ready_with_the_hint_that_says_so() -> None:
    """/readyz said only "models: GET /models: 404 Not Found"; `streamtap check` on the same
    URL says what to fix, and now so does /readyz, naming the setting."""
    from streamtap.fake import FakeConfig, FakeUpstream

    key = "sk-test-readiness-0123456789"
    with FakeUpstream(FakeConfig(api_key=key)) as fake:
        config = ProxyConfig(
            upstream=fake.base_url.removesuffix("/v1"),
            upstream_api_key=key,
            client_token="token",
            ready_cache=0,
        )
        status, answer = asyncio.run(_probe(Proxy(config, recorders=[])))
    assert (status, answer["status"]) == (503, "not ready")
    assert answer["detail"].startswith("models: GET /models: 404")
    assert answer["detail"].endswith(
        "(hint: the server has no /models here: the base URL likely lacks /v1 or has a typo (upstream))"
    )


def test_an_upstream_likely_wrong_is_warned_of_at_start(caplog: pytest.LogCaptureFixture) -> None:
    from streamtap._proxy_server import ProxyServer

    ProxyServer(ProxyConfig(upstream="https://api.openai.com/v1/chat/completions"), recorders=[])
    ProxyServer(ProxyConfig(upstream="http://127.0.0.1:9/v1"), recorders=[])
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "streamtap.proxy",
            "WARNING",
            "upstream https://api.openai.com/v1/chat/completions: the base URL is the API root "
            "(like https://api.openai.com/v1), not an endpoint: remove /chat/completions",
        )
    ]

"""How the demo's flags choose the upstream, the key, the traffic and the scrape target."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streamtap.demo._plan import FAKE_POLICY, REAL_POLICY, DemoError, DemoOptions, fake_policy, plan
from streamtap.demo._run import _metrics_url
from streamtap.demo._stack import scrape_target
from streamtap.demo._traffic import FAKE_WORKLOADS, REAL_WORKLOADS


def test_default_is_the_in_process_fake() -> None:
    chosen = plan(DemoOptions(), {"OPENAI_API_KEY": "sk-real"})
    assert chosen.base_url is None
    assert chosen.api_key == "sk-streamtap-demo"  # never the user's key for the fake
    assert chosen.model == "gpt-4o"
    assert (chosen.workloads, chosen.policy, chosen.max_tokens) == (FAKE_WORKLOADS, FAKE_POLICY, None)
    assert [f.kind for f in chosen.fallbacks] == ["model", "non_streaming", "cache"]


@pytest.mark.parametrize(
    ("duration", "window", "open_for"),
    [(240, 10.0, 5.0), (600, 10.0, 5.0), (120, 5.0, 2.5), (60, 2.5, 1.25), (20, 2.0, 1.0)],
)
def test_the_breaker_keeps_the_storys_pace(duration: float, window: float, open_for: float) -> None:
    # A 20 s story's recovery phase lasts 3 s: a breaker open for 5 s ended it refusing callers.
    chosen = plan(DemoOptions(duration=duration), {})
    assert (chosen.policy.breaker.window, chosen.policy.breaker.open_for) == (window, open_for)
    assert replace(chosen.policy, breaker=FAKE_POLICY.breaker) == FAKE_POLICY  # nothing else moves
    assert chosen.policy == fake_policy(duration)


def test_fake_traffic_is_bounded() -> None:
    assert sum(w.rate for w in FAKE_WORKLOADS) == 14.0
    assert {(w.door, w.mode) for w in FAKE_WORKLOADS} == {
        ("instrument", "sync"),
        ("instrument", "async"),
        ("proxy", "sync"),
    }
    assert {w.api for w in FAKE_WORKLOADS} == {"chat", "responses"}
    assert any(w.stream_share < 1 for w in FAKE_WORKLOADS)  # some non-streaming calls too
    assert sum(w.rate for w in REAL_WORKLOADS) == pytest.approx(0.55)


@pytest.mark.parametrize("environ", [{}, {"OPENAI_API_KEY": ""}, {"OPENAI_API_KEY": "  "}])
def test_real_without_a_key_is_a_clear_error(environ: dict[str, str]) -> None:
    with pytest.raises(DemoError, match=r"^--real needs an API key: set OPENAI_API_KEY"):
        plan(DemoOptions(real=True), environ)


@pytest.mark.parametrize("addr", ["", "  "])
def test_an_empty_metrics_addr_is_a_clear_error(addr: str) -> None:
    """serve_metrics raised it as a ValueError, which the demo let through as a traceback."""
    with pytest.raises(DemoError, match=r"^--metrics-addr must be an interface address or name, e\.g\. 127"):
        plan(DemoOptions(metrics_addr=addr), {})


def test_real_uses_the_key_and_base_url_from_the_environment() -> None:
    chosen = plan(
        DemoOptions(real=True), {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "https://example.test/v1"}
    )
    assert (chosen.base_url, chosen.api_key, chosen.model) == (
        "https://example.test/v1",
        "sk-x",
        "gpt-4o-mini",
    )
    assert (chosen.workloads, chosen.policy, chosen.max_tokens) == (REAL_WORKLOADS, REAL_POLICY, 32)
    assert [f.kind for f in chosen.fallbacks] == ["non_streaming", "cache"]
    default = plan(DemoOptions(real=True, model="gpt-4.1-nano"), {"OPENAI_API_KEY": "sk-x"})
    assert (default.base_url, default.model) == ("https://api.openai.com/v1", "gpt-4.1-nano")


def test_base_url_over_http_gets_the_full_traffic() -> None:
    chosen = plan(DemoOptions(base_url="http://fake-upstream:8600/v1"), {})
    assert (chosen.base_url, chosen.api_key) == ("http://fake-upstream:8600/v1", "sk-streamtap-demo")
    assert chosen.workloads == FAKE_WORKLOADS


def test_base_url_over_https_is_treated_as_billed() -> None:
    chosen = plan(DemoOptions(base_url="https://api.openai.com/v1"), {"OPENAI_API_KEY": "sk-y"})
    assert (chosen.api_key, chosen.workloads, chosen.max_tokens) == ("sk-y", REAL_WORKLOADS, 32)
    assert chosen.description == "the upstream at https://api.openai.com/v1 (low traffic: https)"


def test_too_short_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="duration must be"):
        plan(DemoOptions(duration=5), {})


@pytest.mark.parametrize(
    ("addr", "target"),
    [
        ("127.0.0.1", "127.0.0.1:9464"),
        ("0.0.0.0", "127.0.0.1:9464"),
        ("localhost", "127.0.0.1:9464"),
        ("::", "[::1]:9464"),
        ("10.1.2.3", "10.1.2.3:9464"),
        ("fd00::5", "[fd00::5]:9464"),
    ],
)
def test_scrape_target(addr: str, target: str) -> None:
    assert scrape_target(addr, 9464) == target


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9464/metrics"),
        ("0.0.0.0", "http://localhost:9464/metrics"),
        ("::1", "http://[::1]:9464/metrics"),
    ],
)
def test_metrics_url(addr: str, url: str) -> None:
    assert _metrics_url(addr, 9464) == url


@pytest.mark.parametrize(
    ("options", "environ", "message"),
    [
        pytest.param(
            DemoOptions(base_url="http://127.0.0.1:99999/v1"),
            {},
            r"^--base-url must be an http:// or https:// base URL .*: Port out of range",
            id="base-url-port",
        ),
        pytest.param(
            DemoOptions(proxy_url="http://127.0.0.1:0/v1"),
            {},
            r"^--proxy-url must be an http:// or https:// base URL .*: its port is 0$",
            id="proxy-url-port-0",
        ),
        pytest.param(
            DemoOptions(real=True),
            {"OPENAI_API_KEY": "sk-real", "OPENAI_BASE_URL": "https://[::1/v1"},
            r"^OPENAI_BASE_URL must be an http:// or https:// base URL .*: Invalid IPv6 URL$",
            id="real-base-url-from-the-environment",
        ),
        pytest.param(
            DemoOptions(base_url="http://user:PASSWORD@127.0.0.1:9/v1"),
            {},
            r"^--base-url must be .*, got 'http://127\.0\.0\.1:9/v1': it carries credentials \(user:password@\)$",
            id="base-url-credentials",
        ),
        pytest.param(
            DemoOptions(proxy_url="http://127.0.0.1:9/v1?key=SECRET"),
            {},
            r"^--proxy-url must be .*, got 'http://127\.0\.0\.1:9/v1\?\.\.\.': it carries a query or fragment$",
            id="proxy-url-query",
        ),
    ],
)
def test_a_url_no_request_can_use_is_refused_naming_its_flag(
    options: DemoOptions, environ: dict[str, str], message: str
) -> None:
    # Not a traceback from the proxy's config, nor a whole run of failed calls.
    with pytest.raises(DemoError, match=message):
        plan(options, environ)

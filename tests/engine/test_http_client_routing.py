"""`streamtap.instrument` sends every request the way the user's own HTTP client would.

A proxy given to the SDK's HTTP client (`proxy=`) or read from the environment (HTTP_PROXY,
with the client's default `trust_env`) carries streamtap's attempts and the requests it passes
through untouched, sync and async, over a real loopback forward proxy; the HTTP client's
headers, auth, params, cookies and event hooks apply to every attempt.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import openai
import pytest

import streamtap
from streamtap.fake import FakeUpstream

from .conftest import TEST_POLICY
from .forward_proxy import ForwardProxy
from .support import Recording, expected, read_async, read_sync

MODES = ["sync", "async"]
HOW = ["proxy_argument", "HTTP_PROXY"]


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardProxy]:
    # No proxy setting of the machine running the tests (NO_PROXY=localhost, ...) may apply.
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    with ForwardProxy() as forward:
        yield forward


def _client(fake: FakeUpstream, mode: str, **http: Any) -> Any:
    """The user's client, its HTTP client built with `http` and the SDK's defaults."""
    if mode == "sync":
        return openai.OpenAI(
            base_url=fake.base_url, api_key="sk-test", http_client=openai.DefaultHttpxClient(**http)
        )
    return openai.AsyncOpenAI(
        base_url=fake.base_url, api_key="sk-test", http_client=openai.DefaultAsyncHttpxClient(**http)
    )


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("mode", MODES)
def test_attempts_and_passed_through_requests_go_through_the_users_proxy(
    mode: str,
    how: str,
    fake: FakeUpstream,
    recording: Recording,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.enqueue("status=503", "")
    if how == "HTTP_PROXY":
        monkeypatch.setenv("HTTP_PROXY", proxy.url)  # read when the user's client is made
        users = _client(fake, mode)
    else:
        users = _client(fake, mode, proxy=proxy.url)
    client = streamtap.instrument(users, policy=TEST_POLICY, recorders=[recording])
    received: list[str] = []
    if mode == "sync":
        with client:
            read_sync(client, "chat", received)
            assert client.models.list().data
    else:

        async def main() -> None:
            models = await client.models.list()
            assert models.data
            await read_async(client, "chat", received)  # closes the client

        anyio.run(main)
    assert "".join(received) == "".join(expected(fake, "chat"))
    assert (recording.finished.outcome, recording.finished.attempts) == ("ok", 2)
    # Both attempts of the call and the models request, each through the proxy.
    chat = ("POST", "/v1/chat/completions")
    models = ("GET", "/v1/models")
    sent = [chat, chat, models] if mode == "sync" else [models, chat, chat]
    origin = f"http://127.0.0.1:{fake.port}"
    assert proxy.request_lines == [f"{method} {origin}{path} HTTP/1.1" for method, path in sent]
    assert [(r.method, r.path) for r in fake.requests] == sent
    assert users._client.is_closed  # closing the instrumented client closed the shared pools


def _sign(request: httpx2.Request) -> httpx2.Request:
    request.headers["x-signature"] = "signed"
    return request


@pytest.mark.parametrize("mode", MODES)
def test_the_users_http_client_settings_apply_to_every_attempt(
    mode: str, fake: FakeUpstream, recording: Recording
) -> None:
    fake.enqueue("status=503", "")
    hooked: list[tuple[str, object]] = []

    def on_request(request: httpx2.Request) -> None:
        hooked.append(("request", request.headers.get("cookie")))

    def on_response(response: httpx2.Response) -> None:
        hooked.append(("response", response.status_code))

    async def on_request_async(request: httpx2.Request) -> None:
        on_request(request)

    async def on_response_async(response: httpx2.Response) -> None:
        on_response(response)

    hooks = [on_request, on_response] if mode == "sync" else [on_request_async, on_response_async]
    users = _client(
        fake,
        mode,
        headers={"x-tenant": "acme"},
        params={"api-version": "2024-06-01"},
        cookies={"session": "abc"},
        auth=_sign,
        max_redirects=3,
        event_hooks={"request": [hooks[0]], "response": [hooks[1]]},
    )
    client = streamtap.instrument(users, policy=TEST_POLICY, recorders=[recording])
    received: list[str] = []
    if mode == "sync":
        with client:
            read_sync(client, "chat", received)
    else:
        anyio.run(read_async, client, "chat", received)
    assert "".join(received) == "".join(expected(fake, "chat"))
    assert recording.finished.attempts == 2
    sent = [(r.header("x-tenant"), r.header("x-signature"), r.query) for r in fake.requests]
    assert sent == [("acme", "signed", "api-version=2024-06-01")] * 2
    # The hooks run once, around the request the SDK sent: streamtap retries below them.
    assert hooked == [("request", "session=abc"), ("response", 200)]
    assert client._client.max_redirects == 3


def test_a_fallback_upstream_goes_the_way_the_users_client_sends_its_url(
    fake: FakeUpstream, recording: Recording, proxy: ForwardProxy
) -> None:
    """Routing is per URL: with a proxy mounted for the second upstream only, the primary's
    attempts go direct and the fallback's through the proxy."""
    with FakeUpstream() as second:
        fake.enqueue(*["status=503"] * TEST_POLICY.max_attempts)
        users = _client(
            fake, "sync", mounts={second.base_url.rsplit("/v1", 1)[0]: httpx2.HTTPTransport(proxy=proxy.url)}
        )
        client = streamtap.instrument(
            users,
            policy=TEST_POLICY,
            fallbacks=[streamtap.Fallback.upstream(second.base_url, api_key="sk-second")],
            recorders=[recording],
        )
        received: list[str] = []
        with client:
            read_sync(client, "chat", received)
        assert recording.finished.fallback == "upstream"
        assert "".join(received) == "".join(expected(second, "chat"))
        assert proxy.request_lines == [f"POST {second.base_url}/chat/completions HTTP/1.1"]
    assert len(fake.requests) == TEST_POLICY.max_attempts  # direct

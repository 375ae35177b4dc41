"""The engine's fault matrix through door 2: plain SDK clients (sync and async) and raw HTTP
talking to `streamtap proxy`, which talks to the fake upstream, all over loopback."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anyio
import httpx2
import openai
import pytest

import streamtap
from streamtap import CallFinished, RetryScheduled
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeUpstream

from .cases import AFTER_COMMIT, BEFORE_COMMIT, Case
from .conftest import STALL_POLICY, TEST_POLICY
from .support import CHAT_MESSAGES, Recording, expected, read_async, read_sync


@pytest.fixture(scope="module")
def proxy_recording() -> Recording:
    return Recording()


def _proxy(fake: FakeUpstream, recording: Recording, policy: streamtap.Policy) -> ProxyServer:
    # One engine serves many tests here: without this, the breaker and the retry budget would
    # (rightly) react to the matrix's injected failures accumulating across cases.
    policy = replace(
        policy,
        budget=streamtap.BudgetSettings(enabled=False),
        breaker=streamtap.BreakerSettings(enabled=False),
    )
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", policy=policy, shutdown_grace=1)
    return ProxyServer(config, recorders=[recording])


@pytest.fixture(scope="module")
def proxy(fake: FakeUpstream, proxy_recording: Recording) -> Iterator[ProxyServer]:
    with _proxy(fake, proxy_recording, TEST_POLICY) as server:
        yield server


@pytest.fixture(scope="module")
def stall_proxy(fake: FakeUpstream, proxy_recording: Recording) -> Iterator[ProxyServer]:
    """The proxy for the cases that stall (`Case.stalls`): short timeouts."""
    with _proxy(fake, proxy_recording, STALL_POLICY) as server:
        yield server


@pytest.fixture
def seen(fake: FakeUpstream, proxy_recording: Recording) -> Recording:
    fake.clear()
    proxy_recording.events.clear()
    return proxy_recording


def _finished(recording: Recording, timeout: float = 5.0) -> CallFinished:
    # The proxy finalises a call on its own thread, just after the client saw the end.
    deadline = time.monotonic() + timeout
    while not recording.of(CallFinished) and time.monotonic() < deadline:
        time.sleep(0.01)
    return recording.finished


def _client(proxy: ProxyServer, is_async: bool) -> Any:
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    return cls(base_url=proxy.base_url, api_key="sk-client-key-1234", max_retries=0)


def _params() -> list[Any]:
    return [
        pytest.param(case, api, mode, id=f"{when}-{case.id}-{api}-{mode}")
        for when, cases in (("before", BEFORE_COMMIT), ("after", AFTER_COMMIT))
        for case in cases
        for api in case.apis
        for mode in ("sync", "async")
    ]


@pytest.mark.parametrize(("case", "api", "mode"), _params())
def test_fault_through_proxy(
    case: Case,
    api: str,
    mode: str,
    fake: FakeUpstream,
    proxy: ProxyServer,
    stall_proxy: ProxyServer,
    seen: Recording,
) -> None:
    fake.enqueue(case.spec, "")
    client = _client(stall_proxy if case.stalls else proxy, mode == "async")
    received: list[str] = []
    error: BaseException | None = None
    try:
        if mode == "sync":
            with client:
                read_sync(client, api, received)
        else:
            anyio.run(read_async, client, api, received)
    except openai.APIError as raised:
        error = raised

    pieces = expected(fake, api)
    finished = _finished(seen)
    assert len(fake.requests) == case.attempts, seen.attempts()
    assert finished.attempts == case.attempts, seen.attempts()
    if case.error_type is None:
        assert error is None
        assert received == pieces
        assert finished.outcome == "ok"
        return
    assert (finished.outcome, finished.error_type) == ("error", case.error_type)
    assert received == pieces[: case.prefix]
    assert isinstance(error, openai.APIError)  # the SDK raises: never a clean, short answer
    if case.sdk_error is not None:
        assert type(error) is case.sdk_error
    elif case.prefix == 0:  # nothing was sent yet: an error status in the API's shape
        assert isinstance(error, openai.InternalServerError)
        assert error.status_code == 502
        assert error.code == (_upstream_code(case.spec) or case.error_type)
    elif _upstream_code(case.spec):  # the upstream's error event: its own code, to branch on
        assert error.code == _upstream_code(case.spec)
    else:  # after commit: the stream ends with an error event of its dialect
        assert case.error_type in str(error)


def _upstream_code(spec: str) -> str | None:
    """The code of the error event the fake ends a stream with for `spec`, if it does."""
    if "error_after" not in spec:
        return None
    fields = dict(item.partition("=")[::2] for item in spec.split(";"))
    return fields.get("error_code") or "server_error"


@pytest.mark.parametrize(
    ("fault", "again"),
    [("drop_after=0", "stream=true"), ("drop_after=3", r"stream=true&starting_after=\d+")],
    ids=["rejoined-before-commit", "resumed-after-commit"],
)
def test_a_background_response_is_read_again_with_the_callers_query(
    fault: str, again: str, fake: FakeUpstream, proxy: ProxyServer, seen: Recording
) -> None:
    # As an Azure deployment needs: every request carries its api-version, the GET too.
    fake.enqueue(fault)
    query = {"api-version": "2025-04-01-preview"}
    received: list[str] = []
    with openai.OpenAI(
        base_url=proxy.base_url, api_key="sk-client-key-1234", max_retries=0, default_query=query
    ) as client:
        read_sync(client, "responses", received, background=True)
    assert received == expected(fake, "responses")
    created, read_again = fake.requests
    assert (created.method, created.query, read_again.method) == (
        "POST",
        "api-version=2025-04-01-preview",
        "GET",
    )
    assert re.fullmatch(f"api-version=2025-04-01-preview&{again}", read_again.query), read_again.query
    finished = _finished(seen)
    assert (finished.outcome, finished.attempts) == ("ok", 2)


def test_raw_http_stream_keeps_sse_framing(fake: FakeUpstream, proxy: ProxyServer, seen: Recording) -> None:
    fake.enqueue("status=502", "")
    body = {"model": "gpt-4o", "messages": CHAT_MESSAGES, "stream": True}
    with (
        httpx2.Client() as http,
        http.stream(
            "POST", f"{proxy.base_url}/chat/completions", json=body, headers={"authorization": "Bearer x"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-streamtap-attempts"] == "2"
        raw = b"".join(response.iter_raw())
    frames = raw.split(b"\n\n")
    assert frames[-1] == b""
    assert frames[-2] == b"data: [DONE]"
    assert all(frame.startswith(b"data: ") for frame in frames[:-1])
    assert _finished(seen).outcome == "ok"


def test_client_disconnect_cancels_the_upstream_attempt(
    fake: FakeUpstream, proxy: ProxyServer, seen: Recording
) -> None:
    body = {"model": "gpt-4o", "messages": CHAT_MESSAGES, "stream": True}
    headers = {"authorization": "Bearer x", "x-fake-gap": "0.05", "x-fake-chunks": "200"}
    with (
        httpx2.Client() as http,
        http.stream("POST", f"{proxy.base_url}/chat/completions", json=body, headers=headers) as response,
    ):
        for chunk in response.iter_raw():
            if b"content" in chunk:
                break
    finished = _finished(seen)
    assert finished.outcome == "cancelled"
    assert finished.chunks < 200


def test_client_disconnect_before_the_first_token_stops_the_retries(
    fake: FakeUpstream, stall_proxy: ProxyServer, seen: Recording
) -> None:
    # The upstream stalls before any content, past the proxy's first-token timeout (1.5 s), on
    # every attempt; the client leaves while the first attempt waits. Without a watch on the
    # client before commit, the proxy would time out and retry for nobody.
    body = json.dumps({"model": "gpt-4o", "messages": CHAT_MESSAGES, "stream": True}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"x-fake-fault: stall_first=3\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", stall_proxy.port), timeout=5) as sock:
        sock.sendall(head + body)
        deadline = time.monotonic() + 5
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fake.requests) == 1  # the first attempt is waiting for its first token
    finished = _finished(seen, timeout=10)
    assert finished.outcome == "cancelled"
    assert finished.attempts == 1, seen.attempts()
    assert seen.of(RetryScheduled) == []
    assert len(fake.requests) == 1


def test_non_engine_paths_pass_through(fake: FakeUpstream, proxy: ProxyServer, seen: Recording) -> None:
    client = _client(proxy, False)
    with client:
        assert [m.id for m in client.models.list().data]
    assert fake.requests[0].path == "/v1/models"
    assert seen.events == []


def test_health_and_readiness(proxy: ProxyServer) -> None:
    base = f"http://127.0.0.1:{proxy.port}"
    assert httpx2.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx2.get(f"{base}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_the_proxys_own_paths_answer_get_and_head_only(proxy: ProxyServer, path: str) -> None:
    base = f"http://127.0.0.1:{proxy.port}"
    assert httpx2.head(f"{base}{path}").status_code == 200
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        refused = httpx2.request(method, f"{base}{path}", content=b"{}")
        assert refused.status_code == 405, method
        assert refused.headers["allow"] == "GET, HEAD"
        assert refused.json()["error"]["code"] == "method_not_allowed"


def test_the_502_for_streams_that_all_broke_names_the_attempts_and_the_last_request_id(
    fake: FakeUpstream, proxy: ProxyServer
) -> None:
    """As the give-up on an error status does (`x-streamtap-attempts`, the upstream's headers):
    the request id is what the upstream's support asks for, and the SDK reads it from there."""
    fake.enqueue(*["error_after=0;error_code=server_error"] * TEST_POLICY.max_attempts)
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-client-key-1234", max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    client.close()
    assert raised.value.status_code == 502
    assert raised.value.code == "server_error"
    assert raised.value.response.headers["x-streamtap-attempts"] == str(TEST_POLICY.max_attempts)
    assert raised.value.request_id == fake.requests[-1].request_id is not None


@pytest.mark.parametrize(
    "fault",
    ["status=503", "error_after=0;error_code=server_error", "reset"],
    ids=["error-status", "error-event", "reset"],
)
def test_a_client_with_its_own_retries_does_not_retry_what_the_engine_gave_up_on(
    fault: str, fake: FakeUpstream, proxy: ProxyServer, seen: Recording
) -> None:
    """An SDK with its default retries behind the proxy: the engine's give-up says not to
    retry (`x-should-retry: false`), or each of the SDK's rounds would be another full set of
    the engine's attempts, billed and uncounted by the retry budget."""
    fake.enqueue(*[fault] * (TEST_POLICY.max_attempts * 3))
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-client-key-1234", max_retries=2)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    client.close()
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(fake.requests) == TEST_POLICY.max_attempts

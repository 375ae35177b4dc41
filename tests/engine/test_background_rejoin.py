"""A background response (`background=True`) the call created runs upstream whatever becomes of
the stream reading it. Once a stream gave its id, every retry before commit reads that response
again, even after a rejoin that failed itself; no fallback creates a second one beside it; and a
call that gives up names it, to retrieve or cancel, in both doors.

The upstream is scripted on loopback (the fake's faults do not reach a rejoin's GET): its answers
are a real background stream of the fake upstream, cut or whole, and error statuses.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import openai
import pytest

import streamtap
from streamtap import FallbackUsed
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeUpstream

from . import loopback
from .support import RESPONSES_INPUT, Recording, read_async, read_sync

POLICY = streamtap.Policy(max_attempts=3, backoff_base=0.001, backoff_cap=0.002)
BUSY = json.dumps(
    {"error": {"message": "busy", "type": "server_error", "param": None, "code": None}}
).encode()


@pytest.fixture(scope="module")
def stream() -> bytes:
    """A whole background stream, as the fake upstream sends it."""
    with FakeUpstream() as fake:
        answer = httpx2.post(
            f"{fake.base_url}/responses",
            json={"model": "gpt-4o", "input": RESPONSES_INPUT, "stream": True, "background": True},
            headers={"authorization": "Bearer sk-test"},
        )
    return answer.content


class Script:
    """What the upstream answers, in order, and the requests it got."""

    def __init__(self) -> None:
        # status (0: the connection closes before any answer), body, cut short
        self.answers: deque[tuple[int, bytes, bool]] = deque()
        self.requests: list[tuple[str, str]] = []


@pytest.fixture
def upstream() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(loopback.Handler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def _answer(self) -> None:
            script.requests.append((self.command, self.path))
            status, body, cut = script.answers.popleft()
            if status == 0:
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("content-type", "text/event-stream" if status == 200 else "application/json")
            if cut:  # the response's first events, then the connection closes
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with loopback.serve(Handler) as url:
        yield f"{url}/v1", script


def _created_and_cut(stream: bytes) -> tuple[int, bytes, bool]:
    """The stream up to its first content: the response was created, then the stream broke."""
    return 200, stream[: stream.index(b"response.output_text.delta") - len(b"event: ")], True


def _failed_after_content(stream: bytes) -> bytes:
    """The stream up to its third text delta, then `response.failed`: the response is over."""
    cut = stream.index(b"event: response.output_text.delta")
    for _ in range(3):
        cut = stream.index(b"\n\n", cut) + 2
    failed = {
        "type": "response.failed",
        "sequence_number": 99,
        "response": {"id": _response_id(stream), "object": "response", "status": "failed", "output": []},
    }
    return stream[:cut] + b"event: response.failed\ndata: " + json.dumps(failed).encode() + b"\n\n"


def _response_id(stream: bytes) -> str:
    created = stream.split(b"\n\n", 1)[0].split(b"data: ", 1)[1]
    return str(json.loads(created)["response"]["id"])


def _read(base: str, mode: str, recording: Recording, **options: Any) -> list[str]:
    cls = openai.AsyncOpenAI if mode == "async" else openai.OpenAI
    client = streamtap.instrument(
        cls(base_url=base, api_key="sk-test", max_retries=0), policy=POLICY, recorders=[recording], **options
    )
    received: list[str] = []
    if mode == "async":
        anyio.run(lambda: read_async(client, "responses", received, background=True))
    else:
        with client:
            read_sync(client, "responses", received, background=True)
    return received


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("failed_rejoin", ["status-503", "cut-before-any-event"])
def test_a_rejoin_that_fails_is_retried_as_a_rejoin(
    upstream: tuple[str, Script], stream: bytes, mode: str, failed_rejoin: str
) -> None:
    # The next retry after a rejoin that failed before any event was a POST: a second response
    # beside the first, both paid for, the caller given the second.
    base, script = upstream
    failed = (503, BUSY, False) if failed_rejoin == "status-503" else (200, b"", True)
    script.answers.extend([_created_and_cut(stream), failed, (200, stream, False)])
    recording = Recording()
    received = _read(base, mode, recording)
    response_id = _response_id(stream)
    assert [method for method, _ in script.requests] == ["POST", "GET", "GET"]
    assert all(path.startswith(f"/v1/responses/{response_id}?stream=true") for _, path in script.requests[1:])
    assert received and (recording.finished.outcome, recording.finished.response_id) == ("ok", response_id)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_call_that_gives_up_names_its_response_and_no_fallback_makes_another(
    upstream: tuple[str, Script], stream: bytes, mode: str
) -> None:
    base, script = upstream
    script.answers.extend([_created_and_cut(stream), (503, BUSY, False), (503, BUSY, False)])
    recording = Recording()
    fallbacks = [streamtap.Fallback.model("gpt-4o-mini"), streamtap.Fallback.non_streaming()]
    with pytest.raises(openai.InternalServerError) as raised:  # the last answer, as it came
        _read(base, mode, recording, fallbacks=fallbacks)
    response_id = _response_id(stream)
    assert [method for method, _ in script.requests] == ["POST", "GET", "GET"]
    assert raised.value.response.headers["x-streamtap-response-id"] == response_id
    finished = recording.finished
    assert (finished.outcome, finished.response_id, finished.fallback) == ("error", response_id, None)
    assert recording.of(FallbackUsed) == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_cache_may_still_serve_beside_a_running_response(
    upstream: tuple[str, Script], stream: bytes, mode: str
) -> None:
    # It creates nothing upstream, unlike every other fallback.
    base, script = upstream
    cache = streamtap.MemoryCache()
    script.answers.append((200, stream, False))
    _read(base, mode, Recording(), fallbacks=[streamtap.Fallback.cached(cache)])
    script.answers.extend([_created_and_cut(stream)] * 3)
    recording = Recording()
    received = _read(base, mode, recording, fallbacks=[streamtap.Fallback.cached(cache)])
    assert received and (recording.finished.outcome, recording.finished.fallback) == ("ok", "cache")
    assert [method for method, _ in script.requests] == ["POST", "POST", "GET", "GET"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_call_whose_rejoins_could_not_connect_names_its_response(
    upstream: tuple[str, Script], stream: bytes, mode: str
) -> None:
    base, script = upstream
    script.answers.extend([_created_and_cut(stream), (0, b"", False), (0, b"", False)])
    with pytest.raises(streamtap.StreamInterrupted) as raised:  # an APIConnectionError too
        _read(base, mode, Recording())
    assert isinstance(raised.value, openai.APIConnectionError)
    assert raised.value.response_id == _response_id(stream)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_response_that_failed_after_its_first_content_is_not_named_as_running(
    upstream: tuple[str, Script], stream: bytes, mode: str
) -> None:
    base, script = upstream
    script.answers.append((200, _failed_after_content(stream), False))
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        _read(base, mode, Recording())
    assert (raised.value.error_type, raised.value.response_id) == ("upstream_error_event", None)


@pytest.mark.parametrize("last", ["status-503", "cut"])
def test_the_proxys_answer_names_the_response(upstream: tuple[str, Script], stream: bytes, last: str) -> None:
    # The upstream's own last answer as it came (503), or the 502 for streams that all broke.
    base, script = upstream
    failed = (503, BUSY, False) if last == "status-503" else _created_and_cut(stream)
    script.answers.extend([_created_and_cut(stream), failed, failed])
    config = ProxyConfig(upstream=base, listen="127.0.0.1:0", policy=POLICY)
    with ProxyServer(config, recorders=[]) as proxy:
        answer = httpx2.post(
            f"{proxy.base_url}/responses",
            json={"model": "gpt-4o", "input": RESPONSES_INPUT, "stream": True, "background": True},
            headers={"authorization": "Bearer sk-test"},
        )
    assert answer.status_code == (503 if last == "status-503" else 502)
    assert answer.headers["x-streamtap-attempts"] == "3"
    assert answer.headers["x-streamtap-response-id"] == _response_id(stream)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_call_whose_rejoins_all_broke_names_its_response_in_the_error(
    upstream: tuple[str, Script], stream: bytes, mode: str
) -> None:
    base, script = upstream
    script.answers.extend([_created_and_cut(stream)] * 3)
    recording = Recording()
    with pytest.raises(streamtap.StreamInterrupted) as raised:
        _read(base, mode, recording, fallbacks=[streamtap.Fallback.model("gpt-4o-mini")])
    response_id = _response_id(stream)
    assert [method for method, _ in script.requests] == ["POST", "GET", "GET"]
    assert (raised.value.error_type, raised.value.response_id) == ("stream_truncated", response_id)
    assert recording.finished.response_id == response_id

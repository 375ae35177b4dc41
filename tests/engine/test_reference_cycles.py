"""A served request leaves no reference cycle of streamtap's behind.

What a cycle holds waits for Python's cyclic collector, which stops the whole process while
it runs. In the proxy at 200 concurrent streams, the cycles each request left (its client
watch's cancelled task and send timer, a failed attempt's exception) made collections of
10-34 ms every 2 s and of 120 ms every 20 s, each one landing on every stream at once: the
added time to first token at p99 went from +15-25 ms to +1.5 ms without them
(docs/benchmarks.md, "Reference cycles and the collector's pauses").

Each case serves requests through a real proxy (uvicorn, on its own thread) to the fake
upstream over loopback, with the collector off and every object it would free kept in
`gc.garbage`; any object of streamtap's there, or a frame or coroutine running its code,
fails the case. (asyncio's own transports keep a cycle of theirs when a peer resets them;
that one is not streamtap's.)
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

import streamtap
from streamtap._events import CallFinished
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import ProxyServer
from streamtap.fake import FakeUpstream

from .conftest import TEST_POLICY
from .support import Recording, until
from .telemetry_support import Telemetry

_PACKAGE = str(Path(streamtap.__file__).parent)
_BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
).encode()
# The same request written on a raw socket, for clients that hang up or reset on their own terms.
_RAW_REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    b"content-type: application/json\r\nauthorization: Bearer sk-cycles-test\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


@pytest.fixture(scope="module")
def served(fake: FakeUpstream) -> Iterator[tuple[ProxyServer, Recording]]:
    recording = Recording()
    # No breaker or budget: the cases' injected failures must not change the next case.
    policy = replace(
        TEST_POLICY,
        breaker=replace(TEST_POLICY.breaker, enabled=False),
        budget=replace(TEST_POLICY.budget, enabled=False),
    )
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", policy=policy)
    # The recorders the proxy ships with (on in-memory providers), and one to know when each
    # call has finished.
    telemetry = Telemetry()
    try:
        with ProxyServer(config, recorders=[*telemetry.recorders, recording]) as server:
            yield server, recording
    finally:
        telemetry.shutdown()


def _of(thing: object, package: str) -> bool:
    """Whether `thing` is an object of `package`'s, or a frame or coroutine running its code."""
    code = next(
        (
            getattr(thing, name)
            for name in ("f_code", "cr_code", "gi_code", "ag_code", "__code__")
            if hasattr(thing, name)
        ),
        None,
    )
    if code is not None:
        return Path(code.co_filename).is_relative_to(Path(_PACKAGE, *package.split(".")[1:]))
    return type(thing).__module__ == package or type(thing).__module__.startswith(package + ".")


def _ours(thing: object) -> bool:
    """Streamtap's, not the fake upstream's: the fake serves these tests from this process,
    and whether its connections close inside the window looked at is a matter of timing (its
    own case is `test_the_fake_upstream_leaves_no_cycle`)."""
    return _of(thing, "streamtap") and not _of(thing, "streamtap.fake")


def _describe(thing: object) -> str:
    code = getattr(thing, "f_code", None)
    where = (
        f" {code.co_name} ({Path(code.co_filename).name}:{getattr(thing, 'f_lineno', '?')})" if code else ""
    )
    return f"{type(thing).__module__}.{type(thing).__qualname__}{where}"


def _left_to_the_collector(serve: Callable[[], None], ours: Callable[[object], bool] = _ours) -> list[str]:
    """What of `ours` `serve` leaves in reference cycles (described), with the collector off."""
    gc.collect()
    flags = gc.get_debug()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        serve()
        gc.collect()
        return sorted({_describe(thing) for thing in gc.garbage if ours(thing)})
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        gc.enable()


def _post(server: ProxyServer) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=_BODY,
            headers={"content-type": "application/json", "authorization": "Bearer sk-cycles-test"},
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _leave_mid_stream(server: ProxyServer) -> None:
    """A client that reads the first bytes of its stream and hangs up."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        client.sendall(_RAW_REQUEST)
        assert client.recv(1024).startswith(b"HTTP/1.1 200")


def _serving(
    server: ProxyServer, recording: Recording, request: Callable[[], Any], calls: int = 3
) -> Callable[[], None]:
    def serve() -> None:
        recording.events.clear()
        for _ in range(calls):
            request()
        assert until(lambda: len(recording.of(CallFinished)) == calls, timeout=10)

    return serve


def test_a_stream_leaves_no_cycle(fake: FakeUpstream, served: tuple[ProxyServer, Recording]) -> None:
    server, recording = served
    fake.clear()
    results: list[tuple[int, bytes]] = []
    left = _left_to_the_collector(_serving(server, recording, lambda: results.append(_post(server))))
    assert [status for status, _ in results] == [200, 200, 200]
    assert all(body.rstrip().endswith(b"data: [DONE]") for _, body in results)
    assert left == []


def test_a_client_that_leaves_mid_stream_leaves_no_cycle(
    fake: FakeUpstream, served: tuple[ProxyServer, Recording]
) -> None:
    server, recording = served
    fake.clear()
    fake.enqueue(*["stall_after=2"] * 3)  # the stream waits there while the client leaves
    left = _left_to_the_collector(_serving(server, recording, lambda: _leave_mid_stream(server)))
    assert [event.outcome for event in recording.of(CallFinished)] == ["cancelled"] * 3
    assert left == []


@pytest.mark.parametrize(
    ("specs", "status"),
    [
        pytest.param(["reset", ""], 200, id="reset-then-ok"),
        pytest.param(["reset"] * 3, 502, id="reset-every-attempt"),
        pytest.param(["status=503"] * 3, 503, id="503-every-attempt"),
    ],
)
def test_a_failed_attempt_leaves_no_cycle(
    fake: FakeUpstream, served: tuple[ProxyServer, Recording], specs: list[str], status: int
) -> None:
    server, recording = served
    fake.clear()
    results: list[int] = []

    def request() -> None:
        fake.enqueue(*specs)
        results.append(_post(server)[0])

    left = _left_to_the_collector(_serving(server, recording, request))
    assert results == [status] * 3
    assert left == []


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("specs", "ok"),
    [
        pytest.param([""], True, id="clean"),
        pytest.param(["reset", ""], True, id="reset-then-ok"),
        pytest.param(["reset"] * 3, False, id="reset-every-attempt"),
        pytest.param(["drop_after=2"], False, id="dropped-after-commit"),
    ],
)
def test_an_instrumented_client_leaves_no_cycle(
    fake: FakeUpstream, make_client: Any, recording: Recording, mode: str, specs: list[str], ok: bool
) -> None:
    """Door 1: the engine in the caller's process, sync and async."""
    outcomes: list[bool] = []

    def call(client: Any) -> None:
        fake.enqueue(*specs)
        try:
            for _ in client.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True):
                pass
        except openai.APIError:
            outcomes.append(False)
        else:
            outcomes.append(True)

    async def acall(client: Any) -> None:
        fake.enqueue(*specs)
        try:
            async for _ in await client.chat.completions.create(
                model="gpt-4o-mini", messages=[], stream=True
            ):
                pass
        except openai.APIError:
            outcomes.append(False)
        else:
            outcomes.append(True)

    # The client is made outside what is looked at: an engine's own parts refer to each other
    # for its life (one per client); what matters is what each call leaves.
    if mode == "sync":
        client = make_client(False)

        def serve() -> None:
            for _ in range(3):
                call(client)

    else:
        aclient = make_client(True)
        loop = asyncio.new_event_loop()

        def serve() -> None:
            for _ in range(3):
                loop.run_until_complete(acall(aclient))

    try:
        left = _left_to_the_collector(serve)
    finally:
        if mode == "async":
            loop.run_until_complete(aclient.close())
            loop.close()
    assert outcomes == [ok] * 3
    assert left == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dropped_streamtap_transport_leaves_no_cycle(fake: FakeUpstream, mode: str) -> None:
    """An engine's breakers held the engine (its method was their callback), and each breaker's
    callback held the breakers: every transport built and dropped waited for the collector
    with its engine. (Through the SDK the client holds itself anyway, by its resources.)"""
    url = fake.base_url + "/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [], "stream": True}
    headers = {"authorization": "Bearer sk-x"}

    def serve() -> None:
        for _ in range(3):
            if mode == "sync":
                with httpx2.Client(transport=streamtap.StreamtapTransport(recorders=[])) as http:
                    assert b"[DONE]" in http.post(url, json=body, headers=headers).read()
            else:

                async def call() -> None:
                    transport = streamtap.AsyncStreamtapTransport(recorders=[])
                    async with httpx2.AsyncClient(transport=transport) as http:
                        response = await http.post(url, json=body, headers=headers)
                        assert b"[DONE]" in await response.aread()

                asyncio.run(call())

    assert _left_to_the_collector(serve) == []


@pytest.mark.parametrize("ending", ["close", "reset"])
def test_the_fake_upstream_leaves_no_cycle(fake: FakeUpstream, ending: str) -> None:
    """The fake upstream runs the demo and the load benchmarks: a client that left kept its
    connection's frames alive through the error the stream reader kept. (A reset met by a
    write is asyncio's own cycle, through its transport's frames, on the asyncio loop these
    tests run the fake on; the CLI's fake runs on uvloop.)"""
    open_before = fake.active_connections  # other tests' pools may hold some

    def serve() -> None:
        for _ in range(3):
            with socket.create_connection((fake.config.host, fake.port), timeout=30) as client:
                client.sendall(_RAW_REQUEST)
                answer = b""
                while not answer.endswith(b"0\r\n\r\n"):  # the whole answer: a reset meets a read
                    answer += client.recv(65536)
                if ending == "reset":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert until(lambda: fake.active_connections <= open_before, timeout=10)

    assert _left_to_the_collector(serve, lambda thing: _of(thing, "streamtap.fake")) == []

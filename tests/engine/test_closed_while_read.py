"""A stream closed by its caller while another thread or task reads it ("stop generating" in
a UI whose reader runs elsewhere): the reader stops at once, as with the plain SDK, and the
call counts `cancelled`. The reader's broken connection is the close, not a failure: it was
counted an error now and then (feeding the breaker and the error-rate alerts), and a background
response was resumed after the close and read to its end."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import httpx2
import openai
import pytest

import streamtap
from streamtap import AttemptFinished
from streamtap.fake import FakeConfig, FakeUpstream

from . import loopback
from .support import CHAT_MESSAGES, Recording

POLICY = streamtap.Policy(max_attempts=3, first_token_timeout=5, idle_timeout=5)


@pytest.fixture(scope="module")
def slow() -> Iterator[FakeUpstream]:
    # Each read waits a while: the close comes while the reader is blocked in one.
    with FakeUpstream(FakeConfig(chunks=100, gap=0.02)) as fake:
        yield fake


def _create(client: Any, api: str) -> Any:
    if api == "chat":
        return client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    return client.responses.create(model="gpt-4o", input="hi", stream=True, background=True)


def _outcome(recording: Recording) -> tuple[str, list[Any]]:
    errors = [e.error_type for e in recording.of(AttemptFinished) if e.error_type is not None]
    return recording.finished.outcome, errors


@pytest.mark.parametrize("api", ["chat", "responses-background"])
def test_a_stream_closed_from_another_thread_stops_its_reader(slow: FakeUpstream, api: str) -> None:
    for _ in range(5):
        slow.clear()
        recording = Recording()
        plain = openai.OpenAI(base_url=slow.base_url, api_key="sk-test", max_retries=0)
        with streamtap.instrument(plain, policy=POLICY, recorders=[recording]) as client:
            stream = _create(client, api.split("-")[0])
            read = [0]
            stopped: list[BaseException] = []

            def reader(
                stream: Any = stream, read: list[int] = read, stopped: list[BaseException] = stopped
            ) -> None:
                try:
                    for _ in stream:
                        read[0] += 1
                except openai.APIConnectionError as error:
                    stopped.append(error)

            thread = threading.Thread(target=reader)
            thread.start()
            time.sleep(0.2)
            closed_at = time.monotonic()
            stream.close()
            thread.join(5)
            assert not thread.is_alive() and time.monotonic() - closed_at < 1.0
        assert stopped and read[0] < 50  # stopped mid-answer, as the plain SDK's reader is
        assert _outcome(recording) == ("cancelled", [])
        assert [r.method for r in slow.requests] == ["POST"]  # nothing resumed after the close


@pytest.mark.parametrize("api", ["chat", "responses-background"])
def test_a_stream_closed_from_another_task_stops_its_reader(slow: FakeUpstream, api: str) -> None:
    async def run() -> tuple[int, list[BaseException]]:
        plain = openai.AsyncOpenAI(base_url=slow.base_url, api_key="sk-test", max_retries=0)
        async with streamtap.instrument(plain, policy=POLICY, recorders=[recording]) as client:
            stream = await _create(client, api.split("-")[0])
            read = [0]
            stopped: list[BaseException] = []

            async def reader() -> None:
                try:
                    async for _ in stream:
                        read[0] += 1
                except openai.APIConnectionError as error:
                    stopped.append(error)

            task = asyncio.create_task(reader())
            await asyncio.sleep(0.2)
            await stream.close()
            await asyncio.wait_for(task, 1.0)
            return read[0], stopped

    for _ in range(5):
        slow.clear()
        recording = Recording()
        read, stopped = asyncio.run(run())
        assert stopped and read < 50
        assert _outcome(recording) == ("cancelled", [])
        assert [r.method for r in slow.requests] == ["POST"]


class _SlowResume(loopback.Handler):
    """A background response whose stream breaks after a few deltas, and whose resume (the GET)
    takes `WAIT` seconds to answer: a close lands while the reader opens it."""

    WAIT = 0.6
    stream = b""  # the whole answer, as the fake streams it
    gets: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        cut = self.stream.index(b"event: response.output_text.delta")
        for _ in range(3):
            cut = self.stream.index(b"\n\n", cut) + 2
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(self.stream[:cut])  # then the connection closes: no terminal event
        self.close_connection = True

    def do_GET(self) -> None:
        self.gets.append(time.monotonic())
        time.sleep(self.WAIT)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(self.stream)))
        self.end_headers()
        self.wfile.write(self.stream)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_closed_while_it_resumes_stops_its_reader(slow: FakeUpstream, mode: str) -> None:
    """The close came while the reader opened the resume: the reader went on to read it whole."""
    request = {"model": "gpt-4o", "input": "hi", "stream": True, "background": True}
    _SlowResume.stream = httpx2.post(slow.base_url + "/responses", json=request).content
    _SlowResume.gets.clear()
    recording = Recording()
    after: list[str] = []
    with loopback.serve(_SlowResume) as url:
        if mode == "sync":
            plain = openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
            with streamtap.instrument(plain, policy=POLICY, recorders=[recording]) as client:
                stream = client.responses.create(**request)
                closed: list[float] = []

                def reader() -> None:
                    with contextlib.suppress(openai.APIConnectionError):
                        after.extend(event.type for event in stream if closed)

                thread = threading.Thread(target=reader)
                thread.start()
                _wait_for(lambda: bool(_SlowResume.gets))
                time.sleep(_SlowResume.WAIT / 3)
                closed.append(time.monotonic())
                stream.close()
                thread.join(5)
                assert not thread.is_alive()
        else:

            async def run() -> None:
                plain = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
                async with streamtap.instrument(plain, policy=POLICY, recorders=[recording]) as client:
                    stream = await client.responses.create(**request)
                    closed: list[float] = []

                    async def reader() -> None:
                        with contextlib.suppress(openai.APIConnectionError):
                            after.extend([event.type async for event in stream if closed])

                    task = asyncio.create_task(reader())
                    while not _SlowResume.gets:
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(_SlowResume.WAIT / 3)
                    closed.append(time.monotonic())
                    await stream.close()
                    await asyncio.wait_for(task, 5)

            asyncio.run(run())
    assert after == []  # nothing read after the close
    assert recording.finished.outcome == "cancelled"


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)

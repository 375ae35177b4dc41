"""Everything the SDK offers keeps working through `streamtap.instrument`, over real sockets."""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import openai
import pytest

import streamtap
from streamtap import AttemptFinished, CallFinished, CallStarted
from streamtap.fake import FakeUpstream

from .support import CHAT_MESSAGES, RESPONSES_INPUT, Recording, collect, expected


def test_instrument_returns_a_copy_of_the_same_class(fake: FakeUpstream) -> None:
    original = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=5)
    client = streamtap.instrument(original, recorders=[])
    assert type(client) is openai.OpenAI
    assert client is not original
    assert client.max_retries == original.max_retries == 5  # for what passes through (see below)
    assert original._client is not client._client
    client.close()


def test_instrument_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match=r"openai\.OpenAI or openai\.AsyncOpenAI, got str"):
        streamtap.instrument("client", recorders=[])  # type: ignore[type-var]


def test_stream_is_an_ordinary_sdk_stream(fake: FakeUpstream, recording: Recording, make_client: Any) -> None:
    client = make_client(False)
    stream = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    assert isinstance(stream, openai.Stream)
    with stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "".join(expected(fake, "chat"))
    assert stream.response.headers["x-streamtap-attempts"] == "1"
    assert recording.finished.outcome == "ok"


def test_non_streaming_calls(fake: FakeUpstream, recording: Recording, make_client: Any) -> None:
    client = make_client(False)
    fake.enqueue("status=503", "")
    completion = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
    assert completion.choices[0].message.content == "".join(expected(fake, "chat"))
    response = client.responses.create(model="gpt-4o", input=RESPONSES_INPUT)
    assert response.output_text == "".join(expected(fake, "responses"))
    finished = recording.of(CallFinished)
    assert [f.outcome for f in finished] == ["ok", "ok"]
    assert [f.attempts for f in finished] == [2, 1]
    assert finished[0].output_tokens == len(expected(fake, "chat"))


def test_stream_helpers(fake: FakeUpstream, recording: Recording, make_client: Any) -> None:
    client = make_client(False)
    fake.enqueue("drop_after=0", "", "truncate_after=0", "")
    with client.chat.completions.stream(model="gpt-4o", messages=CHAT_MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "".join(expected(fake, "chat"))
    with client.responses.stream(model="gpt-4o", input=RESPONSES_INPUT) as events:
        response = events.get_final_response()
    assert response.output_text == "".join(expected(fake, "responses"))
    assert [f.outcome for f in recording.of(CallFinished)] == ["ok", "ok"]


def test_raw_and_streaming_response_wrappers(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    client = make_client(False)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=CHAT_MESSAGES)
    assert raw.headers["x-streamtap-attempts"] == "1"
    assert raw.parse().choices[0].message.content == "".join(expected(fake, "chat"))
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=CHAT_MESSAGES, stream=True
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    limited = client.with_options(timeout=5.0)
    assert limited.responses.create(model="gpt-4o", input=RESPONSES_INPUT).output_text


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_whole_answers_are_timed_as_the_sdk_times_them(
    fake: FakeUpstream, recording: Recording, make_client: Any, is_async: bool
) -> None:
    """`.elapsed` of an answer streamtap holds whole: non-streaming, served by a fallback, or the
    error the SDK raises after streamtap gave up."""
    client = make_client(is_async, fallbacks=[streamtap.Fallback.non_streaming()])
    # The second call's three streaming attempts fail, its non-streaming fallback serves it;
    # the third call is refused.
    fake.enqueue("", "status=503", "status=503", "status=503", "", "status=401")

    async def calls() -> list[Any]:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=CHAT_MESSAGES
            )
            served = await client.responses.with_raw_response.create(
                model="gpt-4o", input=RESPONSES_INPUT, stream=True
            )
            async for _ in served.parse():  # a stream: timed once read to its end
                pass
            with pytest.raises(openai.AuthenticationError) as raised:
                await client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
            return [raw.http_response, served.http_response, raised.value.response]
        finally:
            await client.close()

    def sync_calls() -> list[Any]:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=CHAT_MESSAGES)
        served = client.responses.with_raw_response.create(model="gpt-4o", input=RESPONSES_INPUT, stream=True)
        for _ in served.parse():  # a stream: timed once read to its end
            pass
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
        return [raw.http_response, served.http_response, raised.value.response]

    responses = anyio.run(calls) if is_async else sync_calls()
    assert [r.headers.get("x-streamtap-fallback") for r in responses] == [None, "non_streaming", None]
    for response in responses:
        assert response.elapsed.total_seconds() >= 0
    for response in (responses[0], responses[2]):  # read whole by the SDK
        assert int(response.headers["content-length"]) == len(response.content)


def test_other_endpoints_pass_through(fake: FakeUpstream, recording: Recording, make_client: Any) -> None:
    client = make_client(False)
    models = client.models.list()
    assert models.data
    assert recording.events == []


def test_breaking_out_early_is_cancelled_and_releases_the_connection(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    client = make_client(False)
    stream = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    for _chunk in stream:
        break
    stream.close()
    assert recording.finished.outcome == "cancelled"
    assert recording.finished.error_type is None
    # The pool is usable again: the next call gets a connection.
    assert client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES).choices


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_left_at_its_finish_reason_is_ok(
    fake: FakeUpstream, recording: Recording, make_client: Any, mode: str
) -> None:
    """The caller has the whole answer, every choice finished (`[DONE]` unread): ok, as the proxy
    counts it."""
    client = make_client(mode == "async")
    request = {"model": "gpt-4o", "messages": CHAT_MESSAGES, "stream": True}

    async def read_async() -> None:
        async with client, await client.chat.completions.create(**request) as stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].finish_reason:
                    break

    if mode == "async":
        anyio.run(read_async)
    else:
        with client.chat.completions.create(**request) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].finish_reason:
                    break
    assert recording.finished.outcome == "ok"


@pytest.mark.parametrize("first", ["", "reset", "status=503"])
def test_a_stream_never_read_is_abandoned_whatever_its_first_attempt_met(
    fake: FakeUpstream, make_client: Any, first: str
) -> None:
    """After a connection that failed, the call kept that attempt's exception, whose traceback
    held the stream: its finalizer never ran, the call never ended, its connection stayed open."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    recording = Recording()
    client = make_client(False, recorders=[recording, streamtap.PrometheusRecorder(registry)])
    fake.enqueue(first, "")
    stream = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    del stream
    collect()
    assert recording.finished.outcome == "abandoned"
    assert registry.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}) == 0


def test_a_stream_never_consumed_is_abandoned(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    client = make_client(False)
    stream = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    del stream
    collect()
    assert recording.finished.outcome == "abandoned"
    assert len(recording.of(AttemptFinished)) == 0


@pytest.mark.parametrize(
    "backend",
    [
        "asyncio",
        # trio warns of every async generator collected unfinished (httpx2's body iterators of an
        # unread stream), as it does under the plain SDK: not what this test is about.
        pytest.param(
            "trio", marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
        ),
    ],
)
def test_async_streams_never_read_give_their_connections_back(
    backend: str, fake: FakeUpstream, recording: Recording
) -> None:
    """A finalizer cannot await: the connection's close is handed to the stream's event loop.
    Without it each abandoned stream kept an entry in the client's pool for good."""

    async def main() -> int:
        async with streamtap.instrument(
            openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test"), recorders=[recording]
        ) as client:
            for _ in range(20):
                stream = await client.chat.completions.create(
                    model="gpt-4o", messages=CHAT_MESSAGES, stream=True
                )
                del stream
                collect()
            for _ in range(10):
                await anyio.sleep(0.01)  # the closes run on the loop
            transport = client._client._transport._transport
            while not hasattr(transport, "_pool"):  # the router, the SDK's client, its transport
                transport = getattr(transport, "_transport", None) or transport.client._transport
            pending = len(transport._pool._requests)
            # The pool is usable: a next call gets a connection.
            assert (await client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)).choices
            return pending

    assert anyio.run(main, backend=backend) == 0
    assert [f.outcome for f in recording.of(CallFinished)][:20] == ["abandoned"] * 20


def test_a_stream_left_in_a_break_is_cancelled(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    # No close(): the stream is a reference cycle, collected later. The caller stopped early.
    client = make_client(False)
    stream = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    for _chunk in stream:
        break
    del stream, _chunk
    collect()
    assert (recording.finished.outcome, recording.finished.error_type) == ("cancelled", None)


def test_an_async_stream_left_in_a_break_is_cancelled(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    client = make_client(True)

    async def main() -> None:
        stream = await client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
        async for _chunk in stream:
            break
        del stream, _chunk
        collect()
        await anyio.sleep(0)  # the event loop closes the SDK's generator

    anyio.run(main)
    collect()
    assert (recording.finished.outcome, recording.finished.error_type) == ("cancelled", None)


def test_streamtap_counts_the_attempts_and_the_sdk_retries_none(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    client = make_client(False)
    fake.enqueue("status=500", "status=500", "status=500", "")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    assert [r.retry_count for r in fake.requests] == ["0", "1", "2"]
    assert recording.finished.attempts == 3
    assert recording.finished.error_type == "server_error"


def test_the_sdk_never_retries_what_the_engine_gave_up_on(
    fake: FakeUpstream, recording: Recording, make_client: Any
) -> None:
    """Its own retries on, in copies too, the SDK starts no call over: an error status the
    engine gave up with says x-should-retry: false, a transport error is the SDK's own
    APIConnectionError, which it raises as it comes."""
    client = make_client(False)
    copied = client.with_options(max_retries=2).copy(max_retries=5, timeout=30.0)
    assert (type(copied), copied.max_retries) == (openai.OpenAI, 5)
    fake.enqueue(*["status=429;retry_after=0"] * 9)
    with pytest.raises(openai.RateLimitError) as limited:
        copied.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    assert limited.value.response.headers["x-should-retry"] == "false"
    # streamtap's three attempts, and no SDK retry of the call that gave up.
    assert [r.retry_count for r in fake.requests] == ["0", "1", "2"]
    assert (recording.finished.attempts, recording.finished.error_type) == (3, "rate_limited")
    fake.clear()
    fake.enqueue(*["reset"] * 9)
    with pytest.raises(openai.APIConnectionError) as reset:
        copied.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    assert type(reset.value) is openai.APIConnectionError  # as the SDK raises it itself
    assert len(fake.requests) == 3
    # A copy given its own HTTP client is routed through the same engine.
    own = copied.copy(http_client=openai.DefaultHttpxClient(), max_retries=2)
    assert own._client._transport.engine is client._client._transport.engine
    own.close()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_what_passes_through_keeps_the_sdks_own_retries(
    is_async: bool, fake: FakeUpstream, make_client: Any
) -> None:
    """Models, files, embeddings, a response retrieved: the SDK retries them by its own rules,
    as it would without streamtap; they are not the engine's calls."""
    once = {"x-fake-fault": "status=503;retry_after=0;times=1"}
    if is_async:

        async def main() -> list[str]:
            async with make_client(True) as aclient:
                return [
                    m.id async for m in aclient.with_options(max_retries=1).models.list(extra_headers=once)
                ]

        models = anyio.run(main)
    else:
        models = [
            m.id for m in make_client(False).with_options(max_retries=1).models.list(extra_headers=once)
        ]
    assert models
    assert [r.status for r in fake.requests] == [503, 200]


def test_async_cancellation_is_recorded(fake: FakeUpstream, recording: Recording, make_client: Any) -> None:
    async def main() -> None:
        client = make_client(True)
        try:
            stream = await client.responses.create(model="gpt-4o", input=RESPONSES_INPUT, stream=True)
            async for event in stream:
                if event.type == "response.output_text.delta":
                    break
            await stream.close()
        finally:
            await client.close()

    anyio.run(main)
    assert recording.finished.outcome == "cancelled"
    assert recording.of(CallStarted)[0].api == "responses"


def test_transports_for_clients_you_build_yourself(fake: FakeUpstream, recording: Recording) -> None:
    transport = streamtap.StreamtapTransport(httpx2.HTTPTransport(), recorders=[recording])
    client = openai.OpenAI(
        base_url=fake.base_url,
        api_key="sk-test",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )
    fake.enqueue("reset", "")
    with (
        client,
        client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True) as stream,
    ):
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "".join(expected(fake, "chat"))
    assert recording.finished.attempts == 2

    async def main() -> None:
        async_transport = streamtap.AsyncStreamtapTransport(
            httpx2.AsyncHTTPTransport(), recorders=[recording]
        )
        async with openai.AsyncOpenAI(
            base_url=fake.base_url,
            api_key="sk-test",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=async_transport),
        ) as aclient:
            response = await aclient.responses.create(model="gpt-4o", input=RESPONSES_INPUT)
            assert response.output_text == "".join(expected(fake, "responses"))

    anyio.run(main)
    assert [f.outcome for f in recording.of(CallFinished)] == ["ok", "ok"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda: streamtap.AsyncStreamtapTransport(httpx2.HTTPTransport(), recorders=[]),
            r"^AsyncStreamtapTransport transport must be an httpx2 transport with handle_async_request\(\)",
            id="sync-transport-in-the-async-one",
        ),
        pytest.param(
            lambda: streamtap.StreamtapTransport(httpx2.AsyncHTTPTransport(), recorders=[]),
            r"^StreamtapTransport transport must be an httpx2 transport with handle_request\(\)",
            id="async-transport-in-the-sync-one",
        ),
        pytest.param(
            lambda: streamtap.StreamtapTransport(engine="shared"),  # type: ignore[arg-type]
            r"^StreamtapTransport engine must be a streamtap\.Engine or None, got 'shared'",
            id="engine-not-an-engine",
        ),
        pytest.param(
            lambda: streamtap.StreamtapTransport(
                engine=streamtap.Engine(recorders=[]), policy=streamtap.Policy(max_attempts=1)
            ),
            r"^StreamtapTransport takes either engine= or policy=, fallbacks= and recorders=",
            id="engine-and-a-policy",
        ),
        pytest.param(
            lambda: streamtap.AsyncStreamtapTransport(
                engine=streamtap.Engine(recorders=[]), fallbacks=[streamtap.Fallback.non_streaming()]
            ),
            r"^AsyncStreamtapTransport takes either engine= or policy=, fallbacks= and recorders=",
            id="engine-and-fallbacks",
        ),
    ],
)
def test_transports_name_a_bad_argument(make: Any, message: str) -> None:
    """Before: all accepted. A transport of the other kind or a wrong engine failed on the first
    request (AttributeError: 'HTTPTransport' object has no attribute 'handle_async_request'),
    and a policy or fallbacks given beside engine= were dropped without a word."""
    with pytest.raises(TypeError, match=message):
        make()


@pytest.mark.parametrize("stream", [True, False])
def test_the_response_keeps_the_transports_extensions(
    fake: FakeUpstream, make_client: Any, stream: bool
) -> None:
    """As the plain SDK's: the HTTP version, reason phrase and connection (its peer address)."""
    client = make_client(False)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=CHAT_MESSAGES, stream=stream
    )
    extensions = raw.http_response.extensions
    assert sorted(extensions) == ["http_version", "network_stream", "reason_phrase"]
    assert extensions["network_stream"].get_extra_info("server_addr") == ("127.0.0.1", fake.port)
    raw.parse() if not stream else list(raw.parse())

"""Server behaviour: auth, routing, overrides, keep-alive, records, incidents, lifecycle, async."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import time
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import ResponseStreamEvent

from streamtap.fake import FakeConfig, FakeUpstream, Incident, expected_text
from streamtap.fake._records import RequestLog, RequestRecord

from .conftest import API_KEY, CHUNKS

MODEL = "gpt-4o"
MESSAGES: list[Any] = [{"role": "user", "content": "ping"}]


def raw(fake: FakeUpstream, method: str, path: str, body: object = None, **headers: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def wait_until(condition: Any, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def keyed() -> Any:
    with FakeUpstream(FakeConfig(chunks=2, api_key=API_KEY)) as fake:
        yield fake


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param("sk-wrong", "Incorrect API key provided", id="wrong"),
        pytest.param(API_KEY + "x", "Incorrect API key provided", id="prefix"),
    ],
)
def test_wrong_key_is_401_on_every_endpoint(keyed: FakeUpstream, key: str, message: str) -> None:
    with openai.OpenAI(base_url=keyed.base_url, api_key=key, max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as chat:
            sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(openai.AuthenticationError):
            sdk.models.list()
    assert chat.value.code == "invalid_api_key"
    assert message in chat.value.message


def test_missing_key_is_401(keyed: FakeUpstream) -> None:
    status, body = raw(keyed, "GET", "/v1/models")
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("You didn't provide an API key.")


def test_right_key_works_and_is_never_recorded(keyed: FakeUpstream) -> None:
    keyed.clear()
    with openai.OpenAI(base_url=keyed.base_url, api_key=API_KEY, max_retries=0) as sdk:
        assert len(list(sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))) == 2 + 2
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                extra_headers={"x-fake-fault": "status=500", "x-api-key": API_KEY},
            )
    records = keyed.requests
    assert [r.status for r in records] == [200, 500]
    assert API_KEY not in repr(records)
    assert records[0].header("Authorization") == "[redacted]"
    assert records[1].header("x-api-key") == "[redacted]"
    assert records[0].header("content-type") == "application/json"


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/nope"), ("POST", "/v1/models"), ("GET", "/v1/chat/completions")]
)
def test_unknown_routes_are_404_with_error_json(fake: FakeUpstream, method: str, path: str) -> None:
    status, body = raw(fake, method, path)
    assert (status, body) == (
        404,
        {
            "error": {
                "message": f"Invalid URL ({method} {path})",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )


def test_models_list(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[:2] == ["gpt-4o", "gpt-4o-mini"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({"x-fake-fault": "explode=1"}, "unknown key 'explode'", id="fault"),
        pytest.param(
            {"x-fake-chunks": "many"}, "x-fake-chunks='many'; accepted: an integer 0..100000", id="chunks"
        ),
        pytest.param({"x-fake-ttft": "-1"}, "x-fake-ttft='-1'; accepted: seconds 0..3600", id="ttft"),
        pytest.param({"x-fake-gap": "soon"}, "x-fake-gap='soon'; accepted: seconds 0..3600", id="gap"),
    ],
)
def test_bad_fake_headers_are_400_naming_the_header(
    client: openai.OpenAI, headers: dict[str, str], message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers=headers)
    assert message in excinfo.value.message


def test_missing_fields_are_400(fake: FakeUpstream) -> None:
    assert raw(fake, "POST", "/v1/chat/completions", {"messages": []})[1]["error"]["param"] == "model"
    assert raw(fake, "POST", "/v1/chat/completions", {"model": "m"})[1]["error"]["code"] == (
        "missing_required_parameter"
    )
    assert raw(fake, "POST", "/v1/responses", {"model": "m"})[1]["error"]["param"] == "input"


@pytest.mark.parametrize(
    ("stream", "named"),
    [("true", "a string"), (1, "an integer"), (0.5, "a decimal"), ([True], "an array"), ({}, "an object")],
)
def test_a_stream_that_is_not_a_boolean_is_400_as_openai_answers(
    fake: FakeUpstream, stream: object, named: str
) -> None:
    status, body = raw(
        fake, "POST", "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "stream": stream}
    )
    assert status == 400
    assert body["error"] == {
        "message": f"Invalid type for 'stream': expected a boolean, but got {named} instead.",
        "type": "invalid_request_error",
        "param": "stream",
        "code": "invalid_type",
    }
    status, body = raw(fake, "POST", "/v1/responses", {"model": MODEL, "input": "hi", "stream": None})
    assert (status, body["object"]) == (200, "response")  # null: the default, no stream


def test_a_lone_surrogate_in_a_prompt_is_answered(fake: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "half an emoji: \ud83d"}]
    status, body = raw(fake, "POST", "/v1/chat/completions", {"model": MODEL, "messages": messages})
    assert status == 200
    assert body["choices"][0]["message"]["content"] == expected_text(MODEL, messages, CHUNKS)


def test_chunk_override_header(client: openai.OpenAI, fake: FakeUpstream) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-chunks": "11", "x-fake-gap": "0.001"},
        )
    )
    got = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert got == fake.expected_pieces(model=MODEL, messages=MESSAGES, chunks=11)


def test_keep_alive_serves_many_requests_on_one_connection(fake: FakeUpstream) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        statuses = []
        for _ in range(3):
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}),
            )
            response = conn.getresponse()
            body = response.read()
            statuses.append(response.status)
            assert response.getheader("transfer-encoding") == "chunked"
            assert body.endswith(b"data: [DONE]\n\n")
        first_socket = conn.sock
        conn.request("GET", "/v1/models")
        conn.getresponse().read()
        assert conn.sock is first_socket
    finally:
        conn.close()
    assert statuses == [200, 200, 200]


def test_records_carry_retry_count_traceparent_and_fault(client: openai.OpenAI, fake: FakeUpstream) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            extra_headers={"traceparent": traceparent, "x-fake-fault": "status=429;model=gpt-4o"},
        )
    (record,) = fake.requests
    assert (record.traceparent, record.retry_count, record.fault, record.fault_source, record.status) == (
        traceparent,
        "0",
        "status=429;model=gpt-4o",
        "header",
        429,
    )
    assert record.header("x-fake-fault") == "status=429;model=gpt-4o"
    fake.clear()
    assert fake.requests == []


def test_model_filtered_header_spares_other_models(client: openai.OpenAI, fake: FakeUpstream) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-fault": "reset;model=gpt-4o"},
        )
    )
    assert len(chunks) == CHUNKS + 2
    assert fake.requests[0].fault == ""


def statuses_with_incidents(seed: int) -> list[int]:
    config = FakeConfig(chunks=1, seed=seed, incidents=(Incident.always(0.5, "status=503"),))
    with (
        FakeUpstream(config) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as sdk,
    ):
        for _ in range(16):
            with contextlib.suppress(openai.InternalServerError):
                sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
        return [r.status for r in fake.requests]


def test_incidents_with_a_seed_are_reproducible() -> None:
    first = statuses_with_incidents(11)
    assert first == statuses_with_incidents(11)
    assert sorted(set(first)) == [200, 503]
    assert first != statuses_with_incidents(12)


def test_incident_window_relative_to_start() -> None:
    config = FakeConfig(
        incidents=(Incident(3600.0, None, 1.0, "reset"), Incident(0.0, 3600.0, 1.0, "status=502"))
    )
    with (
        FakeUpstream(config) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as sdk,
    ):
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert [(r.fault, r.fault_source) for r in fake.requests] == [("status=502", "incident")]


def test_stall_ends_when_the_client_disconnects(client: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.APITimeoutError):
        list(
            client.with_options(timeout=0.3).chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, extra_headers={"x-fake-fault": "stall_first=30"}
            )
        )
    client.close()
    assert wait_until(lambda: fake.active_connections == 0)


def test_stop_closes_open_streams_and_joins() -> None:
    fake = FakeUpstream().start()
    errors: list[BaseException] = []

    def stalled() -> None:
        with openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as sdk:
            try:
                list(
                    sdk.chat.completions.create(
                        model=MODEL,
                        messages=MESSAGES,
                        stream=True,
                        extra_headers={"x-fake-fault": "stall_first"},
                    )
                )
            except openai.APIError as err:
                errors.append(err)

    thread = threading.Thread(target=stalled)
    thread.start()
    assert wait_until(lambda: len(fake.requests) == 1)
    fake.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert [type(err) for err in errors] == [openai.APIConnectionError]
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.base_url


def test_start_twice_is_an_error(fake: FakeUpstream) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        fake.start()


def test_expected_text_needs_exactly_one_prompt(fake: FakeUpstream) -> None:
    with pytest.raises(ValueError, match=r"exactly one of messages= \(chat\) or input="):
        fake.expected_text(model=MODEL)


async def collect_types(stream: openai.AsyncStream[ResponseStreamEvent], into: list[str]) -> None:
    # Appends as it goes, so a test sees what arrived before the stream raised.
    async for event in stream:
        into.append(event.type)  # noqa: PERF401 (a comprehension would lose the partial list)


@pytest.mark.anyio
async def test_async_sdk_stream_and_drop(aclient: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    stream = await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    got = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert got == fake.expected_pieces(model=MODEL, messages=MESSAGES)
    dropped = await aclient.responses.create(
        model=MODEL, input="x", stream=True, extra_headers={"x-fake-fault": "drop_after=3"}
    )
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        await collect_types(dropped, seen)
    received = seen.count("response.output_text.delta")
    assert received == 3


@pytest.mark.anyio
async def test_async_stall_times_out(aclient: openai.AsyncOpenAI) -> None:
    # A roomier timeout: the first delta must arrive before the stall, even on a loaded machine.
    stream = await aclient.with_options(timeout=1.0).responses.create(
        model=MODEL, input="x", stream=True, extra_headers={"x-fake-fault": "stall_after=1;stall=30"}
    )
    seen: list[str] = []
    with pytest.raises(openai.APITimeoutError):
        await collect_types(stream, seen)
    assert seen.count("response.output_text.delta") == 1


@pytest.mark.anyio
async def test_serves_inside_a_running_loop_with_concurrent_streams() -> None:
    async with FakeUpstream(FakeConfig(chunks=5, gap=0.001)) as fake:
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as sdk:

            async def one(index: int) -> str:
                messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"n{index}"}]
                stream = await sdk.chat.completions.create(model=MODEL, messages=messages, stream=True)
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

            texts = await asyncio.gather(*(one(index) for index in range(60)))
        assert texts == [
            fake.expected_text(model=MODEL, messages=[{"role": "user", "content": f"n{index}"}])
            for index in range(60)
        ]
        assert len(fake.requests) == 60
    assert fake.active_connections == 0


def test_head_gets_headers_only_and_keeps_the_connection(fake: FakeUpstream) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request("HEAD", "/v1/models")
        head = conn.getresponse()
        assert (head.status, head.read()) == (404, b"")
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_unparseable_request_gets_400_and_close(fake: FakeUpstream) -> None:
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in received
    assert received.endswith(b'"type":"invalid_request_error","param":null,"code":null}}')


def test_the_request_log_keeps_only_the_most_recent_records() -> None:
    def record(i: int) -> RequestRecord:
        return RequestRecord("POST", f"/v1/{i}", "", None, False, None, None, "", "", 200, (), float(i))

    log = RequestLog(capacity=3)
    for i in range(5):
        log.append(record(i))
    assert [r.path for r in log.snapshot()] == ["/v1/2", "/v1/3", "/v1/4"]
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        RequestLog(capacity=0)

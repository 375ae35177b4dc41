"""Chat completions faults reach the plain `openai` SDK exactly as the real failures would."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from streamtap.fake import FakeUpstream

from .conftest import CHUNKS

MODEL = "gpt-4o"
MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about streams"}]


def fault(spec: str, **extra: str) -> dict[str, str]:
    return {"x-fake-fault": spec, **extra}


def texts(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def consume(stream: openai.Stream[ChatCompletionChunk], into: list[ChatCompletionChunk]) -> None:
    # Appends as it goes, so a test sees what arrived before the stream raised.
    into.extend(stream)


def stream(
    client: openai.OpenAI, headers: dict[str, str] | None = None
) -> openai.Stream[ChatCompletionChunk]:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers=headers)


def test_clean_stream_is_the_expected_text(client: openai.OpenAI, fake: FakeUpstream) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert texts(chunks) == fake.expected_pieces(model=MODEL, messages=MESSAGES)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].id.startswith("chatcmpl-")
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (CHUNKS + 1) + ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == CHUNKS
    (record,) = fake.requests
    assert (record.method, record.path, record.model, record.stream, record.status) == (
        "POST",
        "/v1/chat/completions",
        MODEL,
        True,
        200,
    )
    assert (record.retry_count, record.fault, record.fault_source) == ("0", "", "")


def test_non_stream_has_the_same_text(client: openai.OpenAI, fake: FakeUpstream) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == fake.expected_text(model=MODEL, messages=MESSAGES)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == CHUNKS
    assert fake.requests[0].stream is False


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize(
    ("spec", "error", "code"),
    [
        pytest.param("status=429", openai.RateLimitError, "rate_limit_exceeded", id="429"),
        pytest.param("status=500", openai.InternalServerError, None, id="500"),
        pytest.param("status=502", openai.InternalServerError, None, id="502"),
        pytest.param("status=503", openai.InternalServerError, None, id="503"),
        pytest.param("status=504", openai.InternalServerError, None, id="504"),
        pytest.param("status=400", openai.BadRequestError, "invalid_value", id="400"),
        pytest.param("status=401", openai.AuthenticationError, "invalid_api_key", id="401"),
        pytest.param("status=404", openai.NotFoundError, "model_not_found", id="404"),
        pytest.param(
            "status=503;error_code=overloaded", openai.InternalServerError, "overloaded", id="503-code"
        ),
    ],
)
def test_status_faults_raise_the_sdk_error(
    client: openai.OpenAI,
    fake: FakeUpstream,
    streaming: bool,
    spec: str,
    error: type[openai.APIStatusError],
    code: str | None,
) -> None:
    with pytest.raises(error) as excinfo:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=streaming, extra_headers=fault(spec)
        )
    assert excinfo.type is error
    assert excinfo.value.code == code
    assert excinfo.value.response.headers["x-request-id"].startswith("req_")
    assert fake.requests[0].status == excinfo.value.status_code
    assert fake.requests[0].fault == spec


@pytest.mark.parametrize(
    ("spec", "header", "value"),
    [
        pytest.param("status=429;retry_after=2", "retry-after", "2", id="seconds"),
        pytest.param("status=429;retry_after_ms=1500", "retry-after-ms", "1500", id="ms"),
        pytest.param("status=503;should_retry=false", "x-should-retry", "false", id="should-retry"),
    ],
)
def test_retry_headers_are_visible(client: openai.OpenAI, spec: str, header: str, value: str) -> None:
    with pytest.raises(openai.APIStatusError) as excinfo:
        stream(client, fault(spec))
    assert excinfo.value.response.headers[header] == value


def test_retry_after_http_date(client: openai.OpenAI) -> None:
    before = time.time()
    with pytest.raises(openai.RateLimitError) as excinfo:
        stream(client, fault("status=429;retry_after_date=30"))
    when = email.utils.parsedate_to_datetime(excinfo.value.response.headers["retry-after"]).timestamp()
    assert int(before) + 29 <= when <= time.time() + 31


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "non-stream"])
def test_reset_is_a_connection_error(client: openai.OpenAI, fake: FakeUpstream, streaming: bool) -> None:
    with pytest.raises(openai.APIConnectionError) as excinfo:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=streaming, extra_headers=fault("reset")
        )
    assert excinfo.type is openai.APIConnectionError
    assert fake.requests[0].status == 0


@pytest.mark.parametrize("after", [0, 3, CHUNKS])
def test_drop_after_n_is_a_connection_error_after_n_chunks(client: openai.OpenAI, after: int) -> None:
    got: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError) as excinfo:
        consume(stream(client, fault(f"drop_after={after}")), got)
    assert excinfo.type is openai.APIConnectionError
    assert len(texts(got)) == after
    assert all(c.choices[0].finish_reason is None for c in got)


@pytest.mark.parametrize("after", [0, 2])
def test_truncate_after_n_ends_silently(client: openai.OpenAI, fake: FakeUpstream, after: int) -> None:
    got = list(stream(client, fault(f"truncate_after={after}")))
    assert texts(got) == fake.expected_pieces(model=MODEL, messages=MESSAGES)[:after]
    assert all(c.choices[0].finish_reason is None for c in got)


def test_stall_first_with_short_timeout_is_a_timeout(client: openai.OpenAI, fake: FakeUpstream) -> None:
    got: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APITimeoutError):
        consume(
            client.with_options(timeout=0.3).chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, extra_headers=fault("stall_first=30")
            ),
            got,
        )
    assert got == []


def test_stall_after_then_continues(client: openai.OpenAI, fake: FakeUpstream) -> None:
    got = list(stream(client, fault("stall_after=2;stall=0.1")))
    assert texts(got) == fake.expected_pieces(model=MODEL, messages=MESSAGES)


@pytest.mark.parametrize(
    ("spec", "after", "code"),
    [
        pytest.param("error_after=0", 0, "server_error", id="before-content"),
        pytest.param(
            "error_after=2;error_code=rate_limit_exceeded", 2, "rate_limit_exceeded", id="rate-limit"
        ),
    ],
)
def test_error_event_raises_api_error(client: openai.OpenAI, spec: str, after: int, code: str) -> None:
    got: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as excinfo:
        consume(stream(client, fault(spec)), got)
    assert excinfo.type is openai.APIError
    assert len(texts(got)) == after
    assert isinstance(excinfo.value.body, dict)
    assert (excinfo.value.body["type"], excinfo.value.body["code"]) == ("server_error", code)
    assert excinfo.value.message == excinfo.value.body["message"]


def test_malformed_json_raises_a_decode_error(client: openai.OpenAI) -> None:
    got: list[ChatCompletionChunk] = []
    with pytest.raises(json.JSONDecodeError):
        consume(stream(client, fault("malformed_after=2")), got)
    assert len(texts(got)) == 2


def test_garbled_text_raises_a_unicode_error(client: openai.OpenAI) -> None:
    got: list[ChatCompletionChunk] = []
    with pytest.raises(UnicodeDecodeError):
        consume(stream(client, fault("garbled_after=2")), got)
    assert len(texts(got)) == 2


def test_keepalive_comments_are_ignored(client: openai.OpenAI, fake: FakeUpstream) -> None:
    got = list(stream(client, fault("keepalive=3", **{"x-fake-ttft": "0.04"})))
    assert texts(got) == fake.expected_pieces(model=MODEL, messages=MESSAGES)


def test_times_serves_n_faults_then_clean(client: openai.OpenAI, fake: FakeUpstream) -> None:
    headers = fault("status=429;times=2")
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            stream(client, headers)
    assert len(texts(list(stream(client, headers)))) == CHUNKS
    assert [r.status for r in fake.requests] == [429, 429, 200]
    assert [r.fault for r in fake.requests] == ["status=429;times=2"] * 2 + [""]


def test_sdk_retries_through_times(fake: FakeUpstream) -> None:
    with openai.OpenAI(base_url=fake.base_url, api_key="sk-x", max_retries=2) as retrying:
        got = list(stream(retrying, fault("status=429;retry_after_ms=1;times=2")))
    assert texts(got) == fake.expected_pieces(model=MODEL, messages=MESSAGES)
    assert [(r.retry_count, r.status) for r in fake.requests] == [("0", 429), ("1", 429), ("2", 200)]


def test_queue_is_consumed_in_order(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue("status=503", "drop_after=1", "")
    with pytest.raises(openai.InternalServerError):
        stream(client)
    with pytest.raises(openai.APIConnectionError):
        list(stream(client))
    assert len(texts(list(stream(client)))) == CHUNKS
    assert [(r.fault, r.fault_source) for r in fake.requests] == [
        ("status=503", "queue"),
        ("drop_after=1", "queue"),
        ("", "queue"),
    ]
    assert fake.queued == 0


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        pytest.param("drop_after=1", openai.APIConnectionError, id="drop"),
        pytest.param("truncate_after=1", openai.APIConnectionError, id="truncate"),
        pytest.param("error_after=1", openai.InternalServerError, id="error"),
        pytest.param("malformed_after=1", json.JSONDecodeError, id="malformed"),
    ],
)
def test_non_stream_body_faults(client: openai.OpenAI, spec: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=fault(spec))


def test_non_stream_stall_is_a_timeout(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers=fault("stall_first=30")
        )

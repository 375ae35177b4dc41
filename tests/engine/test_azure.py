"""Azure OpenAI through door 1, as `openai.AzureOpenAI` and `AsyncAzureOpenAI` call it.

The upstream is a loopback server that answers as Azure does: deployments in the path, the
`api-version` query, the key in an `api-key` header, a first chunk with no choices and an
empty id and model (the prompt's filter results), `content_filter_results` on the chunks,
and a 400 `content_filter` error. It replays the replies it is given, in order, and notes
every request.

Background responses, which that server does not keep, are read again from the fake upstream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest

import streamtap
from streamtap import CallFinished, CallStarted
from streamtap.fake import FakeUpstream

from . import loopback
from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, Recording, expected, read_async, read_sync

KEY = "azure-key-0123456789"
VERSION = "2024-10-21"
FILTERS = {
    name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
}
BASE = {"id": "chatcmpl-az1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-11-20"}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"content_filter_results": FILTERS, "delta": delta, "finish_reason": finish, "index": 0}
    return {**BASE, "choices": [choice], "usage": None}


def _stream(finish: str = "stop") -> bytes:
    prompt = {"prompt_index": 0, "content_filter_results": FILTERS}
    events = [
        {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": [prompt]},
        _chunk({"content": "", "role": "assistant"}),
        _chunk({"content": "Hello"}),
        _chunk({"content": " world"}),
        _chunk({}, finish),
        {**BASE, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


OK = (200, "text/event-stream", _stream())
BUSY = (503, "application/json", b'{"error": {"code": "server_error", "message": "busy"}}')
FILTERED_PROMPT = {
    "error": {
        "message": "The response was filtered due to the prompt triggering the content management policy.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {"hate": {"filtered": True}},
        },
    }
}


class Azure:
    """The loopback upstream: `replies` are served in order, then `OK`; `requests` are noted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.replies: list[tuple[int, str, bytes]] = []
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []


@pytest.fixture(scope="module")
def azure() -> Iterator[Azure]:
    state = Azure("")

    class Handler(loopback.Handler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, kind, payload = state.replies.pop(0) if state.replies else OK
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with loopback.serve(Handler) as url:
        state.url = url
        yield state


@pytest.fixture
def upstream(azure: Azure) -> Azure:
    azure.replies.clear()
    azure.requests.clear()
    return azure


def _run(is_async: bool, deployment: str | None, url: str, **kwargs: Any) -> Any:
    """Stream one call through an instrumented Azure client: its chunks' (text, finish), or the
    exception the SDK raised."""
    settings: dict[str, Any] = {"azure_endpoint": url, "api_version": VERSION, "api_key": KEY}
    if deployment is not None:
        settings["azure_deployment"] = deployment
    kwargs.setdefault("policy", TEST_POLICY)
    request: dict[str, Any] = {"model": "gpt-4o", "messages": CHAT_MESSAGES, "stream": True}

    def seen(chunk: Any) -> tuple[str | None, str | None]:
        return chunk.choices[0].delta.content, chunk.choices[0].finish_reason

    if not is_async:
        with streamtap.instrument(openai.AzureOpenAI(**settings), **kwargs) as client:
            try:
                return [seen(c) for c in client.chat.completions.create(**request) if c.choices]
            except openai.APIError as error:
                return error

    async def main() -> Any:
        async with streamtap.instrument(openai.AsyncAzureOpenAI(**settings), **kwargs) as client:
            try:
                return [seen(c) async for c in await client.chat.completions.create(**request) if c.choices]
            except openai.APIError as error:
                return error

    return anyio.run(main)


MODES = pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
DEPLOYMENTS = pytest.mark.parametrize(
    "deployment", [None, "prod-gpt4o"], ids=["model-as-deployment", "deployment"]
)
ANSWER = [("", None), ("Hello", None), (" world", None), (None, "stop")]


@MODES
@DEPLOYMENTS
def test_a_call_is_retried_and_recorded_with_the_answer_model(
    upstream: Azure, is_async: bool, deployment: str | None
) -> None:
    upstream.replies.append(BUSY)
    recording = Recording()
    assert _run(is_async, deployment, upstream.url, recorders=[recording]) == ANSWER
    path = f"/openai/deployments/{deployment or 'gpt-4o'}/chat/completions?api-version={VERSION}"
    assert [p for p, _, _ in upstream.requests] == [path, path]  # the query on every attempt
    assert all(h["api-key"] == KEY for _, h, _ in upstream.requests)
    (started,) = recording.of(CallStarted)
    assert (started.model, started.server_address) == ("gpt-4o", "127.0.0.1")
    finished = recording.finished
    assert (finished.outcome, finished.attempts, finished.input_tokens, finished.output_tokens) == (
        "ok",
        2,
        5,
        2,
    )
    # Not the empty id and model of Azure's first chunk (its prompt filter results).
    assert (finished.response_model, finished.response_id) == ("gpt-4o-2024-11-20", "chatcmpl-az1")


@MODES
@DEPLOYMENTS
def test_a_model_fallback_goes_to_that_deployment(
    upstream: Azure, is_async: bool, deployment: str | None
) -> None:
    upstream.replies.append(BUSY)
    recording = Recording()
    fallbacks = [streamtap.Fallback.model("backup-gpt4o-mini")]
    policy = streamtap.Policy(max_attempts=1)
    assert (
        _run(is_async, deployment, upstream.url, recorders=[recording], fallbacks=fallbacks, policy=policy)
        == ANSWER
    )
    served_path, _, served_body = upstream.requests[1]
    assert served_path == f"/openai/deployments/backup-gpt4o-mini/chat/completions?api-version={VERSION}"
    assert served_body["model"] == "backup-gpt4o-mini"
    assert (recording.finished.outcome, recording.finished.fallback) == ("ok", "model")


@MODES
def test_an_upstream_fallback_with_its_own_key_never_gets_the_azure_key(
    upstream: Azure, is_async: bool
) -> None:
    upstream.replies.append(BUSY)
    fallbacks = [streamtap.Fallback.upstream(upstream.url + "/v1", api_key="sk-other-provider")]
    policy = streamtap.Policy(max_attempts=1)
    assert _run(is_async, None, upstream.url, recorders=[], fallbacks=fallbacks, policy=policy) == ANSWER
    path, headers, _ = upstream.requests[1]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == "Bearer sk-other-provider"
    assert "api-key" not in headers


@MODES
def test_content_filtering_reaches_the_caller_as_without_streamtap(upstream: Azure, is_async: bool) -> None:
    fallbacks = [streamtap.Fallback.model("other")]
    upstream.replies.append((200, "text/event-stream", _stream(finish="content_filter")))
    assert _run(is_async, None, upstream.url, recorders=[], fallbacks=fallbacks)[-1] == (
        None,
        "content_filter",
    )
    upstream.replies.append((400, "application/json", json.dumps(FILTERED_PROMPT).encode()))
    recording = Recording()
    error = _run(is_async, None, upstream.url, recorders=[recording], fallbacks=fallbacks)
    assert isinstance(error, openai.BadRequestError)
    assert (error.code, error.body) == ("content_filter", FILTERED_PROMPT["error"])
    assert len(upstream.requests) == 2  # neither retried nor sent to a fallback
    assert isinstance(recording.finished, CallFinished)
    assert recording.finished.error_type == "bad_request"


def _background_client(client: str, is_async: bool, base_url: str, recording: Recording) -> Any:
    """An Azure client, or an OpenAI client that adds the query itself (`default_query`)."""
    settings: dict[str, Any] = {"base_url": base_url, "api_key": KEY}
    if client == "azure":
        made = (openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI)(**settings, api_version=VERSION)
    else:
        made = (openai.AsyncOpenAI if is_async else openai.OpenAI)(
            **settings, default_query={"api-version": VERSION}
        )
    return streamtap.instrument(made, policy=TEST_POLICY, recorders=[recording])


@MODES
@pytest.mark.parametrize("client", ["azure", "default-query"])
@pytest.mark.parametrize(
    ("fault", "again"),
    [("drop_after=0", "stream=true"), ("drop_after=3", r"stream=true&starting_after=\d+")],
    ids=["rejoined-before-commit", "resumed-after-commit"],
)
def test_a_background_response_is_read_again_with_the_api_version(
    fake: FakeUpstream, recording: Recording, client: str, is_async: bool, fault: str, again: str
) -> None:
    # Azure refuses any request without its api-version, the GET that reads the response again too.
    fake.enqueue(fault)
    instrumented = _background_client(client, is_async, fake.base_url, recording)
    received: list[str] = []
    if is_async:
        anyio.run(lambda: read_async(instrumented, "responses", received, background=True))
    else:
        with instrumented:
            read_sync(instrumented, "responses", received, background=True)
    assert received == expected(fake, "responses")
    created, read_again = fake.requests
    assert (created.method, created.query) == ("POST", f"api-version={VERSION}")
    assert (read_again.method, read_again.path) == ("GET", f"/v1/responses/{recording.finished.response_id}")
    assert re.fullmatch(f"api-version={VERSION}&{again}", read_again.query), read_again.query
    assert (recording.finished.outcome, recording.finished.attempts) == ("ok", 2)

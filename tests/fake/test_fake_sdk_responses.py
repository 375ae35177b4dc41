"""Responses API faults, background storage and resume, through the plain `openai` SDK."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.responses import (
    ResponseCreatedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseStreamEvent,
)

from streamtap.fake import FakeUpstream

from .conftest import CHUNKS

MODEL = "gpt-4o-mini"
INPUT = "Write a haiku about sockets"
# created, in_progress, output_item.added, content_part.added come before the first delta.
FIRST_DELTA = 4
TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * CHUNKS,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def fault(spec: str) -> dict[str, str]:
    return {"x-fake-fault": spec}


def deltas(events: list[ResponseStreamEvent]) -> list[str]:
    return [e.delta for e in events if e.type == "response.output_text.delta"]


def response_id(event: ResponseStreamEvent) -> str:
    assert isinstance(event, ResponseCreatedEvent)
    return event.response.id


def consume(stream: openai.Stream[ResponseStreamEvent], into: list[ResponseStreamEvent]) -> None:
    # Appends as it goes, so a test sees what arrived before the stream raised.
    into.extend(stream)


def create(
    client: openai.OpenAI, spec: str | None = None, **kwargs: object
) -> openai.Stream[ResponseStreamEvent]:
    headers = None if spec is None else fault(spec)
    return client.responses.create(model=MODEL, input=INPUT, stream=True, extra_headers=headers, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_clean_stream_has_every_event_in_order(client: openai.OpenAI, fake: FakeUpstream) -> None:
    events = list(create(client))
    assert [e.type for e in events] == TYPES
    assert [e.sequence_number for e in events] == list(range(len(TYPES)))
    assert deltas(events) == fake.expected_pieces(model=MODEL, input=INPUT)
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == fake.expected_text(model=MODEL, input=INPUT)
    assert completed.response.usage is not None
    assert completed.response.usage.output_tokens == CHUNKS
    assert completed.response.id.startswith("resp_")


def test_non_stream_response(client: openai.OpenAI, fake: FakeUpstream) -> None:
    response = client.responses.create(model=MODEL, input=INPUT)
    assert (response.status, response.output_text) == (
        "completed",
        fake.expected_text(model=MODEL, input=INPUT),
    )


def test_error_event_arrives_as_an_event(client: openai.OpenAI) -> None:
    events = list(create(client, "error_after=2;error_code=rate_limit_exceeded"))
    assert len(deltas(events)) == 2
    error = events[-1]
    assert isinstance(error, ResponseErrorEvent)
    assert (error.code, error.sequence_number) == ("rate_limit_exceeded", FIRST_DELTA + 2)
    assert error.message


def test_failed_event(client: openai.OpenAI) -> None:
    events = list(create(client, "error_after=1;error_kind=failed"))
    assert len(deltas(events)) == 1
    failed = events[-1]
    assert isinstance(failed, ResponseFailedEvent)
    assert failed.sequence_number == FIRST_DELTA + 1
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    assert failed.response.error.code == "server_error"


def test_drop_after_is_a_connection_error(client: openai.OpenAI) -> None:
    got: list[ResponseStreamEvent] = []
    with pytest.raises(openai.APIConnectionError):
        consume(create(client, "drop_after=2"), got)
    assert len(deltas(got)) == 2


def test_truncate_after_ends_without_completed(client: openai.OpenAI) -> None:
    events = list(create(client, "truncate_after=3"))
    assert [e.type for e in events] == TYPES[: FIRST_DELTA + 3]


def test_malformed_json_raises_a_decode_error(client: openai.OpenAI) -> None:
    got: list[ResponseStreamEvent] = []
    with pytest.raises(json.JSONDecodeError):
        consume(create(client, "malformed_after=1"), got)
    assert len(deltas(got)) == 1


def test_garbled_text_raises_a_unicode_error(client: openai.OpenAI) -> None:
    got: list[ResponseStreamEvent] = []
    with pytest.raises(UnicodeDecodeError):
        consume(create(client, "garbled_after=1"), got)
    assert len(deltas(got)) == 1


def test_status_fault(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as excinfo:
        create(client, "status=429;retry_after=1")
    assert excinfo.value.response.headers["retry-after"] == "1"


def test_resume_after_a_drop_yields_exactly_the_rest(client: openai.OpenAI, fake: FakeUpstream) -> None:
    got: list[ResponseStreamEvent] = []
    with pytest.raises(openai.APIConnectionError):
        consume(create(client, "drop_after=2", background=True), got)
    last = got[-1].sequence_number
    assert last == FIRST_DELTA + 1
    rid = response_id(got[0])
    rest = list(client.responses.retrieve(rid, stream=True, starting_after=last))
    assert [e.type for e in rest] == TYPES[last + 1 :]
    assert [e.sequence_number for e in rest] == list(range(last + 1, len(TYPES)))
    assert "".join(deltas(got) + deltas(rest)) == fake.expected_text(model=MODEL, input=INPUT)
    retrieve = fake.requests[-1]
    assert (retrieve.method, retrieve.path, retrieve.query, retrieve.fault, retrieve.stream) == (
        "GET",
        f"/v1/responses/{rid}",
        f"starting_after={last}&stream=true",
        "",
        True,
    )


@pytest.mark.parametrize("starting_after", [0, 9, len(TYPES) - 1])
def test_replay_starts_after_the_given_sequence_number(client: openai.OpenAI, starting_after: int) -> None:
    rid = response_id(next(iter(create(client, background=True))))
    replay = list(client.responses.retrieve(rid, stream=True, starting_after=starting_after))
    assert [e.sequence_number for e in replay] == list(range(starting_after + 1, len(TYPES)))


def test_retrieve_without_stream_returns_the_stored_response(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    created = client.responses.create(model=MODEL, input=INPUT, background=True)
    stored = client.responses.retrieve(created.id)
    assert (stored.id, stored.status, stored.output_text) == (
        created.id,
        "completed",
        fake.expected_text(model=MODEL, input=INPUT),
    )


def test_retrieve_honours_header_faults_only(client: openai.OpenAI, fake: FakeUpstream) -> None:
    first = list(create(client, background=True))
    fake.enqueue("status=503")  # the queue is for generation requests, not retrievals
    replay = client.responses.retrieve(
        response_id(first[0]), stream=True, starting_after=0, extra_headers=fault("truncate_after=1")
    )
    assert [e.type for e in replay] == TYPES[1 : FIRST_DELTA + 1]
    assert fake.queued == 1


def test_retrieve_unknown_or_unstored_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing", stream=True, starting_after=0)
    not_background = list(create(client))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response_id(not_background[0]))

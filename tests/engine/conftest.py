"""Fixtures for engine tests over real loopback sockets against the fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import openai
import pytest

import streamtap
from streamtap.fake import FakeConfig, FakeUpstream

from .support import Recording

# Backoff fast enough for tests. The timeouts are long: a CI machine can stop a process for
# most of a second (a VM's stolen time), and a timeout that trips then adds an attempt, which
# fails a case's exact attempt count. Only cases that stall the upstream need short ones.
TEST_POLICY = streamtap.Policy(
    max_attempts=3,
    backoff_base=0.001,
    backoff_cap=0.01,
    first_token_timeout=10,
    idle_timeout=10,
)
# For the cases that stall (`Case.stalls`): the fake's stalls last 3 s, twice these.
STALL_POLICY = replace(TEST_POLICY, first_token_timeout=1.5, idle_timeout=1.5)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(chunks=6)) as upstream:
        yield upstream


@pytest.fixture
def recording(fake: FakeUpstream) -> Recording:
    fake.clear()
    return Recording()


@pytest.fixture
def make_client(fake: FakeUpstream, recording: Recording) -> Iterator[Any]:
    made: list[Any] = []

    def make(is_async: bool, **kwargs: Any) -> Any:
        kwargs.setdefault("policy", TEST_POLICY)
        kwargs.setdefault("recorders", [recording])
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        client = streamtap.instrument(
            cls(base_url=fake.base_url, api_key="sk-test-secret-key-0000"), **kwargs
        )
        if not is_async:  # an async client is closed by its test, inside its event loop
            made.append(client)
        return client

    yield make
    for client in made:
        client.close()

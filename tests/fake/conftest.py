"""One fake upstream per test session (cleared before each test) and plain SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from streamtap.fake import FakeConfig, FakeUpstream

CHUNKS = 6
API_KEY = "sk-fake-test-secret-0123456789"


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(chunks=CHUNKS)) as fake:
        yield fake


@pytest.fixture
def fake(upstream: FakeUpstream) -> FakeUpstream:
    upstream.clear()
    return upstream


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def aclient(fake: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk

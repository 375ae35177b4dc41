"""examples/sync_chat.py and examples/async_responses.py, run as scripts against the fake upstream."""

from __future__ import annotations

import sys

from streamtap.fake import FakeUpstream

from .conftest import EXAMPLES, example_env, run

PROMPT = "Say hello."
MESSAGES = [{"role": "user", "content": PROMPT}]


def test_sync_chat_prints_the_whole_answer_through_a_retried_503(fake: FakeUpstream) -> None:
    fake.enqueue("status=503", "")
    env = example_env(fake.base_url, METRICS_PORT="0")

    result = run([sys.executable, str(EXAMPLES / "sync_chat.py"), PROMPT], env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        fake.expected_text(model="gpt-4o", messages=MESSAGES),
        'streamtap_requests_total{api="chat_completions",model="gpt-4o",outcome="ok"} 1.0',
        'streamtap_retries_total{api="chat_completions",model="gpt-4o",reason="server_error"} 1.0',
    ]
    assert [r.status for r in fake.requests] == [503, 200]


def test_sync_chat_reports_a_stream_broken_after_the_first_token(fake: FakeUpstream) -> None:
    fake.enqueue("drop_after=5")
    env = example_env(fake.base_url, METRICS_PORT="0")

    result = run([sys.executable, str(EXAMPLES / "sync_chat.py"), PROMPT], env)

    delivered = "".join(fake.expected_pieces(model="gpt-4o", messages=MESSAGES)[:5])
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        delivered,
        f"[interrupted: stream_interrupted after 1 attempt(s); {len(delivered)} characters were delivered]",
        'streamtap_requests_total{api="chat_completions",model="gpt-4o",outcome="error"} 1.0',
    ]
    assert len(fake.requests) == 1  # after commit nothing is retried: no duplicated text


def test_async_responses_serves_every_concurrent_call_despite_two_faults(fake: FakeUpstream) -> None:
    questions = ["Name a river.", "Name a mountain.", "Name a harbour."]
    fake.enqueue("status=503", "reset")  # two of the first requests fail, whichever they are

    result = run([sys.executable, str(EXAMPLES / "async_responses.py"), *questions], fake_env(fake))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{q} -> {fake.expected_text(model='gpt-4o-mini', input=q)}" for q in questions
    ]
    assert len(fake.requests) == 5


def test_async_responses_reports_an_interrupted_call_and_keeps_the_others(fake: FakeUpstream) -> None:
    question = "Name a river."
    fake.enqueue("truncate_after=3")

    result = run([sys.executable, str(EXAMPLES / "async_responses.py"), question], fake_env(fake))

    delivered = "".join(fake.expected_pieces(model="gpt-4o-mini", input=question)[:3])
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [f"{question} -> [interrupted: stream_truncated] {delivered}"]


def fake_env(fake: FakeUpstream) -> dict[str, str]:
    return example_env(fake.base_url)

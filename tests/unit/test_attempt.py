"""StreamAttempt: buffering until commit, release order, failures, deadlines and counters."""

from __future__ import annotations

import pytest

from streamtap._attempt import StreamAttempt
from streamtap._chat import CHAT
from streamtap._dialect import Dialect
from streamtap._errors import Failure
from streamtap._responses import RESPONSES
from streamtap._sse import DEFAULT_MAX_FRAME

ROLE = b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'


def content(text: str) -> bytes:
    return b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


FINISH = b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
USAGE = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n\n'
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
SERVER_ERROR = b'data: {"error":{"message":"oops","type":"server_error","code":null}}\n\n'
BAD_REQUEST_ERROR = b'data: {"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}\n\n'


def make(
    *,
    dialect: Dialect = CHAT,
    first_token_timeout: float | None = 5.0,
    idle_timeout: float | None = 2.0,
    deadline: float | None = None,
    committed: bool = False,
    replayed_through: int | None = None,
    verify: bool = False,
    choices: int | None = None,
) -> StreamAttempt:
    return StreamAttempt(
        dialect,
        sent_at=0.0,
        headers_at=0.5,
        first_token_timeout=first_token_timeout,
        idle_timeout=idle_timeout,
        deadline=deadline,
        committed=committed,
        replayed_through=replayed_through,
        verify=verify,
        choices=choices,
    )


# -- commit and release -------------------------------------------------------------------------


def test_preamble_is_held_until_the_first_content_then_released_first() -> None:
    attempt = make()
    assert attempt.feed(ROLE, 0.6) == b""
    assert attempt.feed(KEEPALIVE, 0.7) == b""  # keep-alives before commit are dropped
    assert (attempt.committed, attempt.phase, attempt.first_content_at) == (False, "first_token", None)
    assert attempt.feed(content("Hi"), 0.9) == ROLE + content("Hi")
    assert (attempt.committed, attempt.phase, attempt.first_content_at) == (True, "streaming", 0.9)
    assert attempt.chunks == 1
    assert attempt.feed(content(" there"), 1.0) == content(" there")
    assert attempt.feed(KEEPALIVE, 1.1) == KEEPALIVE  # after commit the caller sees them
    assert attempt.feed(FINISH + USAGE + DONE, 1.2) == FINISH + USAGE + DONE
    assert attempt.terminal is True
    attempt.end()
    assert attempt.failure is None
    assert attempt.chunks == 2
    facts = attempt.facts
    assert (facts.response_id, facts.response_model) == ("c1", "m")
    assert (facts.input_tokens, facts.output_tokens, facts.finish_reasons) == (5, 7, ["stop"])


def test_everything_in_one_read_keeps_order() -> None:
    attempt = make()
    stream = ROLE + KEEPALIVE + content("a") + KEEPALIVE + content("b") + FINISH + DONE
    # The keep-alive before commit is dropped; the one after it is forwarded in place.
    assert attempt.feed(stream, 1.0) == ROLE + content("a") + KEEPALIVE + content("b") + FINISH + DONE
    assert (attempt.chunks, attempt.terminal, attempt.first_content_at) == (2, True, 1.0)


def test_frames_split_across_reads() -> None:
    attempt = make()
    stream = ROLE + content("a") + DONE
    out = b"".join(attempt.feed(stream[i : i + 7], 1.0) for i in range(0, len(stream), 7))
    assert out == stream
    attempt.end()
    assert attempt.failure is None


def test_terminal_before_content_commits_an_empty_answer() -> None:
    attempt = make()
    assert attempt.feed(ROLE, 0.6) == b""
    assert attempt.feed(FINISH + DONE, 0.8) == ROLE + FINISH + DONE
    assert (attempt.committed, attempt.terminal, attempt.chunks) == (True, True, 0)
    attempt.end()
    assert attempt.failure is None


def test_resumed_stream_starts_committed() -> None:
    attempt = make(committed=True)
    assert attempt.phase == "streaming"
    assert attempt.feed(content("x") + DONE, 1.0) == content("x") + DONE
    assert attempt.chunks == 1


def test_responses_stream() -> None:
    created = b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","model":"m"}}\n\n'
    delta = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,"delta":"Hi"}\n\n'
    completed = b'event: response.completed\ndata: {"type":"response.completed","sequence_number":2,"response":{"id":"resp_1","usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
    attempt = StreamAttempt(
        RESPONSES, sent_at=0.0, headers_at=0.1, first_token_timeout=None, idle_timeout=None, deadline=None
    )
    assert attempt.feed(created, 0.2) == b""
    assert attempt.facts.response_id == "resp_1"
    assert attempt.feed(delta, 0.3) == created + delta
    assert attempt.feed(completed, 0.4) == completed
    attempt.end()
    assert attempt.failure is None
    assert (attempt.facts.input_tokens, attempt.facts.output_tokens) == (3, 1)


# -- failures ---------------------------------------------------------------------------------


def test_eof_before_content_is_truncation_in_first_token() -> None:
    attempt = make()
    attempt.feed(ROLE, 0.6)
    attempt.end()
    assert attempt.failure == Failure(
        "stream_truncated", "first_token", True, "the stream ended before its first content"
    )


def test_eof_without_terminal_after_commit_is_truncation_in_streaming() -> None:
    attempt = make()
    attempt.feed(ROLE + content("a"), 0.6)
    attempt.end()
    assert attempt.failure == Failure(
        "stream_truncated", "streaming", False, "the stream ended without its terminal event"
    )


SECOND_FINISH = FINISH.replace(b'"index":0', b'"index":1')
EMPTY_FINISH = FINISH.replace(b'"finish_reason":"stop"', b'"finish_reason":""')


@pytest.mark.parametrize(
    ("choices", "frames", "whole"),
    [
        (1, ROLE + content("a") + FINISH, True),
        (1, ROLE + content("a") + FINISH + USAGE, True),
        (1, ROLE + content("a"), False),
        (2, ROLE + content("a") + FINISH, False),  # n=2: the second choice never finished
        (2, ROLE + content("a") + FINISH + SECOND_FINISH, True),
        (None, ROLE + content("a") + FINISH, False),  # responses: its terminal events only
        (1, ROLE + FINISH, False),  # nothing delivered: retried as any truncation before commit
        (1, ROLE + content("a") + EMPTY_FINISH, False),  # "" is no finish reason
        (2, ROLE + content("a") + FINISH + FINISH, False),  # the first choice, twice
    ],
    ids=[
        "finish",
        "finish-usage",
        "no-finish",
        "n2-one-finish",
        "n2-both",
        "no-choices",
        "no-content",
        "empty-finish",
        "n2-one-finish-twice",
    ],
)
def test_eof_without_done_after_every_choice_finished_is_a_whole_answer(
    choices: int | None, frames: bytes, whole: bool
) -> None:
    """Some OpenAI-compatible servers never send `[DONE]`; the finish reasons say the answer is whole."""
    attempt = make(choices=choices)
    attempt.feed(frames, 0.6)
    attempt.end()
    assert (attempt.failure is None, attempt.terminal) == (whole, whole)
    if not whole:
        assert attempt.failure is not None and attempt.failure.error_type == "stream_truncated"


@pytest.mark.parametrize("cut", [b"data: [DONE]\n", b"data: [DONE]", b"data: [DONE]\r\n"])
def test_a_done_the_body_ends_inside_after_every_choice_finished_is_a_whole_answer(cut: bytes) -> None:
    """`data: [DONE]` without the blank line that dispatches it: the SDK never sees it (nor the
    specification's decoder), and the finish reasons say the answer is whole."""
    attempt = make(choices=1)
    attempt.feed(ROLE + content("a") + FINISH + cut, 0.6)
    attempt.end()
    assert (attempt.failure, attempt.terminal) == (None, True)


def test_a_done_the_body_ends_inside_before_every_choice_finished_is_truncated() -> None:
    attempt = make(choices=1)
    attempt.feed(ROLE + content("a") + b"data: [DONE]\n", 0.6)
    attempt.end()
    assert attempt.failure is not None and attempt.failure.message == "the stream ended inside an event"


@pytest.mark.parametrize(
    ("before", "phase", "retryable"),
    [(ROLE, "first_token", True), (ROLE + content("a"), "streaming", False)],
    ids=["before_commit", "after_commit"],
)
def test_eof_inside_a_frame(before: bytes, phase: str, retryable: bool) -> None:
    attempt = make()
    attempt.feed(before + b'data: {"choices":[{"delta":{"content":"b', 0.6)
    attempt.end()
    assert attempt.failure == Failure(
        "stream_truncated",
        phase,  # type: ignore[arg-type]
        retryable,
        "the stream ended inside an event",
    )


def test_eof_after_terminal_with_trailing_blank_lines_is_fine() -> None:
    attempt = make()
    attempt.feed(content("a") + DONE + b"\n\n", 0.6)
    attempt.end()
    assert attempt.failure is None


def test_error_event_before_commit_retryable_by_code() -> None:
    attempt = make()
    assert attempt.feed(ROLE + SERVER_ERROR + content("never"), 0.6) == b""
    assert attempt.failure == Failure(
        "upstream_error_event", "first_token", True, "upstream error event server_error: oops"
    )
    assert attempt.failure.body == {"message": "oops", "type": "server_error", "code": None}
    assert attempt.committed is False
    attempt.end()  # a later clean EOF does not replace the failure
    assert attempt.failure.error_type == "upstream_error_event"

    other = make()
    other.feed(BAD_REQUEST_ERROR, 0.6)
    assert other.failure == Failure(
        "upstream_error_event",
        "first_token",
        False,
        "upstream error event context_length_exceeded: too long",
        counts_for_breaker=False,  # the request's fault, not the upstream's
    )


def test_error_event_after_commit_releases_what_came_before_it() -> None:
    attempt = make()
    out = attempt.feed(ROLE + content("a") + content("b") + SERVER_ERROR + content("c"), 0.6)
    assert out == ROLE + content("a") + content("b")
    assert attempt.failure == Failure(
        "upstream_error_event", "streaming", False, "upstream error event server_error: oops"
    )
    assert attempt.chunks == 2


@pytest.mark.parametrize(
    ("before", "phase", "retryable"),
    [(ROLE, "first_token", True), (ROLE + content("a"), "streaming", False)],
    ids=["before_commit", "after_commit"],
)
def test_bad_json_is_bad_response(before: bytes, phase: str, retryable: bool) -> None:
    attempt = make()
    attempt.feed(before + b'data: {"choices":[\n\n', 0.6)
    failure = attempt.failure
    assert failure is not None
    assert (failure.error_type, failure.phase, failure.retryable) == ("bad_response", phase, retryable)
    assert failure.message.startswith("an event is not valid JSON (")


def test_oversize_event_is_bad_response() -> None:
    attempt = make()
    assert attempt.feed(b"data: " + b"x" * DEFAULT_MAX_FRAME, 0.6) == b""
    assert attempt.failure == Failure(
        "bad_response", "first_token", True, f"an SSE event exceeds {DEFAULT_MAX_FRAME} bytes"
    )


def test_broke_keeps_the_first_failure() -> None:
    attempt = make()
    first = Failure("stream_interrupted", "first_token", True, "reset")
    attempt.broke(first)
    attempt.broke(Failure("stall", "first_token", True, "later"))
    attempt.end()
    assert attempt.failure is first


# -- deadlines ---------------------------------------------------------------------------------


def test_read_timeout_follows_the_nearest_deadline() -> None:
    # sent 0.0, headers 0.5; first token by 5.0, idle 2.0, call deadline 20.0
    attempt = make(deadline=20.0)
    assert attempt.read_timeout(0.5) == pytest.approx(2.0)  # idle: 0.5 + 2.0
    attempt.feed(ROLE, 2.0)  # progress moves the idle deadline to 4.0
    assert attempt.read_timeout(2.0) == pytest.approx(2.0)
    attempt.feed(ROLE, 3.5)  # idle 5.5 vs first token 5.0
    assert attempt.read_timeout(3.5) == pytest.approx(1.5)
    attempt.feed(content("a"), 4.0)  # committed: first token no longer applies
    assert attempt.read_timeout(4.0) == pytest.approx(2.0)
    attempt.feed(content("b"), 19.0)
    assert attempt.read_timeout(19.0) == pytest.approx(1.0)  # the call deadline
    assert attempt.read_timeout(25.0) == 0.0


def test_read_timeout_none_when_nothing_limits() -> None:
    attempt = make(first_token_timeout=None, idle_timeout=None)
    assert attempt.read_timeout(100.0) is None


def test_timed_out_names_the_deadline_that_ran_out() -> None:
    attempt = make(deadline=20.0)
    assert attempt.timed_out(5.0) == Failure(
        "first_token_timeout", "first_token", True, "no content within first_token_timeout"
    )
    assert attempt.timed_out(2.5) == Failure("stall", "first_token", True, "no event within idle_timeout")
    # No deadline of streamtap's ran out: the caller's own read timeout did, which is no fault
    # of the upstream's (the breaker every caller shares does not count it).
    caller = "no bytes within the caller's read timeout"
    assert attempt.timed_out(1.0) == Failure("timeout", "first_token", True, caller, counts_for_breaker=False)
    attempt.feed(content("a"), 3.0)
    assert attempt.timed_out(4.0) == Failure("timeout", "streaming", False, caller, counts_for_breaker=False)
    assert attempt.timed_out(5.0).counts_for_breaker is True
    assert attempt.timed_out(5.0) == Failure("stall", "streaming", False, "no event within idle_timeout")
    # The upstream was answering: the call's own time ran out, which is no fault of the upstream's.
    assert attempt.timed_out(20.0) == Failure(
        "timeout", "streaming", False, "the call's total_timeout ran out", counts_for_breaker=False
    )


def test_total_timeout_before_first_token() -> None:
    attempt = make(first_token_timeout=30.0, idle_timeout=None, deadline=3.0)
    assert attempt.read_timeout(1.0) == pytest.approx(2.0)
    # No content within all the time the call had: the upstream's, as a first-token timeout is.
    assert attempt.timed_out(3.0) == Failure(
        "timeout", "first_token", True, "the call's total_timeout ran out"
    )
    assert attempt.timed_out(3.0).counts_for_breaker


def test_keepalives_are_not_progress_stall_fires() -> None:
    attempt = make(first_token_timeout=None)
    attempt.feed(ROLE + content("a"), 1.0)
    for now in (1.5, 2.0, 2.5, 3.0):
        assert attempt.feed(KEEPALIVE, now) == KEEPALIVE
        assert attempt.failure is None
    assert attempt.read_timeout(3.0) == pytest.approx(0.0)  # idle deadline stayed at 1.0 + 2.0
    assert attempt.feed(KEEPALIVE, 3.1) == KEEPALIVE
    assert attempt.failure == Failure("stall", "streaming", False, "no event within idle_timeout")


def test_keepalives_before_commit_hit_first_token_timeout() -> None:
    attempt = make(idle_timeout=None)
    for now in (1.0, 2.0, 3.0, 4.0):
        attempt.feed(KEEPALIVE, now)
    assert attempt.failure is None
    attempt.feed(KEEPALIVE, 5.0)
    assert attempt.failure == Failure(
        "first_token_timeout", "first_token", True, "no content within first_token_timeout"
    )


def test_keepalives_before_commit_stall_first_when_idle_is_shorter() -> None:
    attempt = make()
    attempt.feed(KEEPALIVE, 2.0)
    assert attempt.failure is None
    attempt.feed(b": ping", 2.6)  # a partial read is checked too
    assert attempt.failure == Failure("stall", "first_token", True, "no event within idle_timeout")


def test_content_after_the_call_deadline_is_released_then_fails() -> None:
    attempt = make(first_token_timeout=None, idle_timeout=None, deadline=10.0)
    attempt.feed(content("a"), 1.0)
    assert attempt.feed(content("b"), 10.0) == content("b")
    assert attempt.failure == Failure(
        "timeout", "streaming", False, "the call's total_timeout ran out", counts_for_breaker=False
    )


# -- counters ---------------------------------------------------------------------------------


def test_max_gap_and_chunks() -> None:
    attempt = make(first_token_timeout=None, idle_timeout=None)
    attempt.feed(ROLE, 0.6)
    attempt.feed(content("a"), 1.0)
    assert (attempt.chunks, attempt.max_gap) == (1, 0.0)
    attempt.feed(content("b"), 1.5)
    assert attempt.max_gap == pytest.approx(0.5)
    attempt.feed(ROLE, 3.0)  # a non-content event (a second choice's role chunk): not a chunk
    attempt.feed(KEEPALIVE, 3.5)
    attempt.feed(content("c") + content("d"), 4.0)  # two chunks in one read: one gap of 2.5
    attempt.feed(content("e"), 4.2)
    attempt.feed(FINISH + DONE, 9.0)  # the finish chunk is not content: no gap
    assert attempt.chunks == 5
    assert attempt.max_gap == pytest.approx(2.5)


def test_max_gap_after_commit_only() -> None:
    # The wait for the first token is time_to_first_token, not a gap between chunks.
    attempt = make(first_token_timeout=None, idle_timeout=None)
    attempt.feed(content("a"), 4.0)
    attempt.feed(content("b"), 4.1)
    assert attempt.max_gap == pytest.approx(0.1)


def _streaming() -> StreamAttempt:
    """A committed attempt with two content chunks, the last at 1.5: where stamps come."""
    attempt = make(idle_timeout=2.0)
    attempt.feed(content("a"), 1.0)
    attempt.feed(content("b"), 1.5)
    return attempt


def test_stamps_count_as_chunks_and_gaps_when_the_counters_are_read() -> None:
    attempt = _streaming()
    attempt.stamps.extend([1.6, 4.6, 4.7])  # what the drivers append for reads that fit
    assert attempt.chunks == 5
    assert attempt.max_gap == pytest.approx(3.0)  # 1.6 -> 4.6
    assert attempt.stamps == []
    attempt.stamps.append(9.7)  # the gap from the last counted chunk, 4.7
    assert (attempt.max_gap, attempt.chunks) == (pytest.approx(5.0), 6)


def test_stamps_are_counted_before_feed_reads_the_counters() -> None:
    attempt = _streaming()
    attempt.stamps.extend([1.7, 1.8])
    attempt.feed(content("d") + content("e"), 6.8)  # one read, two chunks: one gap of 5.0
    assert attempt.stamps == []
    assert (attempt.chunks, attempt.max_gap) == (6, pytest.approx(5.0))


def test_the_idle_deadline_runs_from_the_last_stamp() -> None:
    attempt = _streaming()
    assert attempt.read_timeout(2.0) == pytest.approx(1.5)  # 1.5 + idle 2.0
    attempt.stamps.append(3.0)
    assert attempt.read_timeout(4.0) == pytest.approx(1.0)  # 3.0 + idle 2.0
    assert attempt.stamps == [3.0]  # read on every socket read: nothing counted there
    assert attempt.feed(KEEPALIVE, 4.5) == KEEPALIVE  # 1.5 s since the stamp: within idle
    assert attempt.failure is None
    attempt.feed(KEEPALIVE, 5.1)  # 2.1 s since the stamp: a stall
    assert attempt.failure == Failure("stall", "streaming", False, "no event within idle_timeout")


def test_a_resumed_attempt_continues_the_counters_and_the_gap_of_the_one_it_resumes() -> None:
    """The stall a resume repaired is a gap the caller felt: from the last content before it
    to the first after it, across the two attempts."""
    broken = _streaming()
    broken.stamps.append(2.0)  # its last content, on the lane, not yet counted
    resumed = make(idle_timeout=None, committed=True)  # committed, as a resume is
    resumed.continues(broken)
    assert (resumed.chunks, resumed.max_gap) == (3, pytest.approx(0.5))
    assert resumed.facts is broken.facts
    resumed.feed(content("c"), 5.2)
    assert (resumed.chunks, resumed.max_gap) == (4, pytest.approx(3.2))  # 2.0 -> 5.2


def _responses_event(kind: str, number: int, extra: str = "") -> bytes:
    return f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{number}{extra}}}\n\n'.encode()


def _delta(number: int) -> bytes:
    item = f',"item_id":"i","output_index":0,"content_index":0,"delta":"t{number}"'
    return _responses_event("response.output_text.delta", number, item)


def _resumed(replayed_through: int, idle_timeout: float | None = None, verify: bool = False) -> StreamAttempt:
    """A resumed responses stream whose caller has the events up to `replayed_through`."""
    return make(
        dialect=RESPONSES,
        first_token_timeout=None,
        idle_timeout=idle_timeout,
        committed=True,
        replayed_through=replayed_through,
        verify=verify,
    )


@pytest.mark.parametrize("verify", [False, True])
def test_a_resume_drops_the_events_a_replaying_server_sends_again(verify: bool) -> None:
    """A resume after event 2 from a server that ignores starting_after: events 0..2 are the
    caller's already; the first newer one ends the check and the lane opens again."""
    created = _responses_event("response.created", 0, ',"response":{"id":"resp_1","model":"m"}')
    resumed = _resumed(2, verify=verify)
    assert resumed.feed(created + _delta(1), 0.2) == b""  # one read, both seen before
    assert resumed.feed(_delta(2) + _delta(3) + _delta(4), 0.3) == _delta(3) + _delta(4)
    assert resumed.feed(_delta(5), 0.4) == _delta(5)
    assert resumed.lane is not None  # the check is over: reads are passed on the lane again
    assert resumed.chunks == 3


def test_a_resume_that_the_server_honours_passes_every_event() -> None:
    resumed = _resumed(2)
    assert resumed.feed(_delta(3), 0.2) == _delta(3)
    assert resumed.chunks == 1


def test_a_long_replay_is_progress_not_a_stall() -> None:
    """Events replayed for longer than idle_timeout keep the stream alive: they are dropped,
    not silence."""
    resumed = _resumed(50, idle_timeout=1.0)
    for n in range(1, 30):
        assert resumed.feed(_delta(n), 0.1 + n * 0.4) == b""  # 11.6 s of replay, 0.4 s apart
    assert resumed.failure is None

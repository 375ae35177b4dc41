"""One upstream stream, read frame by frame: buffered until commit, then released. Pure.

The drivers feed it the bytes they read and the time they read them; it answers with the
bytes the caller may see now, and sets `failure` when the attempt must stop. Clock reads
happen once per network read, never per frame.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable
from typing import Final

from ._dialect import (
    BAD,
    COMMENT,
    CONTENT,
    ERROR,
    PREAMBLE,
    TERMINAL,
    UNKNOWN,
    Dialect,
    Shape,
    StreamFacts,
    decodes,
)
from ._errors import Failure, classify_error_event, failure, unframed
from ._resume import sequence_number
from ._sse import FrameBuffer, FrameTooLarge
from ._taxonomy import Phase

# How long after the last read a read must start for the time between to be the caller's (or
# the event loop's), not this attempt's own work between two reads.
_AWAY: Final = 0.005


class StreamAttempt:
    """The reading state of one streamed attempt.

    Args:
        dialect: how to read the frames.
        sent_at: monotonic time the request was sent.
        headers_at: monotonic time the response headers arrived.
        first_token_timeout: seconds from sending to the first content, or None.
        idle_timeout: the largest gap between events after the headers, or None.
        deadline: the call's absolute deadline (monotonic), or None.
        committed: True for a resumed stream, whose content the caller already awaits.
        replayed_through: for a resumed stream, the sequence number of the last event the
            caller has; events up to it that the upstream sends again are dropped.
        verify: pass on no event unparsed that does not decode (`decodes`), for a caller
            that relays events to a client rather than parsing them (the proxy).
        choices: for chat, how many choices the request asked for (`n`): a committed stream
            that ends cleanly after that many finish reasons is complete without `[DONE]`,
            which some OpenAI-compatible servers never send. None for responses.
    """

    __slots__ = (
        "_buffer",
        "_choices",
        "_chunks",
        "_dialect",
        "_ftt_deadline",
        "_glance",
        "_held",
        "_idle",
        "_idle_from",
        "_last_content_at",
        "_last_event_at",
        "_last_read_at",
        "_learn",
        "_look",
        "_max_gap",
        "_seen_through",
        "_shape",
        "_verify",
        "committed",
        "deadline",
        "facts",
        "failure",
        "first_content_at",
        "lane",
        "sent_at",
        "stamps",
        "terminal",
    )

    def __init__(
        self,
        dialect: Dialect,
        *,
        sent_at: float,
        headers_at: float,
        first_token_timeout: float | None,
        idle_timeout: float | None,
        deadline: float | None,
        committed: bool = False,
        replayed_through: int | None = None,
        verify: bool = False,
        choices: int | None = None,
    ) -> None:
        self._dialect = dialect
        self._choices = choices
        self._buffer = FrameBuffer()
        self._held: list[bytes] = []
        # How a committed frame is told without a parse: the dialect's glance, which a
        # relaying caller (verify) also needs to decode.
        self._verify = verify
        self._look: Callable[[bytes], int] = _decoding(dialect.glance) if verify else dialect.glance
        # A resumed stream's events up to this number reached the caller before: a server
        # that replays them (ignoring `starting_after`) has them dropped, until one is newer.
        self._seen_through = replayed_through
        # `_look` while the hot path is open: committed, nothing held back, nothing replayed.
        self._glance: Callable[[bytes], int] | None = (
            self._look if committed and replayed_through is None else None
        )
        # The shape of this stream's content frames, learnt from the first one glance knew;
        # `lane` is that shape while the hot path is open, for the drivers (see `stamps`).
        self._shape: Shape | None = None
        self._learn = True
        self.lane: Shape | None = None
        self._idle = idle_timeout
        # Where the idle clock starts again when it ran out while no read waited (`read_timeout`).
        self._idle_from = -math.inf
        self._ftt_deadline = sent_at + first_token_timeout if first_token_timeout is not None else math.inf
        self._last_event_at = headers_at
        self._last_read_at = headers_at  # when feed last took bytes (lane reads: `stamps`)
        self._last_content_at = headers_at
        self.sent_at = sent_at
        self.deadline = deadline if deadline is not None else math.inf
        self.committed = committed
        self.terminal = False
        self.failure: Failure | None = None
        self.first_content_at: float | None = None
        self._max_gap = 0.0
        self._chunks = 0
        # When the driver passed on each read that fit `lane`, not yet counted: the hot path
        # appends to it (`stamps.append`, a C call; a method here would be a Python one, which
        # costs several times more between the SDK's reads), and `_count_stamps` counts them
        # before anything reads the counters.
        self.stamps: list[float] = []
        self.facts = StreamFacts()

    @property
    def phase(self) -> Phase:
        return "streaming" if self.committed else "first_token"

    @property
    def chunks(self) -> int:
        """Content chunks read so far."""
        self._count_stamps()
        return self._chunks

    @property
    def max_gap(self) -> float:
        """The largest gap between two content chunks so far, in seconds."""
        self._count_stamps()
        return self._max_gap

    def _idle_deadline(self) -> float:
        """When idle_timeout runs out (inf when off): after the last event, lane reads included."""
        if self._idle is None:
            return math.inf
        last = self.stamps[-1] if self.stamps else self._last_event_at
        if last < self._idle_from:
            last = self._idle_from
        return last + self._idle

    def read_timeout(self, now: float) -> float | None:
        """Seconds the next read may block before the attempt has failed; None once the terminal
        event is in (nothing more is due: what a server sends or keeps open after it is its own)."""
        if self.terminal:
            return None
        idle = self._idle_deadline()
        if idle <= now and self._idle is not None:
            last_read = self.stamps[-1] if self.stamps else self._last_read_at
            if now - last_read > _AWAY:
                # It ran out while no read waited: the caller held its last chunk that long
                # (awaited work, a slow client of the proxy) or the loop ran late. The
                # upstream's silence counts only while it is listened for, so it is timed again
                # from this read: a deadline already passed failed an async read at once, bytes
                # waiting or not, and called it a stall, which opened the breaker that every
                # caller shares. (A read that starts right after the last one, which a server
                # trickling keep-alives would have, keeps the deadline.)
                self._idle_from = now
                idle = now + self._idle
        limit = min(self.deadline, idle)
        if not self.committed:
            limit = min(limit, self._ftt_deadline)
        return None if limit == math.inf else max(limit - now, 0.0)

    def timed_out(self, now: float) -> Failure:
        """Why a read that blocked until `read_timeout` ran out has failed."""
        if not self.committed and now >= self._ftt_deadline - 1e-3:
            return failure("first_token_timeout", "first_token", "no content within first_token_timeout")
        if now >= self.deadline - 1e-3:
            return self._call_out_of_time()
        if now >= self._idle_deadline() - 1e-3:
            return failure("stall", self.phase, "no event within idle_timeout")
        # The caller's own (SDK `timeout=`) read timeout, shorter than the policy's: one
        # impatient caller must not open the circuit that every caller of the upstream shares.
        return dataclasses.replace(
            failure(
                "timeout", self.phase, "no bytes within the caller's read timeout", counts_for_breaker=False
            ),
            callers_timeout=True,
        )

    def continues(self, previous: StreamAttempt) -> None:
        """This attempt resumes `previous`'s committed stream: the same facts and counters, and
        its first content's gap runs from `previous`'s last content, so the stall that the
        resume repaired counts toward `max_gap` as the caller felt it."""
        previous._count_stamps()
        self.facts = previous.facts
        self._chunks = previous._chunks
        self._max_gap = previous._max_gap
        self._last_content_at = previous._last_content_at

    def _count_stamps(self) -> None:
        """Count the reads the driver passed on the lane (`stamps`): what `feed` would have.

        Each one is one more content chunk, and an event: the gaps between them, and from
        the content before them, count toward `max_gap`.
        """
        stamps = self.stamps
        if not stamps:
            return
        before = self._last_content_at
        widest = max(map(operator.sub, stamps, [before, *stamps[:-1]]))
        if widest > self._max_gap:
            self._max_gap = widest
        self._chunks += len(stamps)
        self._last_content_at = self._last_event_at = stamps[-1]
        stamps.clear()

    def feed(self, chunk: bytes, now: float) -> bytes:
        """Take bytes read at `now`; return what the caller may see now (b"" while buffering)."""
        # Once committed, with nothing held back, a read that is exactly one ordinary content
        # frame (as servers write them) is counted and passed on as it came.
        self._count_stamps()
        self._last_read_at = now
        glance = self._glance
        if glance is not None and glance(chunk) == CONTENT:
            self._chunks += 1
            gap = now - self._last_content_at
            if gap > self._max_gap:
                self._max_gap = gap
            self._last_content_at = self._last_event_at = now
            if self._learn:
                self._learn = False
                dialect = self._dialect
                shape = dialect.checked_shape(chunk) if self._verify else dialect.shape(chunk)
                self._shape = self.lane = shape
            if now >= self.deadline:
                self._check_time(now)
            return chunk
        try:
            frames = self._buffer.feed(chunk)
        except FrameTooLarge as error:
            self._fail(failure("bad_response", self.phase, str(error)))
            return b""
        out = self._frames(frames, now) if frames else self._check_time(now)
        self._glance = (
            self._look if self.committed and self._buffer.idle and self._seen_through is None else None
        )
        self.lane = self._shape if self._glance is not None else None
        return out

    def _frames(self, frames: bytes, now: float) -> bytes:
        """Classify whole frames; release those the caller may see."""
        dialect = self._dialect
        look = self._look
        facts = self.facts
        # Once committed, the frames go to the caller exactly as they came, without copies;
        # `released` collects them only when a blank line or a failure means passing part on.
        verbatim = self.committed
        released: list[bytes] = []
        content = False
        progress = False
        start = 0
        end = len(frames)
        while start < end:
            begin = start
            stop = frames.find(b"\n\n", start)
            if stop == start or stop < 0:
                # A blank line between frames (or ending them, when stop < 0) is not passed on.
                if verbatim:
                    verbatim = False
                    released.append(frames[:begin])
                if stop < 0:
                    break
                start = stop + 2
                continue
            start = stop + 2
            frame = frames[begin:start]
            if self._seen_through is not None and self._replayed(frame):
                progress = True  # the upstream is alive: no stall while it replays
                if verbatim:
                    verbatim = False
                    released.append(frames[:begin])
                continue
            kind = look(frame) if self.committed else UNKNOWN
            if kind == UNKNOWN:
                kind = dialect.inspect(frame, facts)
            if kind == CONTENT:
                content = progress = True
                self._chunks += 1
                if not self.committed:
                    self._commit(now, released)
            elif kind == PREAMBLE:
                progress = True
            elif kind == COMMENT:
                if not self.committed:
                    continue  # keep-alives are not worth buffering
            elif kind == TERMINAL:
                progress = True
                self.terminal = True
                if not self.committed:
                    self._commit(now, released)
            elif kind in (ERROR, BAD):
                if kind == ERROR:
                    assert facts.error is not None
                    self._fail(classify_error_event(facts.error, self.phase))
                else:
                    self._fail(failure("bad_response", self.phase, facts.bad or "bad event"))
                if verbatim:
                    verbatim = False
                    released.append(frames[:begin])
                break
            if not verbatim:
                (released if self.committed else self._held).append(frame)
        if progress:
            self._last_event_at = now
        if content:
            gap = now - self._last_content_at
            if gap > self._max_gap and self._chunks > 1:
                self._max_gap = gap
            self._last_content_at = now
        # Progress after commit leaves only the call's deadline to check (the idle gap is 0).
        if self.failure is None and (not progress or not self.committed or now >= self.deadline):
            self._check_time(now)
        return frames if verbatim else b"".join(released)

    def _replayed(self, frame: bytes) -> bool:
        """Whether `frame` is an event the caller got before this resume; the first newer one
        ends the check."""
        number = sequence_number(frame)
        if number is None:
            return False
        assert self._seen_through is not None
        if number <= self._seen_through:
            return True
        self._seen_through = None
        return False

    @property
    def whole(self) -> bool:
        """The answer is whole: its terminal event came, or every choice said it finished (chat)."""
        return self.terminal or (
            self.committed and self._choices is not None and len(self.facts.finished_choices) >= self._choices
        )

    def end(self) -> None:
        """The upstream body ended cleanly."""
        if self.failure is not None:
            return
        # An event the body ended inside (no blank line after it) is not dispatched, as the SSE
        # specification and the SDK's decoder say: a `data: [DONE]` cut so is no terminal event.
        pending = self._buffer.pending.strip()
        cut = unframed(pending, self.phase) if pending else None
        if cut is not None and cut.error_type != "stream_truncated":
            self._fail(cut)  # a bare JSON error answered to the stream's request
        elif not self.terminal:
            if self.whole:  # only `[DONE]` is missing
                self.terminal = True
                return
            if cut is not None:
                self._fail(cut)
                return
            what = "before its first content" if not self.committed else "without its terminal event"
            self._fail(failure("stream_truncated", self.phase, f"the stream ended {what}"))

    def broke(self, failure_: Failure) -> None:
        """Reading failed (connection error or timeout); after the terminal event the answer is
        whole, and the stream ends there."""
        if self.failure is None and not self.terminal:
            self._fail(failure_)

    def _commit(self, now: float, released: list[bytes]) -> None:
        # The buffered preamble goes to the caller first, then the content that committed.
        self.committed = True
        self.first_content_at = now
        self._last_content_at = now
        released.extend(self._held)
        self._held.clear()

    def _check_time(self, now: float) -> bytes:
        # Keep-alive comments keep reads returning; they are not progress. After the terminal
        # event no deadline applies.
        if self.terminal:
            return b""
        if not self.committed and now >= self._ftt_deadline:
            self._fail(failure("first_token_timeout", "first_token", "no content within first_token_timeout"))
        elif self._idle is not None and now - max(self._last_event_at, self._idle_from) > self._idle:
            self._fail(failure("stall", self.phase, "no event within idle_timeout"))
        elif now >= self.deadline:
            self._fail(self._call_out_of_time())
        return b""

    def _call_out_of_time(self) -> Failure:
        """The call's total_timeout ran out. Before the first content the upstream has not
        answered within all the time the call had: as a first-token timeout, it counts against
        the breaker. After it none of streamtap's deadlines on the upstream (idle_timeout) ran
        out: the call's own time did, as a caller's read timeout does, so long answers cut by a
        short total_timeout do not open the breaker that every call of a healthy upstream
        shares. (A stream that went silent counts as a stall once idle_timeout runs out.)"""
        return failure(
            "timeout", self.phase, "the call's total_timeout ran out", counts_for_breaker=not self.committed
        )

    def _fail(self, failure_: Failure) -> None:
        self.failure = failure_


def _decoding(glance: Callable[[bytes], int]) -> Callable[[bytes], int]:
    """`glance`, except that a frame whose data does not decode is UNKNOWN (to be parsed)."""

    def look(frame: bytes) -> int:
        kind = glance(frame)
        return kind if kind == UNKNOWN or decodes(frame) else UNKNOWN

    return look

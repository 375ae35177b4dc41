"""Response plans: a fault turned into the exact sequence of socket actions (pure).

The server only executes plans; every decision about which bytes go out, when, and how the
connection ends is made here and can be tested without sockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._content import KEEPALIVE, Frame
from ._faults import FaultSpec

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Head:
    """Send the status line and headers; `length` None means a chunked body."""

    status: int
    headers: Headers
    length: int | None


@dataclass(frozen=True)
class Write:
    """Send body bytes (one chunk of a chunked body)."""

    data: bytes


@dataclass(frozen=True)
class Pause:
    """Send nothing for `seconds`; ends early (and ends the response) if the client leaves."""

    seconds: float


@dataclass(frozen=True)
class End:
    """Finish the body properly; the connection may be reused."""


@dataclass(frozen=True)
class Close:
    """Close the connection cleanly (FIN) without finishing the body."""


@dataclass(frozen=True)
class Reset:
    """Abort the connection (SO_LINGER 0, then close: the peer gets an RST)."""


Action = Head | Write | Pause | End | Close | Reset


@dataclass(frozen=True)
class Timing:
    """Pacing of one response: time to first token and gap between content chunks (seconds)."""

    ttft: float = 0.0
    gap: float = 0.0


def json_bytes(payload: object) -> bytes:
    """Compact JSON, as the API sends it."""
    return json.dumps(payload, separators=(",", ":")).encode()


def json_plan(status: int, payload: object, headers: Headers = ()) -> list[Action]:
    """A complete JSON response, no fault."""
    body = json_bytes(payload)
    return [Head(status, (("content-type", "application/json"), *headers), len(body)), Write(body), End()]


def _first_token(fault: FaultSpec, timing: Timing) -> list[Action]:
    actions: list[Action] = []
    if fault.stall_first:
        actions.append(Pause(fault.stall_first))
    if fault.keepalive:
        # Spread the comments over the time to first token: pause, comment, ..., pause.
        interval = timing.ttft / (fault.keepalive + 1)
        for _ in range(fault.keepalive):
            if interval:
                actions.append(Pause(interval))
            actions.append(Write(KEEPALIVE))
        if interval:
            actions.append(Pause(interval))
    elif timing.ttft:
        actions.append(Pause(timing.ttft))
    return actions


def garbled(frame: bytes, text_key: bytes) -> bytes:
    """`frame` with a byte that is never UTF-8 (0xff) at the start of its text.

    Everything else is as it was, so the event still looks like the stream's content events
    to anything that does not decode it.
    """
    return frame.replace(text_key, text_key + b"\xff", 1)


def stream_plan(
    frames: Sequence[Frame],
    fault: FaultSpec,
    timing: Timing,
    headers: Headers,
    error_frame: Callable[[int | None], bytes],
    malformed: bytes,
    text_key: bytes,
) -> list[Action]:
    """The plan of a streamed (SSE) response under `fault`.

    Args:
        frames: every frame of the clean stream, in order.
        fault: the fault; content-counting keys trigger after min(N, content frames) contents.
        timing: time to first token (before the first `pre`/`content` frame) and content gap.
        headers: response headers besides the content type.
        error_frame: builds the dialect's error event, given the sequence number it takes.
        malformed: the dialect's invalid-JSON event.
        text_key: what precedes the text in the dialect's content events (`garbled`).
    """
    actions: list[Action] = [
        Head(200, (("content-type", "text/event-stream; charset=utf-8"), *headers), None)
    ]
    head = [frame for frame in frames if frame.kind == "head"]
    rest = [frame for frame in frames if frame.kind != "head"]
    actions += [Write(frame.data) for frame in head]
    actions += _first_token(fault, timing)
    contents = 0
    after_last = False
    content = malformed  # what a stream without content garbles; else the content next or last
    for frame in rest:
        # Faults fire at content boundaries: before each content and after the last one.
        if frame.kind == "content" or (frame.kind == "post" and not after_last):
            after_last = frame.kind == "post"
            if frame.kind == "content":
                content = frame.data
            bad = (malformed, garbled(content, text_key) if fault.garbled_after is not None else b"")
            if _at_boundary(actions, fault, contents, frame, error_frame, bad):
                return actions
        if frame.kind == "content":
            if contents and timing.gap:
                actions.append(Pause(timing.gap))
            contents += 1
        actions.append(Write(frame.data))
    actions.append(End())
    return actions


def _at_boundary(
    actions: list[Action],
    fault: FaultSpec,
    contents: int,
    upcoming: Frame,
    error_frame: Callable[[int | None], bytes],
    bad: tuple[bytes, bytes],
) -> bool:
    """Apply the faults due after `contents` content frames; True when the response ended.

    `bad` is the malformed event and the garbled copy of the content frame next (or last).
    """
    last = upcoming.kind != "content"  # the boundary after the final content frame
    due = _due(contents, last)
    if due(fault.drop_after):
        actions.append(Reset())
        return True
    if due(fault.truncate_after):
        actions.append(End())
        return True
    if due(fault.error_after):
        actions += [Write(error_frame(upcoming.sequence_number)), End()]
        return True
    if due(fault.stall_after):
        actions.append(Pause(fault.stall or 0.0))
    if due(fault.malformed_after):
        actions.append(Write(bad[0]))
    if due(fault.garbled_after):
        actions.append(Write(bad[1]))
    return False


def _due(contents: int, last: bool) -> Callable[[int | None], bool]:
    def due(after: int | None) -> bool:
        return after is not None and (after == contents or (last and after > contents))

    return due


def body_fault_plan(
    status: int, payload: object, fault: FaultSpec, timing: Timing, chunks: int, headers: Headers
) -> list[Action]:
    """The plan of a non-streamed JSON response under `fault`.

    A non-streamed call sends nothing until generation is done, so the time to first token,
    every gap and `stall_first` delay the headers. Body faults: `drop_after` sends half the
    body then resets; `truncate_after` sends half then closes cleanly (short body);
    `malformed_after` sends a complete but invalid JSON body; `error_after` becomes a 500.
    `keepalive`, `stall_after` and `garbled_after` only affect streams.
    """
    delay = timing.ttft + timing.gap * max(0, chunks - 1) + (fault.stall_first or 0.0)
    prefix: list[Action] = [Pause(delay)] if delay else []
    body = json_bytes(payload)
    json_headers = (("content-type", "application/json"), *headers)
    half = body[: len(body) // 2]
    if fault.drop_after is not None:
        return [*prefix, Head(status, json_headers, len(body)), Write(half), Reset()]
    if fault.truncate_after is not None:
        return [*prefix, Head(status, json_headers, len(body)), Write(half), Close()]
    if fault.malformed_after is not None:
        return [*prefix, Head(status, json_headers, len(half)), Write(half), End()]
    return [*prefix, Head(status, json_headers, len(body)), Write(body), End()]

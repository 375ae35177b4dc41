"""Incremental Server-Sent Events framing: bytes in, complete frames out. No I/O.

The engine forwards only complete frames, so a connection cut mid-frame never leaves half an
event in the SDK's decoder (which would corrupt a resumed stream), and a frame is classified
once, when it is whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._utf8 import json_bytes

# A single event larger than this is a bad response, not a reason to buffer without bound. An
# event can carry a whole answer (responses' `response.completed`, an image generation's
# `output_item.done` with its base64 image), so it has a whole JSON answer's limit.
DEFAULT_MAX_FRAME = 64 * 1024 * 1024


class FrameTooLarge(ValueError):
    pass


class FrameBuffer:
    """Splits a byte stream into complete SSE frames (each ending with a blank line).

    Line endings are normalised to `\\n`, so `\\r\\n` and `\\r` producers are handled; a `\\r`
    at the end of a chunk ends its line at once (a CR-only producer's last frame is complete),
    and a `\\n` starting the next chunk is dropped as the second half of that `\\r\\n`.

    An incomplete frame is held as the pieces it came in, joined once when it completes, and
    each chunk is searched alone: a large event arriving in many reads costs time in proportion
    to its size, not to its size squared.
    """

    __slots__ = ("_held", "_held_size", "_max_frame", "_skip_lf")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._held: list[bytes] = []  # an incomplete frame's pieces; never a blank line among them
        self._held_size = 0
        self._max_frame = max_frame
        self._skip_lf = False

    def feed(self, chunk: bytes) -> bytes:
        """Add `chunk`; return the complete frames now available (possibly b"")."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if 13 in chunk:  # a memchr for b"\r" (`b"\r" in chunk` first tries the needle as an int)
            self._skip_lf = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n\n")
        held = self._held
        if held:
            if end < 0 and chunk[:1] == b"\n" and held[-1][-1:] == b"\n":
                end = -1  # the blank line is the held piece's last byte and this chunk's first
            elif end < 0:
                self._hold(chunk)
                return b""
            end += 2
            held.append(chunk[:end])
            frames = b"".join(held)
            held.clear()
            self._held_size = 0
        elif end < 0:
            self._hold(chunk)
            return b""
        else:
            end += 2
            frames = chunk[:end]
        if end < len(chunk):
            self._hold(chunk[end:])
        return frames

    def _hold(self, piece: bytes) -> None:
        if piece:
            self._held.append(piece)
            self._held_size += len(piece)
            if self._held_size > self._max_frame:
                raise FrameTooLarge(f"an SSE event exceeds {self._max_frame} bytes")

    @property
    def idle(self) -> bool:
        """Nothing held back and nothing to skip: the next chunk starts a frame."""
        return not self._held and not self._skip_lf

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete frame still held back."""
        return b"".join(self._held)


def split_frames(frames: bytes) -> list[bytes]:
    """Split complete frames (as returned by FrameBuffer.feed) into single frames."""
    parts = frames.split(b"\n\n")
    parts.pop()  # the empty remainder after the last separator
    return [p for p in parts if p]


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed SSE event. `comment` is True for a frame made only of comment lines."""

    event: str | None
    data: str
    comment: bool = False


def parse_frame(frame: bytes) -> Event:
    """Parse one frame per the SSE spec (event, data, comments); raises UnicodeDecodeError."""
    text = frame.decode("utf-8")
    event: str | None = None
    data: list[str] = []
    fields = 0
    for line in text.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
            fields += 1
        elif name == "data":
            data.append(value)
            fields += 1
        elif name in ("id", "retry"):
            fields += 1
    return Event(event=event, data="\n".join(data), comment=fields == 0)


def encode_json(payload: object, event: str | None = None) -> bytes:
    """Encode one SSE event whose data is compact JSON (one line: JSON escapes line breaks)."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json_bytes(payload) + b"\n\n"


def encode_event(data: str, event: str | None = None) -> bytes:
    """Encode one SSE event (data may span lines)."""
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (head + body + "\n").encode("utf-8")

"""What an SSE frame means, per API dialect (chat completions, responses). Pure.

Before the commit point every frame is parsed in full (there are only a few). After it, a
read that is exactly one ordinary content frame is recognised from its layout and passed on
unparsed; anything else (an error, a finish reason, usage, the terminal event, a split or
unusual frame) is parsed. Two tiers: `glance` tells an ordinary content frame from its keys,
with about a dozen byte and substring tests; once it has, the dialect's `shape` of that frame
lets the drivers recognise the stream's next ones by removing a prefix and one or two
partitions (`Shape.fits`). A JSON parse costs ~5 µs per frame, against an engine budget of
2 µs per chunk. An engine whose caller relays the frames instead of parsing them (the proxy)
also has each frame passed on this way checked to decode (`decodes`, `CheckedShape`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, Protocol

from ._json import parse_json
from ._sse import Event, parse_frame
from ._taxonomy import Api

# Frame kinds.
COMMENT = 0  # SSE comment (keep-alive): not progress
PREAMBLE = 1  # an event that carries no content (role chunk, response.created, ...)
CONTENT = 2  # text, tool-call, refusal or reasoning delta: the commit point
TERMINAL = 3  # [DONE] / response.completed / response.incomplete
ERROR = 4  # an upstream error event (facts.error holds it)
BAD = 5  # not valid JSON / UTF-8 / shape (facts.bad holds why)
UNKNOWN = 6  # `glance` cannot tell without a parse


@dataclass(slots=True)
class StreamFacts:
    """What the engine learns from a stream's frames, for telemetry and resume."""

    response_id: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None  # of input_tokens, served from the provider's cache
    reasoning_output_tokens: int | None = None  # of output_tokens, spent on reasoning
    service_tier: str | None = None  # the tier that served the response
    system_fingerprint: str | None = None
    finish_reasons: list[str] = field(default_factory=list)  # chat: one per choice, in index order
    # Chat: the indexes of the choices that gave a finish reason (a stream that repeats one
    # for a choice still has that choice alone finished).
    finished_choices: set[int] = field(default_factory=set)
    error: Mapping[str, Any] | None = None
    bad: str | None = None


@dataclass(frozen=True, slots=True)
class Shape:
    """How one stream writes its ordinary content frames: the same bytes around the text.

    A read fits when it starts with `prefix` and then
    - `tail` is None: is one line ending with `}` and the blank line (the event line, in
      `prefix`, says what the event is), or
    - `padded` is False: holds a text (not empty, no quotes) and then exactly `tail`, or
    - `padded` is True: holds such a text, `tail` (which ends with the opening quote of a
      padding string such as OpenAI's `obfuscation`), a padding without quotes, and `"}`
      with the blank line.

    Learnt from a frame `glance` recognised (so `prefix` and `tail` carry no error, finish
    reason, usage or role), a read that fits differs from it only in its text and padding: it
    means the same, one more piece of content. A text with a quote (escaped, `\\"`) does not
    fit; its read takes the glance and the parse, as does every read that is not exactly one
    event (several events, part of one, a keep-alive, CRLF line ends).
    """

    prefix: bytes
    tail: bytes | None = None
    padded: bool = False

    def fits(self, read: bytes) -> bool:
        """Whether `read` is exactly one more ordinary content frame of this stream."""
        # Written with one-argument methods (`removeprefix`, `partition`, `removesuffix`) and
        # `in`: in CPython 3.11 startswith/endswith/find with a position parse their arguments
        # on every call, which cost more than their search (benchmarks/: `positional`).
        rest = read.removeprefix(self.prefix)
        if len(rest) == len(read):
            return False
        tail = self.tail
        if tail is None:
            # One line ending with `}`, then the blank line; no CR (the prefix has none).
            line = rest.removesuffix(b"}\n\n")
            return len(line) + 3 == len(rest) and 10 not in line and 13 not in line
        # Up to the first `tail` is the text: not empty (an empty text is no content) and
        # without quotes, so that its closing quote is the one `tail` starts with.
        text, found, after = rest.partition(tail)
        if not found or not text or 34 in text:
            return False
        if not self.padded:
            return not after
        # The padding, then its closing quote and the frame's end: `after` ends with those
        # and holds no other quote. (A suffix removed and a byte test cost less in situ than
        # a partition at the quote: `lane_in_situ.py --probe`.)
        padding = after.removesuffix(b'"}\n\n')
        return len(padding) + 4 == len(after) and 34 not in padding


# What a JSON string cannot hold as it is: control characters, and the backslash of escapes.
_UNSAFE = bytes(range(32)) + b"\\"


@dataclass(frozen=True, slots=True)
class CheckedShape(Shape):
    """A Shape whose reads must also decode (`decodes`) to fit.

    For an engine whose caller relays events rather than parsing them (the proxy): a read
    that looks right but is not UTF-8 JSON then takes the full parse and fails the attempt
    as `bad_response`, instead of failing in a client the engine cannot see. Build it with
    `checked`.
    """

    unsafe: int = 0  # bytes of `_UNSAFE` in every read of the layout outside text and padding

    def fits(self, read: bytes) -> bool:
        if not Shape.fits(self, read):
            return False
        return self.proven(read) or decodes(read)

    def proven(self, read: bytes) -> bool:
        """Whether `read`, which fits the layout, decodes by its bytes alone (no parse)."""
        # Outside its text (and padding) a chat read that fits has the bytes of a frame that
        # decoded. Text and padding hold no quote; with no control byte or backslash either,
        # and in UTF-8, they are JSON strings as they stand: the read decodes, proven in about
        # a quarter of the parse's instructions (docs/benchmarks.md). Anything else (an
        # escape, a layout without a tail) gets the parse.
        return (
            self.tail is not None
            and len(read) - len(read.translate(None, _UNSAFE)) == self.unsafe
            and (read.isascii() or _utf8(read))
        )


@dataclass(frozen=True, slots=True)
class SequencedShape(CheckedShape):
    """A CheckedShape for events whose data also carry a number that changes (responses).

    Its own layout is the event line (a Shape with no tail); the proof reads the event as the
    bytes up to the number (`numbered`), the number (JSON digits), a comma, and then a text
    layout (`after`, a CheckedShape whose prefix follows the comma) proven as a chat read is.
    Build it with the dialect's `checked_shape`.
    """

    numbered: bytes = b""
    after: CheckedShape | None = None

    def proven(self, read: bytes) -> bool:
        rest = read.removeprefix(self.numbered)
        number, _, text = rest.partition(b",")
        after = self.after
        return (
            after is not None
            and len(rest) < len(read)
            and number.isdigit()
            and (len(number) == 1 or number[:1] != b"0")  # JSON numbers have no leading zero
            and Shape.fits(after, text)
            and after.proven(text)
        )


_DECODER = json.JSONDecoder()
_PADDING = b',"obfuscation":"'


def text_shape(frame: bytes, opening: bytes) -> Shape | None:
    """The Shape of `frame`, one event whose text starts after `opening` (a JSON string's).

    From event to event only the text changes, and the random `obfuscation` padding OpenAI
    adds last; the bytes before the text and between it and the padding repeat. None when
    `frame` has no such text.
    """
    at = frame.find(opening)
    if at < 0:
        return None
    start = at + len(opening)
    try:
        # latin-1 keeps byte offsets; the end is just past the text's closing quote.
        end = _DECODER.raw_decode(frame.decode("latin-1"), start - 1)[1]
    except ValueError:
        return None
    pad = frame.rfind(_PADDING, end)
    if pad >= 0 and frame.endswith(b'"}\n\n') and frame.find(34, pad + len(_PADDING)) == len(frame) - 4:
        return Shape(frame[:start], frame[end - 1 : pad + len(_PADDING)], padded=True)
    return Shape(frame[:start], frame[end - 1 :])


def checked(shape: Shape) -> CheckedShape:
    """`shape`, learnt from a frame that decodes, as a CheckedShape."""
    around = shape.prefix + (shape.tail or b"") + (b"\n\n" if shape.padded else b"")
    unsafe = len(around) - len(around.translate(None, _UNSAFE))
    return CheckedShape(shape.prefix, shape.tail, shape.padded, unsafe)


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def decodes(frame: bytes) -> bool:
    """Whether the data of `frame`, one event ending with its `data:` line, is UTF-8 JSON.

    What a client's SDK needs of every event it reads. False also for any frame laid out
    otherwise, which then takes the full parse. It costs a JSON parse.
    """
    try:
        text = frame.decode()
        parse_json(text[text.find("data: ") + 6 : -2])
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return False
    return True


class Dialect(Protocol):
    api: Api

    def glance(self, frame: bytes) -> int:
        """CONTENT or PREAMBLE for a frame that surely is one and tells nothing else, else UNKNOWN.

        `frame` is one read or one frame, with its closing blank line. Cheap and bounded; it
        never answers for a frame that carries an error, a finish reason, usage or the end.
        """

    def shape(self, frame: bytes) -> Shape | None:
        """The Shape of a frame `glance` called CONTENT, or None when it has none to learn."""

    def checked_shape(self, frame: bytes) -> CheckedShape | None:
        """`shape` for a relaying caller (a CheckedShape), from a frame that also decodes."""

    def inspect(self, frame: bytes, facts: StreamFacts) -> int:
        """Classify one frame with a full parse, recording what it tells in `facts`."""

    def text(self, frames: bytes) -> str:
        """The answer text carried by complete frames: the first choice's, when there are several."""

    def output_messages(self, frames: bytes, unfinished: str) -> list[dict[str, Any]]:
        """The answer complete frames carry, as the GenAI conventions' output messages; a
        message they never finish has `unfinished` as its finish reason (`_output_messages`)."""

    def answer_messages(self, body: Mapping[str, Any], unfinished: str) -> list[dict[str, Any]]:
        """`output_messages` of a non-streaming JSON answer."""

    def cacheable_text(self, frames: bytes) -> str | None:
        """The text of a streamed answer, when replaying that text alone (a cached answer) gives
        the same answer: one choice, finished normally (chat `stop`, a `completed` response),
        with text and without tool calls; else None."""

    def cacheable_answer(self, body: Mapping[str, Any]) -> str | None:
        """`cacheable_text` of a non-streaming JSON answer."""

    def from_json(self, body: Mapping[str, Any], request: Mapping[str, Any]) -> bytes:
        """SSE frames equivalent to a non-streaming answer of this dialect, as a stream of
        `request` (the caller's streaming request) would carry them."""

    def from_text(self, text: str, model: str) -> bytes:
        """SSE frames of a complete answer made of `text` (a cached answer)."""

    def error_frame(self, error_type: str, message: str, upstream: Mapping[str, Any] | None = None) -> bytes:
        """An SSE error event in this dialect, so a client's SDK raises: the upstream's own
        error object when one ended the call (`error_object`), else streamtap's."""

    def body_facts(self, body: Mapping[str, Any], facts: StreamFacts) -> None:
        """Fill facts from a non-streaming JSON answer."""

    def unfinished(self, body: Mapping[str, Any]) -> str | None:
        """Why a non-streaming JSON answer is no finished answer a stream could be made of (a
        response still queued, choices or output items not in the API's shape), or None when
        it is one."""

    def answer_json(self, text: str, model: str) -> dict[str, Any]:
        """A non-streaming JSON answer made of `text` (a cached answer)."""


def usage_details(usage: Mapping[str, Any], facts: StreamFacts, input_key: str, output_key: str) -> None:
    """The cached-input and reasoning-output token counts of a usage object, when it has them.

    Chat completions nest them under `prompt_tokens_details` / `completion_tokens_details`,
    responses under `input_tokens_details` / `output_tokens_details`; both call them
    `cached_tokens` and `reasoning_tokens`.
    """
    details = usage.get(input_key)
    if isinstance(details, Mapping):
        facts.cached_input_tokens = token_count(details.get("cached_tokens"))
    details = usage.get(output_key)
    if isinstance(details, Mapping):
        facts.reasoning_output_tokens = token_count(details.get("reasoning_tokens"))


def serving_facts(body: Mapping[str, Any], facts: StreamFacts) -> None:
    """The service tier and system fingerprint a response (or chunk) says it was served with."""
    tier = body.get("service_tier")
    if isinstance(tier, str) and tier:
        facts.service_tier = tier
    fingerprint = body.get("system_fingerprint")
    if isinstance(fingerprint, str) and fingerprint:
        facts.system_fingerprint = fingerprint


MAX_COUNT: Final = 2**63 - 1  # OTLP's int64, and beyond any real count


def token_count(value: object) -> int | None:
    """A token count as an answer gives it: a JSON integer from 0 to `MAX_COUNT`, else None.

    Anything else (a negative, a number past int64) is no count: a counter cannot go down, and
    OTLP cannot carry it."""
    return value if type(value) is int and 0 <= value <= MAX_COUNT else None


def read_event(frame: bytes, facts: StreamFacts) -> Event | None:
    """The frame's event, or None when it is not UTF-8 (then `facts.bad` says why)."""
    try:
        return parse_frame(frame)
    except UnicodeDecodeError as error:
        facts.bad = f"an event is not valid UTF-8 ({error})"
        return None


def objects(value: object, *fields: str) -> bool:
    """Whether `value` is absent (null, or empty) or a JSON array of objects whose `fields` are
    each absent or an object: the shape a synthesized stream walks (`Dialect.from_json`)."""
    if not value:
        return True
    return isinstance(value, list) and all(
        isinstance(entry, Mapping) and all(isinstance(entry.get(f, {}), Mapping) for f in fields)
        for entry in value
    )


def listed(value: object) -> list[Any]:
    """`value` if it is a JSON array, else an empty list: a field an answer should hold as an
    array (choices, output items, content parts) is read as empty when it holds anything else."""
    return value if isinstance(value, list) else []


def load_json(data: str | bytes, facts: StreamFacts) -> Any:
    try:
        return parse_json(data)
    except (ValueError, UnicodeDecodeError) as error:
        facts.bad = f"an event is not valid JSON ({error})"
        return None


@cache  # the imports below run once (the dialects import this module)
def dialect_for(api: Api) -> Dialect:
    from ._chat import CHAT
    from ._responses import RESPONSES

    return RESPONSES if api == "responses" else CHAT


def error_object(error_type: str, message: str, upstream: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `error` object of an answer streamtap gives up with: the upstream's own (its message,
    type, param and code, which a client branches on) when an error event of the upstream ended
    the call, else streamtap's, whose code is the error_type."""
    if upstream is not None:
        return {key: upstream.get(key) for key in ("message", "type", "param", "code")}
    return {"message": message, "type": "streamtap_error", "param": None, "code": error_type}

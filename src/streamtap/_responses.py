"""The responses dialect: `event: <type>` frames from response.created to response.completed."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from ._dialect import (
    BAD,
    COMMENT,
    CONTENT,
    ERROR,
    PREAMBLE,
    TERMINAL,
    UNKNOWN,
    CheckedShape,
    SequencedShape,
    Shape,
    StreamFacts,
    checked,
    error_object,
    listed,
    load_json,
    objects,
    read_event,
    serving_facts,
    text_shape,
    token_count,
    usage_details,
)
from ._json import parse_json
from ._output_messages import INCOMPLETE_FINISH, TOOL_CALL_INPUT, responses_messages, responses_stream_output
from ._sse import encode_json, parse_frame, split_frames
from ._taxonomy import Api

_TERMINAL = frozenset({"response.completed", "response.incomplete"})
_ERRORS = frozenset({"error", "response.failed"})
# The output items a cached replay (the answer's text alone) loses nothing of.
_REPLAYED_ITEMS = frozenset({"message", "reasoning"})
# The statuses of a response that has finished: each has its terminal event.
_FINISHED = frozenset({"completed", "incomplete", "failed"})
# After the commit point these are parsed (usage, finish reason, errors); the rest pass unparsed.
_PARSE = frozenset({b"response.completed", b"response.incomplete", b"response.failed", b"error"})
_SEQUENCE = b'"sequence_number":'
_DELTA = b'"delta":"'
# Content that is no delta: an image generation's partial images, streamed as they are drawn.
_PARTIAL_IMAGE = "response.image_generation_call.partial_image"
_PARTIAL_IMAGE_BYTES = _PARTIAL_IMAGE.encode()
# The query parameters of a retrieval that the engine sets itself.
# How a message's content part streams: (its text's key, the events' kind, their extra fields).
_PART_EVENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "output_text": ("text", "output_text", {"logprobs": []}),
    "refusal": ("refusal", "refusal", {}),
}


class ResponsesDialect:
    api: Api = "responses"

    def glance(self, frame: bytes) -> int:
        # Two lines, `event: <type>` and `data: {...}`, and the blank line, nothing to normalise.
        if frame[:7] != b"event: ":
            return UNKNOWN
        newline = frame.find(10)
        end = len(frame) - 2
        if frame.find(10, newline + 1) != end or frame[-1] != 10 or frame[end - 1] != 125 or 13 in frame:
            return UNKNOWN
        if not frame.startswith(b"data: {", newline + 1):
            return UNKNOWN
        if b'"error"' in frame:  # a gateway's error under any event line: the parse says (JSON
            return UNKNOWN  # escapes quotes in strings, so no text matches the key)
        name = frame[7:newline]
        if name.endswith(b".delta"):
            # An empty delta says nothing yet: the parse tells it from text (as chat's glance
            # leaves an empty content to the parse), so it never commits the call.
            return UNKNOWN if b'"delta":""' in frame else CONTENT
        # Errors, the terminal events and usage need a parse; the other events tell nothing.
        if name in _PARSE:
            return UNKNOWN
        return CONTENT if name == _PARTIAL_IMAGE_BYTES else PREAMBLE

    def shape(self, frame: bytes) -> Shape | None:
        # The event line says what the event is; its data (sequence number, text, padding)
        # changes from event to event.
        data = frame.find(b"\ndata: {")
        return Shape(frame[: data + 8]) if data > 0 else None

    def checked_shape(self, frame: bytes) -> CheckedShape | None:
        # Besides the text and padding, each delta's sequence number changes: the proof reads
        # it as a number, then the rest as a text layout. Without one (another layout), each
        # event gets the parse.
        shape = self.shape(frame)
        if shape is None:
            return None
        at = frame.find(_SEQUENCE)
        comma = frame.find(b",", at)
        after = text_shape(frame[comma + 1 :], _DELTA) if at >= 0 and comma >= 0 else None
        if after is None or not frame[at + len(_SEQUENCE) : comma].isdigit():
            return checked(shape)
        return SequencedShape(shape.prefix, numbered=frame[: at + len(_SEQUENCE)], after=checked(after))

    def inspect(self, frame: bytes, facts: StreamFacts) -> int:
        event = read_event(frame, facts)
        if event is None:
            return BAD
        if event.comment or event.data == "[DONE]":
            # `[DONE]` is chat's end, which some servers send after every stream; the SDK stops
            # at it, so it is no bad event. The end is still the terminal event's to say.
            return COMMENT
        payload = load_json(event.data, facts)
        if payload is None:
            return BAD
        if not isinstance(payload, dict):
            facts.bad = "an event is not a JSON object"
            return BAD
        kind = str(payload.get("type") or event.event or "")
        response = payload.get("response")
        if isinstance(response, Mapping):  # a failed response's usage was billed too
            self.body_facts(response, facts, finish=kind in _TERMINAL)
        # A gateway's bare `{"error": {...}}` (no type) is an error too: the SDK raises at it.
        if kind in _ERRORS or payload.get("error"):
            facts.error = payload
            return ERROR
        if kind in _TERMINAL:
            return TERMINAL
        if kind.endswith(".delta"):
            # An empty delta (some servers open a text with one) is no content yet: committing
            # on it would stop the retries before the caller has seen a character.
            return PREAMBLE if payload.get("delta") == "" else CONTENT
        return CONTENT if kind == _PARTIAL_IMAGE else PREAMBLE

    def text(self, frames: bytes) -> str:
        deltas = (p.get("delta") for p in _payloads(frames, b"output_text.delta"))
        return "".join(delta for delta in deltas if isinstance(delta, str))

    def output_messages(self, frames: bytes, unfinished: str) -> list[dict[str, Any]]:
        return responses_messages(responses_stream_output(_payloads(frames)), unfinished)

    def answer_messages(self, body: Mapping[str, Any], unfinished: str) -> list[dict[str, Any]]:
        return responses_messages(body, unfinished)

    def cacheable_text(self, frames: bytes) -> str | None:
        # The terminal event holds the whole response: its status and every output item.
        for payload in reversed(list(_payloads(frames, b"response.completed", b"response.incomplete"))):
            if str(payload.get("type")) not in _TERMINAL:
                continue
            response = payload.get("response")
            if not isinstance(response, Mapping) or self.cacheable_answer(response) is None:
                return None
            return self.text(frames) or None  # the text the caller got, as its deltas carried it
        return None

    def cacheable_answer(self, body: Mapping[str, Any]) -> str | None:
        if body.get("status", "completed") != "completed":
            return None
        for item in listed(body.get("output")):
            if not isinstance(item, Mapping) or str(item.get("type")) not in _REPLAYED_ITEMS:
                return None  # a tool call (the caller's to run) or a built-in tool's output
        return _answer_text(body) or None

    def body_facts(self, body: Mapping[str, Any], facts: StreamFacts, finish: bool = True) -> None:
        if isinstance(body.get("id"), str):
            facts.response_id = body["id"]
        if isinstance(body.get("model"), str):
            facts.response_model = body["model"]
        serving_facts(body, facts)  # the last response object (the terminal one) has the final tier
        usage = body.get("usage")
        if isinstance(usage, Mapping):
            facts.input_tokens = token_count(usage.get("input_tokens"))
            facts.output_tokens = token_count(usage.get("output_tokens"))
            usage_details(usage, facts, "input_tokens_details", "output_tokens_details")
        # A response still queued or in progress (a background one), failed or cancelled has
        # stopped for no finish reason.
        if finish and body.get("status", "completed") in ("completed", "incomplete"):
            facts.finish_reasons.append(_finish_reason(body))

    def from_json(self, body: Mapping[str, Any], request: Mapping[str, Any]) -> bytes:
        events = _Events()
        started = {**body, "status": "in_progress", "output": [], "usage": None}
        events.add("response.created", response=started)
        events.add("response.in_progress", response=started)
        for index, item in enumerate(listed(body.get("output"))):
            if item.get("type") == "message":
                events.message(index, item)
            elif item.get("type") == "function_call":
                events.function_call(index, item)
            elif item.get("type") == "reasoning":
                events.reasoning(index, item)
            else:
                events.add("response.output_item.added", output_index=index, item=item)
                events.add("response.output_item.done", output_index=index, item=item)
        # The terminal event a stream of this answer ends with: response.incomplete for an
        # answer cut short (max_output_tokens, content_filter), as the caller's stream would.
        status = body.get("status", "completed")
        kind = f"response.{status}" if status in ("incomplete", "failed") else "response.completed"
        events.add(kind, response={**body, "status": status})
        return b"".join(events.frames)

    def from_text(self, text: str, model: str) -> bytes:
        return self.from_json(self.answer_json(text, model), {})

    def unfinished(self, body: Mapping[str, Any]) -> str | None:
        # A response that is still queued or in progress (a background one), or cancelled, has
        # no terminal event: written as response.completed it would be an empty answer.
        status = body.get("status", "completed")
        if not isinstance(status, str) or status not in _FINISHED:
            return f"the answer is a response that has not finished (status {status!r})"
        output = body.get("output")
        if not objects(output) or not all(
            objects(item.get("content")) for item in output or () if item.get("type") == "message"
        ):
            return "the answer's output is not the API's: a list of objects, a message's content too"
        return None

    def answer_json(self, text: str, model: str) -> dict[str, Any]:
        message = {
            "id": "msg_streamtap_cache",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        body = {
            "id": "resp_streamtap_cache",
            "object": "response",
            "created_at": int(time.time()),
            "model": model,
            "status": "completed",
            "output": [message],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        return body

    def error_frame(self, error_type: str, message: str, upstream: Mapping[str, Any] | None = None) -> bytes:
        # The `error` object makes the SDKs raise (they raise on any event whose data has one);
        # `type`, `code` and `message` keep it a valid responses `error` event.
        error = error_object(error_type, message, upstream)
        payload = {
            "type": "error",
            "code": error["code"],
            "message": error["message"],
            "param": error["param"],
        }
        return encode_json({**payload, "error": error}, event="error")


class _Events:
    """Builds a synthesized event sequence with increasing sequence numbers."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def add(self, kind: str, **fields: Any) -> None:
        payload = {"type": kind, "sequence_number": len(self.frames), **fields}
        self.frames.append(encode_json(payload, event=kind))

    def message(self, index: int, item: Mapping[str, Any]) -> None:
        item_id = item.get("id", f"msg_{index}")
        self.add(
            "response.output_item.added",
            output_index=index,
            item={**item, "content": [], "status": "in_progress"},
        )
        for part_index, part in enumerate(listed(item.get("content"))):
            where = {"item_id": item_id, "output_index": index, "content_index": part_index}
            # A text streams as output_text events, a refusal as refusal events (the SDK's
            # stream helper asserts the part an output_text event names is an output_text).
            key, kind, extra = _PART_EVENTS.get(str(part.get("type")), (None, "", {}))
            if "logprobs" in extra and isinstance(part.get("logprobs"), list):
                extra = {**extra, "logprobs": part["logprobs"]}  # the text's, as streamed with it
            if key is None:
                self.add("response.content_part.added", **where, part=part)
            else:
                value = part.get(key) or ""
                self.add("response.content_part.added", **where, part={**part, key: ""})
                if value:
                    self.add(f"response.{kind}.delta", **where, delta=value, **extra)
                self.add(f"response.{kind}.done", **where, **{key: value}, **extra)
            self.add("response.content_part.done", **where, part=part)
        self.add("response.output_item.done", output_index=index, item=item)

    def function_call(self, index: int, item: Mapping[str, Any]) -> None:
        item_id = item.get("id", f"fc_{index}")
        arguments = item.get("arguments", "")
        self.add("response.output_item.added", output_index=index, item={**item, "arguments": ""})
        where = {"item_id": item_id, "output_index": index}
        if arguments:
            self.add("response.function_call_arguments.delta", **where, delta=arguments)
        self.add("response.function_call_arguments.done", **where, arguments=arguments)
        self.add("response.output_item.done", output_index=index, item=item)

    def reasoning(self, index: int, item: Mapping[str, Any]) -> None:
        """A reasoning item as it streams: its summary's parts, then its reasoning text."""
        item_id = item.get("id", f"rs_{index}")
        started = {**item, "summary": []}
        if "content" in item:
            started["content"] = []
        self.add("response.output_item.added", output_index=index, item=started)
        for summary_index, part in enumerate(listed(item.get("summary"))):
            if not isinstance(part, Mapping):
                continue
            where = {"item_id": item_id, "output_index": index, "summary_index": summary_index}
            text = str(part.get("text") or "")
            self.add("response.reasoning_summary_part.added", **where, part={**part, "text": ""})
            if text:
                self.add("response.reasoning_summary_text.delta", **where, delta=text)
            self.add("response.reasoning_summary_text.done", **where, text=text)
            self.add("response.reasoning_summary_part.done", **where, part=part)
        for content_index, part in enumerate(listed(item.get("content"))):
            if not isinstance(part, Mapping) or part.get("type") != "reasoning_text":
                continue
            where = {"item_id": item_id, "output_index": index, "content_index": content_index}
            text = str(part.get("text") or "")
            if text:
                self.add("response.reasoning_text.delta", **where, delta=text)
            self.add("response.reasoning_text.done", **where, text=text)
        self.add("response.output_item.done", output_index=index, item=item)


def _finish_reason(response: Mapping[str, Any]) -> str:
    """Why a finished response stopped, in chat's words as the official instrumentation reports
    it: `length` or `content_filter` for one cut short, `tool_calls` for one that ends calling
    the caller's tools, else `stop`."""
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, Mapping) else None
    if reason:
        return INCOMPLETE_FINISH.get(str(reason), str(reason))
    items = listed(response.get("output"))
    calls = any(isinstance(item, Mapping) and str(item.get("type")) in TOOL_CALL_INPUT for item in items)
    return "tool_calls" if calls else "stop"


def _answer_text(body: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for item in listed(body.get("output")):
        if isinstance(item, Mapping) and item.get("type") == "message":
            parts.extend(
                str(part.get("text", ""))
                for part in listed(item.get("content"))
                if isinstance(part, Mapping) and part.get("type") == "output_text"
            )
    return "".join(parts)


def _payloads(frames: bytes, *markers: bytes) -> Iterator[Mapping[str, Any]]:
    """The JSON object of every event in complete frames, in order; with `markers`, only of the
    frames that hold one of them (the others are not parsed)."""
    for frame in split_frames(frames):
        if markers and not any(marker in frame for marker in markers):
            continue
        try:
            payload = parse_json(parse_frame(frame).data)
        except ValueError:
            continue
        if isinstance(payload, dict):
            yield payload


RESPONSES = ResponsesDialect()

"""The answer a call delivered, as the GenAI conventions' output messages (content capture).

Pure: JSON in, the conventions' `gen_ai.output.messages` shape out
(`[{"role": "assistant", "parts": [...], "finish_reason": ...}]`). One message per chat choice
(`n` > 1 gives several); one for a response, whose output items are one generation (the
conventions: "one choice cannot be split across multiple messages"). Parts: `text` (text and refusals),
`reasoning`, `tool_call` (arguments decoded from their JSON string) and `server_tool_call` (the
Responses API's built-in tools; an image generation's image is not recorded, as images in
requests keep only their type).

A stream is first folded into the shape of the non-streaming answer (chat `choices` with their
`message`, a response's `output` items), so one mapping serves both. A message the stream never
finished gets `unfinished` as its finish reason: the call's outcome (`error`, `cancelled`,
`abandoned`), since the conventions' reasons all describe an answer the model ended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ._dialect import listed
from ._json import parse_json

Message = dict[str, Any]

# The conventions' finish reasons for OpenAI's; the others (stop, length, content_filter) match.
_CHAT_FINISH: Final = {"tool_calls": "tool_call", "function_call": "tool_call"}
INCOMPLETE_FINISH: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}
# Responses output items that are calls of the caller's own tools, by the field holding their input.
TOOL_CALL_INPUT: Final = {
    "function_call": "arguments",
    "custom_tool_call": "input",
    "computer_call": "action",
}
# The Responses API's built-in tools, by their output item's type.
_SERVER_TOOLS: Final = {
    "web_search_call": "web_search",
    "file_search_call": "file_search",
    "code_interpreter_call": "code_interpreter",
    "image_generation_call": "image_generation",
    "mcp_call": "mcp",
    "mcp_list_tools": "mcp_list_tools",
    "local_shell_call": "local_shell",
}
_TERMINAL: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})
# A message's content parts that are text, by the key holding it.
_PART_TEXT: Final = {"output_text": "text", "refusal": "refusal"}
# Fields of a built-in tool's item that are not the call: its ids, and an image's bytes
# (`content` and `summary` are what an unfinished item's deltas were folded into.)
_NOT_THE_CALL: Final = frozenset({"id", "type", "call_id", "name", "status", "result", "content", "summary"})


def tool_call_part(call_id: object, name: object, arguments: object) -> dict[str, Any]:
    """A `tool_call` part. The conventions want the arguments as the object they encode, not
    the JSON string the API carries; a string that is not JSON stays as it is."""
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            arguments = parse_json(arguments)
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# -- chat completions ----------------------------------------------------------------------


def chat_messages(choices: object, unfinished: str) -> list[Message]:
    """The output messages of a chat completion's `choices`, in their index order."""
    messages: list[tuple[int, Message]] = []
    for position, choice in enumerate(listed(choices)):
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        message = message if isinstance(message, Mapping) else {}
        parts: list[dict[str, Any]] = []
        for key, kind in (("reasoning_content", "reasoning"), ("content", "text"), ("refusal", "text")):
            text = _text(message.get(key))
            if text is not None:
                parts.append({"type": kind, "content": text})
        for call in listed(message.get("tool_calls")):
            if isinstance(call, Mapping):
                function = call.get("function")
                function = function if isinstance(function, Mapping) else {}
                parts.append(tool_call_part(call.get("id"), function.get("name"), function.get("arguments")))
        legacy = message.get("function_call")
        if isinstance(legacy, Mapping):
            parts.append(tool_call_part(None, legacy.get("name"), legacy.get("arguments")))
        reason = choice.get("finish_reason")
        finish = _CHAT_FINISH.get(reason, reason) if isinstance(reason, str) and reason else unfinished
        index = choice.get("index")
        order = index if isinstance(index, int) and not isinstance(index, bool) else position
        messages.append((order, {"role": "assistant", "parts": parts, "finish_reason": finish}))
    return [message for _, message in sorted(messages, key=lambda pair: pair[0])]


class _ChoiceFold:
    """One choice's deltas, folded into the `message` a non-streaming answer would hold."""

    __slots__ = ("calls", "finish_reason", "function", "texts")

    def __init__(self) -> None:
        self.texts: dict[str, list[str]] = {}
        self.calls: dict[int, tuple[list[object], list[str]]] = {}  # index: ([id, name], arguments)
        self.function: tuple[list[object], list[str]] | None = None
        self.finish_reason: object = None

    def add(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            for key in ("reasoning_content", "reasoning", "content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str):
                    self.texts.setdefault("reasoning_content" if key == "reasoning" else key, []).append(text)
            for call in listed(delta.get("tool_calls")):
                if isinstance(call, Mapping):
                    index = call.get("index")
                    fold = self.calls.setdefault(index if isinstance(index, int) else 0, ([None, None], []))
                    self._fold_call(fold, call)
            function = delta.get("function_call")
            if isinstance(function, Mapping):
                self.function = self.function or ([None, None], [])
                self._fold_call(self.function, {"function": function})
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    @staticmethod
    def _fold_call(fold: tuple[list[object], list[str]], call: Mapping[str, Any]) -> None:
        ids, arguments = fold
        if call.get("id"):
            ids[0] = call["id"]
        function = call.get("function")
        if isinstance(function, Mapping):
            if function.get("name"):
                ids[1] = function["name"]
            if isinstance(function.get("arguments"), str):
                arguments.append(function["arguments"])

    def choice(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {key: "".join(texts) for key, texts in self.texts.items()}
        if self.calls:
            message["tool_calls"] = [
                {"id": ids[0], "function": {"name": ids[1], "arguments": "".join(arguments)}}
                for _, (ids, arguments) in sorted(self.calls.items())
            ]
        if self.function is not None:
            ids, arguments = self.function
            message["function_call"] = {"name": ids[1], "arguments": "".join(arguments)}
        return {"index": index, "message": message, "finish_reason": self.finish_reason}


def chat_stream_choices(chunk_choices: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The `choices` of the non-streaming answer that a stream's chunk choices add up to."""
    folds: dict[int, _ChoiceFold] = {}
    for choice in chunk_choices:
        index = choice.get("index", 0)
        folds.setdefault(index if isinstance(index, int) else 0, _ChoiceFold()).add(choice)
    return [fold.choice(index) for index, fold in sorted(folds.items())]


# -- responses -----------------------------------------------------------------------------


def responses_messages(response: Mapping[str, Any], unfinished: str) -> list[Message]:
    """The output message of a response object: its `output` items' parts in order, in one
    assistant message (a response is one generation); none when no item is the model's output."""
    parts = [part for item in listed(response.get("output")) for part in item_parts(item) or ()]
    if not parts:
        return []
    return [
        {"role": "assistant", "parts": parts, "finish_reason": _response_finish(response, parts, unfinished)}
    ]


def _response_finish(response: Mapping[str, Any], parts: list[dict[str, Any]], unfinished: str) -> str:
    """Why a response stopped, in the conventions' words; `unfinished` (the call's outcome, or
    `stop` for a call that succeeded) for one that never said it finished."""
    status = response.get("status")
    if status == "incomplete":
        # The response's reason, else the status itself (as OpenTelemetry's OpenAI
        # instrumentation reports it).
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        return INCOMPLETE_FINISH.get(reason, reason) if isinstance(reason, str) and reason else "incomplete"
    if status in ("failed", "cancelled"):
        return "error"
    if status == "completed" or (status is None and unfinished == "stop"):
        return "tool_call" if any(part["type"] == "tool_call" for part in parts) else "stop"
    return unfinished


def item_parts(item: object) -> list[dict[str, Any]] | None:
    """The parts of one Responses output item (as answered, or replayed as input), or None for
    an item that is not the model's output."""
    if not isinstance(item, Mapping):
        return None
    kind = item.get("type")
    if kind == "message":
        return [
            {"type": "text", "content": text} for text in map(_part_text, listed(item.get("content"))) if text
        ]
    if kind == "reasoning":
        return [
            {"type": "reasoning", "content": block["text"]}
            for key in ("summary", "content")
            for block in listed(item.get(key))
            if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        ]
    if not isinstance(kind, str):
        return None
    if kind in TOOL_CALL_INPUT:
        name = "computer" if kind == "computer_call" else item.get("name")
        return [tool_call_part(item.get("call_id") or item.get("id"), name, item.get(TOOL_CALL_INPUT[kind]))]
    if kind in _SERVER_TOOLS:
        call = {key: value for key, value in item.items() if key not in _NOT_THE_CALL}
        part = {
            "type": "server_tool_call",
            "id": item.get("call_id") or item.get("id"),
            "name": item.get("name") or _SERVER_TOOLS[kind],
            "server_tool_call": {"type": _SERVER_TOOLS[kind], **call},
        }
        return [part]
    return None


def tool_calls_only(message: Message) -> bool:
    """Whether `message` is an assistant turn of tool calls alone (parallel calls are one turn)."""
    parts = message["parts"]
    return message["role"] == "assistant" and bool(parts) and all(p["type"] == "tool_call" for p in parts)


def _part_text(part: object) -> str | None:
    """The text of a message's content part (`output_text` or `refusal`), else None."""
    if not isinstance(part, Mapping):
        return None
    text = part.get(_PART_TEXT.get(str(part.get("type")), ""))
    return text if isinstance(text, str) else None


def responses_stream_output(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The response object a stream's events add up to: its terminal event's when it came, else
    the output items as far as they streamed (finished ones whole, the others in progress)."""
    items: dict[int, dict[str, Any]] = {}
    for event in events:
        kind = event.get("type")
        response = event.get("response")
        if isinstance(kind, str) and kind in _TERMINAL and isinstance(response, Mapping):
            return dict(response)
        index = event.get("output_index")
        if not isinstance(index, int):
            continue
        item = event.get("item")
        if kind == "response.output_item.done" and isinstance(item, Mapping):
            items[index] = dict(item)
        elif kind == "response.output_item.added" and isinstance(item, Mapping):
            items[index] = {**item, "status": "in_progress", "content": [], "summary": []}
        elif index in items and isinstance(event.get("delta"), str):
            _fold_delta(items[index], str(kind), event["delta"])
    return {"output": [item for _, item in sorted(items.items())]}


# What a delta event adds to the unfinished item it names: text to the last part of one of its
# lists (the list, the part's type, its text's key), or to one of its own fields.
_DELTA_PARTS: Final = {
    "response.output_text.delta": ("content", "output_text", "text"),
    "response.refusal.delta": ("content", "refusal", "refusal"),
    "response.reasoning_summary_text.delta": ("summary", "summary_text", "text"),
}
_DELTA_FIELDS: Final = {
    "response.function_call_arguments.delta": "arguments",
    "response.custom_tool_call_input.delta": "input",
}


def _fold_delta(item: dict[str, Any], kind: str, delta: str) -> None:
    """Add a delta event's text to the unfinished item it belongs to."""
    if item.get("status") != "in_progress":
        return  # finished: its done event already holds the whole
    if kind in _DELTA_FIELDS:
        field = _DELTA_FIELDS[kind]
        item[field] = str(item.get(field) or "") + delta
    elif kind in _DELTA_PARTS:
        field, part_type, key = _DELTA_PARTS[kind]
        parts = item.get(field)
        if not isinstance(parts, list):
            return  # not an item these deltas belong to
        last = parts[-1] if parts else None
        if not isinstance(last, dict) or last.get("type") != part_type:
            last = {"type": part_type, key: ""}
            parts.append(last)
        last[key] = str(last.get(key) or "") + delta

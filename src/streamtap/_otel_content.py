"""Opt-in content capture: where content goes, and request messages in the GenAI semconv shape
(the answer's are built by `_output_messages`).

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT turns capture on and says where it goes, as
the official GenAI instrumentations read it (`content_mode`); OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT
says whether each call's `gen_ai.client.inference.operation.details` event is emitted at all
(`emits_events`). Shapes follow gen-ai-input-messages.json / gen-ai-output-messages.json:
`[{"role": ..., "parts": [{"type": "text", "content": ...}, ...]}]`. Span attributes cannot
hold nested structures in the Python SDK, so on spans they are JSON strings, as the conventions
allow (`to_json`); log records can, so events carry the structures (`to_value`). Parts that are
not text (images, audio, files) keep only their type: their payloads are large and not messages
anyone reads in a trace.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._output_messages import item_parts, tool_call_part, tool_calls_only
from ._utf8 import valid_text

CAPTURE_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_TEXT_TYPES: Final = frozenset({"text", "input_text", "output_text"})
# Responses input items that answer a tool call the model made.
_TOOL_OUTPUTS: Final = frozenset({"function_call_output", "custom_tool_call_output", "computer_call_output"})


EMIT_EVENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT"
log = logging.getLogger("streamtap")


@dataclass(frozen=True)
class ContentMode:
    """What OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT asks for.

    on: content is captured unless the code says otherwise (`instrument(capture_content=...)`).
    spans, events: where captured content goes. Code that turns capture on where the variable
        names no place gets it on spans, as before events existed.
    """

    on: bool = False
    spans: bool = True
    events: bool = False

    def wanted(self, engine_says: bool | None) -> bool:
        """Whether a call captures content: the engine's word for it, else the variable's."""
        return self.on if engine_says is None else engine_says


# The variable's values, any case: the boolean of the older GenAI instrumentations, and the
# content capturing modes of the current ones (NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT).
_MODES: Final[dict[str, ContentMode]] = {
    "": ContentMode(),
    "false": ContentMode(),
    "0": ContentMode(),
    "no": ContentMode(),
    "no_content": ContentMode(),
    "true": ContentMode(on=True),
    "1": ContentMode(on=True),
    "yes": ContentMode(on=True),
    "span_only": ContentMode(on=True),
    "event_only": ContentMode(on=True, spans=False, events=True),
    "span_and_event": ContentMode(on=True, events=True),
}
_ACCEPTED_MODES: Final = "true, false, NO_CONTENT, SPAN_ONLY, EVENT_ONLY or SPAN_AND_EVENT"
_warned: set[tuple[str, str]] = set()  # (variable, value) already warned of: once a process


def _warn_once(variable: str, raw: str, message: str) -> None:
    if (variable, raw) not in _warned:
        _warned.add((variable, raw))
        log.warning("streamtap: %s=%s %s", variable, raw, message)


def content_mode(environ: Mapping[str, str] = os.environ) -> ContentMode:
    """The capture the standard GenAI variable asks for; anything else is warned of (once) and off."""
    raw = environ.get(CAPTURE_ENV, "")
    mode = _MODES.get(raw.strip().lower())
    if mode is None:
        _warn_once(CAPTURE_ENV, raw, f"is not one of {_ACCEPTED_MODES}; content is not captured")
        return ContentMode()
    return mode


def capture_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the standard GenAI opt-in variable turns content capture on."""
    return content_mode(environ).on


def emits_events(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether each call emits a `gen_ai.client.inference.operation.details` event.

    OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT=true or false says so; unset, it is emitted when the
    capture variable sends content to events (EVENT_ONLY, SPAN_AND_EVENT), as the official
    GenAI instrumentations decide.
    """
    raw = environ.get(EMIT_EVENT_ENV, "")
    value = raw.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    if value:
        _warn_once(EMIT_EVENT_ENV, raw, f"is not true or false; deciding by {CAPTURE_ENV}")
    return content_mode(environ).events


def _parts(content: object) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, Sequence):
        for part in content:
            if isinstance(part, str):
                parts.append({"type": "text", "content": part})
            elif isinstance(part, Mapping):
                kind = str(part.get("type", "generic"))
                if kind in _TEXT_TYPES and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "content": part["text"]})
                else:
                    parts.append({"type": kind})
    return parts


def _tool_calls(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    out: list[dict[str, Any]] = []
    if isinstance(calls, Sequence):
        for call in calls:
            if isinstance(call, Mapping):
                function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
                assert isinstance(function, Mapping)
                out.append(tool_call_part(call.get("id"), function.get("name"), function.get("arguments")))
    return out


def _tool_result(call_id: object, response: object) -> dict[str, Any]:
    return {"role": "tool", "parts": [{"type": "tool_call_response", "id": call_id, "response": response}]}


def _tool_output(output: object) -> object:
    """What a tool returned (a chat tool message, a Responses tool output item): its text as it
    is, content parts as parts (images and files by their type alone), a computer's screenshot
    by its type."""
    if isinstance(output, Mapping):
        return {"type": output.get("type")}
    if isinstance(output, Sequence) and not isinstance(output, str):
        return _parts(output)
    return output


def input_messages(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chat history of a chat-completions (`messages`) or responses (`input`) request."""
    raw = request.get("messages", request.get("input"))
    if isinstance(raw, str):
        return [{"role": "user", "parts": [{"type": "text", "content": raw}]}]
    messages: list[dict[str, Any]] = []
    if not isinstance(raw, Sequence):
        return messages
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        role = item.get("role")
        if role == "tool":
            messages.append(_tool_result(item.get("tool_call_id"), _tool_output(item.get("content"))))
        elif isinstance(role, str):
            messages.append({"role": role, "parts": _parts(item.get("content")) + _tool_calls(item)})
        elif str(item.get("type")) in _TOOL_OUTPUTS:
            messages.append(_tool_result(item.get("call_id"), _tool_output(item.get("output"))))
        elif (parts := item_parts(item)) is not None:
            # The model's earlier output (reasoning, tool calls), replayed as Responses input:
            # the assistant's, with parallel tool calls as one turn.
            if not parts:
                continue
            turn = {"role": "assistant", "parts": parts}
            if messages and tool_calls_only(turn) and tool_calls_only(messages[-1]):
                messages[-1]["parts"].extend(parts)
            else:
                messages.append(turn)
        else:
            messages.append({"role": "user", "parts": [{"type": str(item.get("type", "generic"))}]})
    return messages


def system_instructions(request: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The Responses API's separate `instructions`, if any."""
    instructions = request.get("instructions")
    if isinstance(instructions, str) and instructions:
        return [{"type": "text", "content": instructions}]
    return None


def tool_definitions(request: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The tools a request offers the model (`gen_ai.tool.definitions`), or None when none.

    A function is `{"type": "function", "name", "description", "parameters"}`, from chat's
    nested `function` or the Responses API's flat shape; a built-in tool (web search, file
    search, ...) is its type, named by it unless it has a name.
    """
    tools = request.get("tools")
    if not isinstance(tools, Sequence) or isinstance(tools, str):
        return None
    definitions: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("type"), str):
            continue
        kind = tool["type"]
        if kind == "function":
            function = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
            assert isinstance(function, Mapping)
            definitions.append(
                {
                    "type": "function",
                    "name": function.get("name") if isinstance(function.get("name"), str) else "",
                    "description": function.get("description"),
                    "parameters": function.get("parameters"),
                }
            )
        else:
            name = tool.get("name")
            definitions.append({"type": kind, "name": name if isinstance(name, str) else kind})
    return definitions or None


def request_content(request: Mapping[str, Any], encode: Callable[[object], Any]) -> dict[str, Any]:
    """The request's content attributes, each value through `encode` (`to_json` for a span,
    `to_value` for an event): its messages, and its instructions and tools when it has them."""
    attrs = {"gen_ai.input.messages": encode(input_messages(request))}
    instructions = system_instructions(request)
    if instructions is not None:
        attrs["gen_ai.system_instructions"] = encode(instructions)
    tools = tool_definitions(request)
    if tools is not None:
        attrs["gen_ai.tool.definitions"] = encode(tools)
    return attrs


def to_json(value: object) -> str:
    """Compact JSON; values that are not JSON become their string form instead of failing."""
    return valid_text(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


_INT64: Final = range(-(2**63), 2**63)


def _int64_or_digits(digits: str) -> int | str:
    number = int(digits)
    return number if number in _INT64 else digits


def to_value(value: object) -> Any:
    """`value` as plain JSON data an OTLP exporter can encode: lists, dicts, strings and numbers,
    with what `to_json` does to the rest (lone surrogates replaced, other values as strings).

    An integer past int64 (a tool's JSON schema bound, an id in a tool call's arguments) keeps
    its digits as a string: OTLP carries no larger integer, and its exporter would drop the
    whole attribute, every message with it.
    """
    return json.loads(to_json(value), parse_int=_int64_or_digits)

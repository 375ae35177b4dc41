"""The chat completions dialect: `data: {chunk}` frames ending with `data: [DONE]`."""

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
from ._output_messages import chat_messages, chat_stream_choices
from ._sse import encode_event, encode_json, parse_frame, split_frames
from ._taxonomy import Api

_TEXT = b'"delta":{"content":"'
# What a delta carries that commits the call; `audio` (its transcript and data) is the answer of
# a call with audio output, whose deltas carry no `content`.
_CONTENT_KEYS = (
    "content",
    "tool_calls",
    "function_call",
    "refusal",
    "reasoning_content",
    "reasoning",
    "audio",
)

# What an answer carries that a cached replay (its text alone) would lose: tool and function
# calls, audio, a refusal, citations (annotations); and its logprobs, which are beside them.
_NOT_REPLAYED = ("tool_calls", "function_call", "audio", "refusal", "annotations")
# What a whole answer's message says that a stream says in its delta (`from_json`).
_DELTA_KEYS = ("reasoning_content", "content", "refusal", "function_call", "audio", "annotations")


class ChatDialect:
    api: Api = "chat_completions"

    def glance(self, frame: bytes) -> int:
        # One line, `data: {...}` and the blank line, nothing to normalise (`find(10)`, `13 in`
        # are memchr calls).
        end = len(frame) - 2
        if frame[:7] != b"data: {" or frame.find(10) != end or frame[-1] != 10 or frame[end - 1] != 125:
            return UNKNOWN
        if 13 in frame:
            return UNKNOWN
        # Substring tests on str are twice as fast as on bytes; latin-1 maps each byte to one
        # character, so they find exactly what they would in the bytes. JSON escapes quotes in
        # strings, so content text never matches a key.
        text = frame.decode("latin-1")
        # A chunk still streaming (finish reason null, and no other choice of it finished:
        # with `n` > 1 one chunk may carry several) that carries no error, no usage, no role
        # announcement and no empty delta or text. After the first test the others are cheap:
        # on the hot path the cost is in the first touch of the frame and of each C function.
        if (
            '"finish_reason":null' in text
            and '"finish_reason":"' not in text
            and '"error"' not in text
            and '"usage":{' not in text
            and '"role"' not in text
            and '"delta":{}' not in text
            and '"content":""' not in text
        ):
            return CONTENT
        return UNKNOWN

    def shape(self, frame: bytes) -> Shape | None:
        # Tool calls, reasoning and refusals have none: they are glanced and parsed as before.
        return text_shape(frame, _TEXT)

    def checked_shape(self, frame: bytes) -> CheckedShape | None:
        shape = self.shape(frame)
        return checked(shape) if shape is not None else None

    def inspect(self, frame: bytes, facts: StreamFacts) -> int:
        event = read_event(frame, facts)
        if event is None:
            return BAD
        if event.comment:
            return COMMENT
        if event.data.startswith("[DONE]"):
            return TERMINAL
        chunk = load_json(event.data, facts)
        if chunk is None:
            return BAD
        if not isinstance(chunk, dict):
            facts.bad = "an event is not a JSON object"
            return BAD
        if chunk.get("error"):
            facts.error = chunk
            return ERROR
        # Azure's first chunk (its prompt filter results, no choices) has an empty id and model:
        # the answer's are in the chunks after it.
        if facts.response_id is None and isinstance(chunk.get("id"), str) and chunk["id"]:
            facts.response_id = chunk["id"]
            serving_facts(chunk, facts)  # every chunk repeats them: read the first's, and the usage's
        if facts.response_model is None and isinstance(chunk.get("model"), str) and chunk["model"]:
            facts.response_model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            facts.input_tokens = token_count(usage.get("prompt_tokens"))
            facts.output_tokens = token_count(usage.get("completion_tokens"))
            usage_details(usage, facts, "prompt_tokens_details", "completion_tokens_details")
            serving_facts(chunk, facts)
        choices = chunk.get("choices")
        if choices and not isinstance(choices, list):  # null, {} or absent: no choices, as ever
            facts.bad = "an event's choices are not a list"
            return BAD
        kind = PREAMBLE
        for choice in choices or ():
            if not isinstance(choice, Mapping):
                continue
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:  # some servers write "" for "not yet"
                index = choice.get("index", 0)
                index = index if isinstance(index, int) and not isinstance(index, bool) else 0
                finished = facts.finished_choices
                if index not in finished:  # some servers repeat it in a closing chunk
                    # One reason per choice, in the choices' order whatever order they end in.
                    facts.finish_reasons.insert(sum(i < index for i in finished), reason)
                    finished.add(index)
            delta = choice.get("delta")
            if isinstance(delta, Mapping) and any(delta.get(key) for key in _CONTENT_KEYS):
                kind = CONTENT
        return kind

    def text(self, frames: bytes) -> str:
        parts: list[str] = []
        for choice in _choices(frames):
            if choice.get("index", 0) != 0:
                continue  # n > 1: the first choice's, never interleaved
            delta = choice.get("delta")
            if isinstance(delta, Mapping) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
        return "".join(parts)

    def output_messages(self, frames: bytes, unfinished: str) -> list[dict[str, Any]]:
        return chat_messages(chat_stream_choices(_choices(frames)), unfinished)

    def answer_messages(self, body: Mapping[str, Any], unfinished: str) -> list[dict[str, Any]]:
        return chat_messages(body.get("choices"), unfinished)

    def cacheable_text(self, frames: bytes) -> str | None:
        parts: list[str] = []
        reasons: set[object] = set()
        for choice in _choices(frames):
            if choice.get("index", 0) != 0 or choice.get("logprobs"):
                return None  # n > 1: a replay has one choice, and no logprobs
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                if any(delta.get(key) for key in _NOT_REPLAYED):
                    return None
                if isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
            if choice.get("finish_reason"):
                reasons.add(str(choice["finish_reason"]))
        text = "".join(parts)
        return text if text and reasons == {"stop"} else None

    def cacheable_answer(self, body: Mapping[str, Any]) -> str | None:
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], Mapping):
            return None
        choice = choices[0]
        message = choice.get("message")
        if (
            choice.get("finish_reason") != "stop"
            or not isinstance(message, Mapping)
            or choice.get("logprobs")
        ):
            return None
        if any(message.get(key) for key in _NOT_REPLAYED):
            return None
        content = message.get("content")
        return content if isinstance(content, str) and content else None

    def body_facts(self, body: Mapping[str, Any], facts: StreamFacts) -> None:
        facts.response_id = body.get("id") if isinstance(body.get("id"), str) else None
        facts.response_model = body.get("model") if isinstance(body.get("model"), str) else None
        serving_facts(body, facts)
        usage = body.get("usage")
        if isinstance(usage, Mapping):
            facts.input_tokens = token_count(usage.get("prompt_tokens"))
            facts.output_tokens = token_count(usage.get("completion_tokens"))
            usage_details(usage, facts, "prompt_tokens_details", "completion_tokens_details")
        for choice in listed(body.get("choices")):
            if (
                isinstance(choice, Mapping)
                and isinstance(choice.get("finish_reason"), str)
                and choice["finish_reason"]
            ):
                facts.finish_reasons.append(choice["finish_reason"])

    def from_json(self, body: Mapping[str, Any], request: Mapping[str, Any]) -> bytes:
        base = {
            "id": body.get("id", "chatcmpl-streamtap"),
            "object": "chat.completion.chunk",
            "created": body.get("created", int(time.time())),
            "model": body.get("model", ""),
        }
        for key in ("service_tier", "system_fingerprint"):  # every chunk carries them, as streamed
            if body.get(key):
                base[key] = body[key]
        frames: list[bytes] = []
        for choice in listed(body.get("choices")):
            index = choice.get("index", 0)
            message = choice.get("message") or {}
            # As streamed: content "" to begin a text, null when the message has none (a tool call,
            # a refusal), which the SDK's accumulated message keeps.
            content = None if message.get("content") is None else ""
            frames.append(
                self._chunk(base, index, {"role": message.get("role", "assistant"), "content": content})
            )
            # Everything the message says, as one delta with the choice's logprobs;
            # `reasoning_content` is what OpenAI-compatible servers (DeepSeek, vLLM, ...) answer
            # reasoning in, `function_call` the answer to the deprecated `functions` parameter,
            # `audio` an audio answer's (its transcript, data and id), `annotations` its
            # citations.
            delta: dict[str, Any] = {key: message[key] for key in _DELTA_KEYS if message.get(key)}
            if message.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            if delta:
                frames.append(self._chunk(base, index, delta, logprobs=choice.get("logprobs")))
            frames.append(self._chunk(base, index, {}, choice.get("finish_reason") or "stop"))
        # A non-streaming answer always has usage; a stream carries it (in a last chunk with no
        # choices, which `chunk.choices[0]` fails on) only when the request asked for it.
        options = request.get("stream_options")
        if body.get("usage") and isinstance(options, Mapping) and options.get("include_usage"):
            frames.append(encode_json({**base, "choices": [], "usage": body["usage"]}))
        frames.append(encode_event("[DONE]"))
        return b"".join(frames)

    def from_text(self, text: str, model: str) -> bytes:
        return self.from_json(self.answer_json(text, model), {})

    def unfinished(self, body: Mapping[str, Any]) -> str | None:
        # A chat completion is answered finished, or not at all; but its parts must be objects.
        choices = body.get("choices")
        if not objects(choices, "message") or not all(
            objects((choice.get("message") or {}).get("tool_calls"), "function") for choice in choices or ()
        ):
            return "the answer's choices are not the API's: a list of objects, each message an object"
        return None

    def answer_json(self, text: str, model: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        return {
            "id": "chatcmpl-streamtap-cache",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        }

    def error_frame(self, error_type: str, message: str, upstream: Mapping[str, Any] | None = None) -> bytes:
        return encode_json({"error": error_object(error_type, message, upstream)})

    @staticmethod
    def _chunk(
        base: Mapping[str, Any],
        index: int,
        delta: Mapping[str, Any],
        finish: str | None = None,
        logprobs: Any = None,
    ) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return encode_json({**base, "choices": [choice]})


def _choices(frames: bytes) -> Iterator[Mapping[str, Any]]:
    """The choices of every chunk in complete frames, in order."""
    for frame in split_frames(frames):
        try:
            event = parse_frame(frame)
            chunk = parse_json(event.data) if event.data and event.data[0] == "{" else None
        except ValueError:
            continue
        if not isinstance(chunk, dict):
            continue
        for choice in listed(chunk.get("choices")):
            if isinstance(choice, Mapping):
                yield choice


CHAT = ChatDialect()

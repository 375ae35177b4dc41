"""Deterministic generated text, SSE framing and chat completion payloads (pure).

The text is a function of (model, prompt, chunk count) only, so every attempt of the same
request yields byte-identical content and tests can compare what arrived through retries
with `expected_text`.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any, Literal

_WORDS = (
    "stream", "token", "river", "signal", "packet", "window", "buffer", "retry", "latency", "quiet",
    "bright", "amber", "copper", "meadow", "harbor", "lantern", "orbit", "pixel", "quartz", "ripple",
    "summit", "timber", "velvet", "willow", "zephyr", "beacon", "canyon", "delta", "ember", "fable",
    "glacier", "horizon", "island", "jasmine", "kernel", "lagoon", "marble", "nectar", "oasis", "prism",
    "quiver", "raven", "saffron", "tundra", "umbra", "vertex", "wander", "yarrow", "anchor", "breeze",
)  # fmt: skip

FrameKind = Literal["head", "pre", "content", "post"]
"""head: sent right after the headers; pre: sent with the first token (after the time to first
token); content: one content delta each; post: after the last content (the last post frame
is the terminal marker)."""


@dataclass(frozen=True)
class Frame:
    """One encoded SSE event of a stream, with its role for fault placement."""

    kind: FrameKind
    data: bytes
    sequence_number: int | None = None


def canonical_prompt(prompt: object) -> str:
    """The JSON text of `prompt` with sorted keys, the input of the content hash."""
    return json.dumps(prompt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def generate_pieces(model: str, prompt: object, chunks: int) -> list[str]:
    """The content deltas for a request: `chunks` words, space-separated once joined.

    Args:
        model: the requested model.
        prompt: chat `messages` or responses `input`, as JSON-compatible data.
        chunks: number of content deltas.
    """
    # A JSON body may escape a lone surrogate ("\ud800"): hashed as it is, not refused.
    digest = hashlib.sha256(f"{model}\0{canonical_prompt(prompt)}".encode("utf-8", "surrogatepass")).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    words = [rng.choice(_WORDS) for _ in range(chunks)]
    if words:
        words[0] = words[0].capitalize()
    return [word if index == 0 else f" {word}" for index, word in enumerate(words)]


def expected_text(model: str, prompt: object, chunks: int = 20) -> str:
    """The fault-free text the fake answers for (model, prompt, chunks).

    Args:
        model: the requested model.
        prompt: chat `messages` or responses `input` exactly as sent.
        chunks: the content chunk count the request was served with.
    """
    return "".join(generate_pieces(model, prompt, chunks))


def prompt_tokens(prompt: object) -> int:
    """A deterministic stand-in for the prompt's token count (about 4 characters a token)."""
    return max(1, len(canonical_prompt(prompt)) // 4)


def sse_data(payload: object) -> bytes:
    """A ``data:`` SSE event (the chat completions dialect)."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def sse_event(event: str, payload: object) -> bytes:
    """An ``event:`` + ``data:`` SSE event (the responses dialect)."""
    return f"event: {event}\n".encode() + sse_data(payload)


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
FINGERPRINT = "fp_fake0001"


def chat_usage(prompt: object, chunks: int) -> dict[str, Any]:
    """Chat `usage` consistent with the content: completion_tokens = content chunks."""
    prompt_count = prompt_tokens(prompt)
    return {
        "prompt_tokens": prompt_count,
        "completion_tokens": chunks,
        "total_tokens": prompt_count + chunks,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _padding(seed: str, count: int) -> str:
    return hashlib.blake2s(f"{seed}\0{count}".encode(), digest_size=8).hexdigest()[: 2 + count % 13]


def chat_frames(
    *, completion_id: str, created: int, model: str, prompt: object, chunks: int, include_usage: bool
) -> list[Frame]:
    """Every frame of a streamed chat completion: role, contents, stop, [usage], [DONE].

    Like OpenAI's, every chunk ends with an `obfuscation` string of varying length (OpenAI's
    is random, to blur the size of the text; here it is derived from the id and the count).
    """
    count = 0

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += 1
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = None
        body["obfuscation"] = _padding(completion_id, count)
        return body

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    frames = [Frame("pre", sse_data(chunk(choice({"role": "assistant", "content": "", "refusal": None}))))]
    frames += [
        Frame("content", sse_data(chunk(choice({"content": piece}))))
        for piece in generate_pieces(model, prompt, chunks)
    ]
    frames.append(Frame("post", sse_data(chunk(choice({}, "stop")))))
    if include_usage:
        usage_chunk = chunk([])
        usage_chunk["usage"] = chat_usage(prompt, chunks)
        frames.append(Frame("post", sse_data(usage_chunk)))
    frames.append(Frame("post", DONE))
    return frames


def chat_completion(
    *, completion_id: str, created: int, model: str, prompt: object, chunks: int
) -> dict[str, Any]:
    """A non-streamed `chat.completion` object carrying the same text as the stream."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": expected_text(model, prompt, chunks),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": chat_usage(prompt, chunks),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }

"""Responses API payloads: the `response` object and the streamed event sequence (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._content import Frame, FrameKind, generate_pieces, prompt_tokens, sse_event


@dataclass(frozen=True)
class ResponseSeed:
    """What a response is built from: ids, time, model, prompt and size."""

    response_id: str
    item_id: str
    created_at: int
    model: str
    prompt: object
    chunks: int
    background: bool = False


def usage(seed: ResponseSeed) -> dict[str, Any]:
    """Responses `usage`: output_tokens = content chunks."""
    input_tokens = prompt_tokens(seed.prompt)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": seed.chunks,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + seed.chunks,
    }


def message_item(seed: ResponseSeed, text: str, status: str) -> dict[str, Any]:
    """The assistant `message` output item; an empty content list while in progress."""
    content = [] if status == "in_progress" else [output_text(text)]
    return {"id": seed.item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text(text: str) -> dict[str, Any]:
    """An `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_object(
    seed: ResponseSeed, *, status: str, error: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `response` object at a given status (in_progress, completed or failed)."""
    done = status == "completed"
    text = "".join(generate_pieces(seed.model, seed.prompt, seed.chunks))
    return {
        "id": seed.response_id,
        "object": "response",
        "created_at": seed.created_at,
        "status": status,
        "background": seed.background,
        "completed_at": seed.created_at if done else None,
        "error": error,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": seed.model,
        "output": [message_item(seed, text, "completed")] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage(seed) if done else None,
        "user": None,
        "metadata": {},
    }


def failed_response(seed: ResponseSeed, code: str, message: str) -> dict[str, Any]:
    """The `response` object of a `response.failed` event."""
    return response_object(seed, status="failed", error={"code": code, "message": message})


def response_frames(seed: ResponseSeed) -> list[Frame]:
    """Every event of a streamed response, `sequence_number` 0, 1, 2, ... in order."""
    pieces = generate_pieces(seed.model, seed.prompt, seed.chunks)
    text = "".join(pieces)
    where = {"item_id": seed.item_id, "output_index": 0}
    part = {**where, "content_index": 0}
    steps: list[tuple[FrameKind, str, dict[str, Any]]] = [
        ("head", "response.created", {"response": response_object(seed, status="in_progress")}),
        ("head", "response.in_progress", {"response": response_object(seed, status="in_progress")}),
        (
            "pre",
            "response.output_item.added",
            {"output_index": 0, "item": message_item(seed, "", "in_progress")},
        ),
        ("pre", "response.content_part.added", {**part, "part": output_text("")}),
    ]
    steps += [
        ("content", "response.output_text.delta", {**part, "delta": piece, "logprobs": []})
        for piece in pieces
    ]
    steps += [
        ("post", "response.output_text.done", {**part, "text": text, "logprobs": []}),
        ("post", "response.content_part.done", {**part, "part": output_text(text)}),
        (
            "post",
            "response.output_item.done",
            {"output_index": 0, "item": message_item(seed, text, "completed")},
        ),
        ("post", "response.completed", {"response": response_object(seed, status="completed")}),
    ]
    return [
        Frame(kind, sse_event(event, {"type": event, "sequence_number": number, **payload}), number)
        for number, (kind, event, payload) in enumerate(steps)
    ]

"""What a call records when it finishes: its answer (captured, cached) and its `CallFinished` event.

Built once from the call's state by `Call.finish`, which emits the event and keeps the text the
caches may have. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._dialect import Dialect
from ._events import CallFinished
from ._json import parse_json
from ._taxonomy import Outcome

if TYPE_CHECKING:
    from ._call import Call


def answer_messages(
    dialect: Dialect,
    delivered: Sequence[bytes],
    body: Mapping[str, Any] | None,
    outcome: Outcome,
    *,
    stream: bool,
) -> list[dict[str, Any]]:
    """What the caller was given, as the GenAI output messages: the whole JSON answer (`body`,
    or what `delivered` holds for a caller that did not stream), else the stream's frames
    released so far. A message the answer leaves unfinished ends with the call's outcome
    (`error`, `cancelled`, `abandoned`)."""
    unfinished = "stop" if outcome == "ok" else outcome
    if body is None and not stream:
        try:  # a cached answer, served whole
            body = parse_json(b"".join(delivered)) if delivered else None
        except ValueError:
            body = None
        if not isinstance(body, Mapping):
            return []
    if body is not None:
        return dialect.answer_messages(body, unfinished)
    return dialect.output_messages(b"".join(delivered), unfinished)


def cacheable(dialect: Dialect, delivered: Sequence[bytes], body: Mapping[str, Any] | None) -> str | None:
    """The text to keep in the answer caches, or None when replaying the text would not give
    the same answer (one cut short (`length`), filtered or with tool calls would be replayed as
    a complete text answer)."""
    if body is not None:
        return dialect.cacheable_answer(body)
    return dialect.cacheable_text(b"".join(delivered))


def call_finished(
    call: Call, outcome: Outcome, now: float, output_messages: Sequence[Mapping[str, Any]] | None
) -> CallFinished:
    """The event that ends `call`, finished with `outcome` at `now` (monotonic)."""
    facts = call.facts
    stream = call.stream
    return CallFinished(
        call_id=call.call_id,
        outcome=outcome,
        error_type=None if outcome in ("ok", "cancelled", "abandoned") else call.error_type,
        duration=now - call.started_at,
        attempts=call.attempts,
        time_to_first_token=call.time_to_first_token,
        input_tokens=facts.input_tokens,
        output_tokens=facts.output_tokens,
        finish_reasons=tuple(facts.finish_reasons),
        response_model=facts.response_model,
        response_id=facts.response_id or call.background_id,
        cached_input_tokens=facts.cached_input_tokens,
        reasoning_output_tokens=facts.reasoning_output_tokens,
        service_tier=facts.service_tier,
        system_fingerprint=facts.system_fingerprint,
        max_chunk_gap=stream.max_gap if stream is not None and stream.chunks > 1 else None,
        chunks=stream.chunks if stream is not None else 0,
        fallback=call.served_by.kind if call.served_by is not None else None,
        output_messages=output_messages,
    )

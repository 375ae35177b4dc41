"""What a call records when it finishes: its answer's texts and its `CallFinished` event.

Built once from the call's state by `Call.finish`, which emits the event and keeps the text the
caches may have. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._dialect import Dialect
from ._events import CallFinished
from ._taxonomy import Outcome

if TYPE_CHECKING:
    from ._call import Call


def answer_texts(
    dialect: Dialect,
    delivered: Sequence[bytes],
    body: Mapping[str, Any] | None,
    *,
    output_text: bool,
    cache: bool,
) -> tuple[str | None, str | None]:
    """The text of an answer the upstream served, and the text to keep in the caches.

    The first is None unless `output_text`, the second unless `cache`; the second is also None
    when replaying the text would not give the same answer (one cut short (`length`), filtered
    or with tool calls would be replayed as a complete text answer).

    Args:
        delivered: the stream's bytes released to the caller, when it had no whole `body`.
        body: the JSON answer of a non-streaming request, or None.
    """
    frames = b"".join(delivered) if body is None else b""
    text: str | None = None
    kept: str | None = None
    if output_text:
        text = dialect.answer_text(body) if body is not None else dialect.text(frames)
    if cache:
        kept = dialect.cacheable_answer(body) if body is not None else dialect.cacheable_text(frames)
    return text, kept


def call_finished(call: Call, outcome: Outcome, now: float, output_text: str | None) -> CallFinished:
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
        response_id=facts.response_id,
        cached_input_tokens=facts.cached_input_tokens,
        reasoning_output_tokens=facts.reasoning_output_tokens,
        service_tier=facts.service_tier,
        system_fingerprint=facts.system_fingerprint,
        max_chunk_gap=stream.max_gap if stream is not None and stream.chunks > 1 else None,
        chunks=stream.chunks if stream is not None else 0,
        fallback=call.served_by.kind if call.served_by is not None else None,
        output_text=output_text,
    )

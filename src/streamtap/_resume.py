"""Reading a background response again: where the caller is in it, and the URL that streams it.

A background response (`background=True`) goes on upstream whatever becomes of the stream that
reads it. A stream that broke is read again from the event after the caller's last
(`last_sequence_number`, `retrieve_url`), or from its start before the first content; a
server that replays what the caller has is caught by each event's `sequence_number`. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, unquote_plus

from ._json import parse_json
from ._sse import parse_frame, split_frames

_RETRIEVE_PARAMS = frozenset({"stream", "starting_after"})


def last_sequence_number(delivered: Sequence[bytes]) -> int | None:
    """The sequence_number of the last event the caller got, for resuming a background response.

    `delivered` holds the bytes released to the caller, always whole frames; the last one that
    carries a sequence number (a comment carries none) is where a resume starts after.
    """
    for chunk in reversed(delivered):
        for frame in reversed(split_frames(chunk)):
            number = sequence_number(frame)
            if number is not None:
                return number
    return None


def sequence_number(frame: bytes) -> int | None:
    """The `sequence_number` of one whole SSE frame's event, or None (a comment, no number)."""
    try:
        payload = parse_json(parse_frame(frame).data)
    except ValueError:
        return None
    number = payload.get("sequence_number") if isinstance(payload, dict) else None
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def retrieve_url(url: str, response_id: str, after: int | None) -> str:
    """The URL that streams background response `response_id` again, from its start (`after` is
    None) or after the event numbered `after`.

    `url` is the URL the response was created at (`.../responses[?query]`). Its query stays: it
    routes the request (Azure OpenAI refuses one without its `api-version`). A `stream` or
    `starting_after` in it is replaced, not repeated beside the engine's own.
    """
    path, _, query = url.partition("?")
    params = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) not in _RETRIEVE_PARAMS]
    params.append("stream=true")
    if after is not None:
        params.append(f"starting_after={after}")
    # The id is the upstream's to send: quoted whole, whatever it holds.
    return f"{path}/{quote(response_id, safe='', errors='replace')}?{'&'.join(params)}"

"""How a call recovers from a failed attempt: the pure rules `Call.attempt_failed` decides by.

Before commit a failure is retried after a wait (`retry_wait`), its background response
rejoined while it runs (`still_running`), or served by the next fallback (`next_fallback`); after commit the one
repair is resuming a background response (`resume_after`). A call that gives up for a
suppressed retry reports `give_up_type`. No I/O and no events: the call emits those, spends the
retry budget and asks the breaker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ._backoff import exceeds_max_retry_after, retry_delay
from ._errors import Failure, blames_request
from ._fallback import Fallback, Route, fallback_route
from ._policy import Policy
from ._resume import last_sequence_number
from ._taxonomy import ErrorType, SuppressCause

# Failures that no other model or upstream fixes (`falls_back`).
_NO_FALLBACK: frozenset[ErrorType] = frozenset({"auth", "bad_request"})
# Failures of the primary route that its last good answer must not hide: a model this key
# cannot reach (gone, renamed, never granted) is for the caller to learn, not an outage.
NO_CACHE: frozenset[ErrorType] = frozenset({"not_found"})
# What says a background response is over: it failed (`response.failed`, an error event), or is
# gone (a 404 to reading it again). Any other failure is of the way to it, not of the response:
# it goes on upstream, so a retry before commit rejoins it from its start rather than create (and
# pay for) a second one, and no fallback creates another.
_ENDED: frozenset[ErrorType] = frozenset({"upstream_error_event", "not_found"})
# Failures of a committed background response's stream (it broke) that reading it again after
# the caller's last event repairs.
_RESUMABLE: frozenset[ErrorType] = frozenset({"stream_interrupted", "stream_truncated", "stall"})
# A give-up for these suppressed retries reports the cause, not the failure that was not retried.
_GIVE_UP_TYPES: dict[SuppressCause, ErrorType] = {"budget": "budget_exhausted", "breaker": "circuit_open"}


def retry_wait(
    policy: Policy,
    retries: int,
    waited: float,
    deadline: float | None,
    headers: Mapping[str, str],
    now: float,
    wall: float,
    rng: Callable[[], float],
) -> float | SuppressCause:
    """The wait before the next retry of a route, or what stops it.

    Stopped by the policy's `max_attempts`, a Retry-After over its `max_retry_after`, a total
    wait over its `max_retry_wait`, or a wait that reaches the call's `deadline`. The breaker
    and the retry budget are the call's to ask after this says yes (the budget is spent only on
    a retry that goes).

    Args:
        retries: retries of the route so far.
        waited: seconds the call has waited for retries so far.
        headers: the failed attempt's response headers (empty when there was no response).
        now: monotonic seconds; `wall`: epoch seconds, for an HTTP-date Retry-After.
        rng: the backoff's jitter; called once when the wait is computed.
    """
    if retries + 1 >= policy.max_attempts:
        return "attempts"
    if exceeds_max_retry_after(policy, headers, wall):
        return "deadline"
    delay = retry_delay(policy, retries, headers, wall, rng)
    if waited + delay > policy.max_retry_wait:
        return "deadline"
    if deadline is not None and now + delay >= deadline:
        return "deadline"
    return delay


def falls_back(failure: Failure) -> bool:
    """Whether another route may serve after `failure`: not after a redirect, nor after what
    no other model or upstream fixes (_NO_FALLBACK), nor after an error event that blames the
    request as a 400 would (`blames_request`: the prompt is too long, or refused), which a
    fallback would meet again or a cached answer would hide."""
    if failure.status_code is not None and 300 <= failure.status_code < 400:
        return False  # a redirect goes back to the caller, whose client may follow it
    return failure.error_type not in _NO_FALLBACK and not blames_request(failure)


def give_up_type(cause: SuppressCause) -> ErrorType | None:
    """The error type of a call that gives up because `cause` suppressed its retry; None for its
    last failure's own."""
    return _GIVE_UP_TYPES.get(cause)


def still_running(failure: Failure, response_id: str | None) -> str | None:
    """The background response `response_id` (None: none known yet) if it still runs upstream
    after `failure` of one of the call's attempts, else None."""
    return None if failure.error_type in _ENDED else response_id


def resume_after(
    failure: Failure, background: bool, response_id: str | None, delivered: Sequence[bytes]
) -> int | None:
    """The sequence number after which a committed call's background response is read again,
    or None when the failure cannot be repaired (after commit that is the only invisible repair).

    Args:
        background: the response runs upstream whatever becomes of the stream reading it.
        response_id: the response's id, once its stream gave it.
        delivered: the bytes released to the caller, whose last event is resumed after.
    """
    if not background or response_id is None:
        return None
    # The stream broke, or the resume request itself failed in a way a retry may fix.
    if failure.error_type not in _RESUMABLE and not failure.retryable:
        return None
    return last_sequence_number(delivered)


def next_fallback(
    fallbacks: list[Fallback], primary: Route, suffix: str, *, cache_allowed: bool, cache_only: bool
) -> tuple[Fallback, Route] | None:
    """Take from the front of `fallbacks` the next one that can serve the call, with its route;
    None once none is left. Those passed over are dropped: a call tries each at most once.

    Args:
        primary: the call's own route, which each fallback rewrites.
        suffix: the API's path suffix (`/chat/completions`, `/responses`).
        cache_allowed: False once the primary route failed in a way in `NO_CACHE`.
        cache_only: only the cache may serve: the call's total timeout ran out (a request
            upstream could not finish in time, and would only end the call with its own timeout
            instead of the call's), or a background response the call created may still run
            upstream (another route would create a second one beside it).
    """
    while fallbacks:
        fallback = fallbacks.pop(0)
        if fallback.kind == "cache" and not cache_allowed:
            continue
        if cache_only and fallback.kind != "cache":
            continue
        route = fallback_route(primary, fallback, suffix)
        if route is not None:
            return fallback, route
    return None

"""The closed vocabularies that metrics, dashboards, alerts and docs depend on.

Change a value here only together with dashboards/, alerts/ and docs/metrics.md.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

ErrorType = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "stream_interrupted",
    "stream_truncated",
    "stall",
    "first_token_timeout",
    "upstream_error_event",
    "bad_response",
    "bad_request",
    "auth",
    "not_found",
    "circuit_open",
    "budget_exhausted",
    "other",
]
ERROR_TYPES: Final[tuple[ErrorType, ...]] = get_args(ErrorType)

Phase = Literal["connect", "headers", "first_token", "streaming"]
PHASES: Final[tuple[Phase, ...]] = get_args(Phase)

Outcome = Literal["ok", "error", "cancelled", "abandoned"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

Api = Literal["chat_completions", "responses", "other"]
APIS: Final[tuple[Api, ...]] = get_args(Api)

SuppressCause = Literal["budget", "breaker", "deadline", "attempts"]
SUPPRESS_CAUSES: Final[tuple[SuppressCause, ...]] = get_args(SuppressCause)

FallbackKind = Literal["model", "upstream", "non_streaming", "cache"]
FALLBACK_KINDS: Final[tuple[FallbackKind, ...]] = get_args(FallbackKind)

BreakerState = Literal["closed", "half_open", "open"]
BREAKER_STATES: Final[tuple[BreakerState, ...]] = get_args(BreakerState)
# The value streamtap_circuit_state reports for each state.
BREAKER_STATE_VALUE: Final[dict[BreakerState, int]] = {"closed": 0, "half_open": 1, "open": 2}

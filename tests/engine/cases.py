"""The fault catalogue and what the caller must see for each fault, shared by both doors."""

from __future__ import annotations

from dataclasses import dataclass

import openai

AFTER = 2  # content chunks delivered before an after-commit fault


@dataclass(frozen=True)
class Case:
    id: str
    spec: str  # the fault of the first attempt; later attempts are clean
    error_type: str | None  # None: served, text identical to a fault-free run
    attempts: int
    prefix: int = 0  # pieces delivered before the error
    sdk_error: type[Exception] | None = None  # the SDK's own exception, when not retried
    # In process, what the SDK raises itself when it fails on an event the engine passed on
    # unparsed (the proxy, which checks every such event, ends the stream with an error event).
    in_process_error: type[Exception] | None = None
    apis: tuple[str, ...] = ("chat", "responses")

    @property
    def stalls(self) -> bool:
        """Whether the fault is a stall, which only a timeout ends (tests/engine/conftest.py)."""
        return "stall" in self.spec


BEFORE_COMMIT = [
    Case("429-retry-after", "status=429;retry_after=0", None, 2),
    Case("429-retry-after-ms", "status=429;retry_after_ms=5", None, 2),
    Case(
        "429-insufficient-quota",  # an account out of credit: no wait fixes it
        "status=429;error_code=insufficient_quota",
        "rate_limited",
        1,
        sdk_error=openai.RateLimitError,
    ),
    Case("500", "status=500", None, 2),
    Case("502", "status=502", None, 2),
    Case("503", "status=503", None, 2),
    Case("504", "status=504", None, 2),
    Case(
        "503-should-retry-false",
        "status=503;should_retry=false",
        "server_error",
        1,
        sdk_error=openai.InternalServerError,
    ),
    Case("400-should-retry-true", "status=400;should_retry=true", None, 2),
    Case("400", "status=400", "bad_request", 1, sdk_error=openai.BadRequestError),
    Case("401", "status=401", "auth", 1, sdk_error=openai.AuthenticationError),
    Case("404", "status=404", "not_found", 1, sdk_error=openai.NotFoundError),
    Case("reset", "reset", None, 2),
    Case("drop", "drop_after=0", None, 2),
    Case("truncate", "truncate_after=0", None, 2),
    Case("stall-first", "stall_first=3", None, 2),
    Case("error-event", "error_after=0", None, 2),
    Case("error-event-rate-limit", "error_after=0;error_code=rate_limit_exceeded", None, 2),
    Case("error-event-not-retryable", "error_after=0;error_code=invalid_prompt", "upstream_error_event", 1),
    Case("response-failed", "error_after=0;error_kind=failed", None, 2, apis=("responses",)),
    Case("bare-error-event", "error_after=0;error_kind=bare", None, 2, apis=("responses",)),
    Case("malformed", "malformed_after=0", None, 2),
    Case("garbled", "garbled_after=0", None, 2),
    Case("keepalive", "keepalive=3", None, 1),
]

AFTER_COMMIT = [
    Case("drop", f"drop_after={AFTER}", "stream_interrupted", 1, AFTER),
    Case("truncate", f"truncate_after={AFTER}", "stream_truncated", 1, AFTER),
    Case("stall", f"stall_after={AFTER};stall=3", "stall", 1, AFTER),
    Case("error-event", f"error_after={AFTER}", "upstream_error_event", 1, AFTER),
    Case(
        "response-failed",
        f"error_after={AFTER};error_kind=failed",
        "upstream_error_event",
        1,
        AFTER,
        apis=("responses",),
    ),
    Case(
        "bare-error-event",  # a gateway's `data: {"error": ...}` in a responses stream
        f"error_after={AFTER};error_kind=bare",
        "upstream_error_event",
        1,
        AFTER,
        apis=("responses",),
    ),
    Case("malformed", f"malformed_after={AFTER}", "bad_response", 1, AFTER),
    Case("garbled", f"garbled_after={AFTER}", "bad_response", 1, AFTER, in_process_error=UnicodeDecodeError),
]

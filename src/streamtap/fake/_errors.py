"""The real API's error JSON bodies and retry headers for error statuses (pure)."""

from __future__ import annotations

import email.utils
from typing import Any

from ._faults import FaultSpec

# (type, code, message) per status, as the real API sends them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", "invalid_value", "Invalid value for 'messages': the fake rejected it."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported.",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    409: (
        "invalid_request_error",
        "conflict",
        "The request conflicts with the current state of the resource.",
    ),
    422: ("invalid_request_error", "unprocessable_entity", "The request could not be processed."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in a moment.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The API's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status_body(status: int, code: str | None = None) -> dict[str, Any]:
    """The error body the real API sends with `status`; `code` overrides the default code."""
    type_, default_code, message = _ERRORS[status]
    return error_body(message, type_, code or default_code)


def status_headers(fault: FaultSpec, now: float) -> list[tuple[str, str]]:
    """Retry-related headers a `status=` fault asks for.

    Args:
        fault: the fault (retry_after, retry_after_ms, retry_after_date, should_retry).
        now: the current wall-clock time (epoch seconds), for the HTTP-date form.
    """
    headers: list[tuple[str, str]] = []
    if fault.retry_after is not None:
        value = fault.retry_after
        headers.append(("retry-after", str(int(value)) if value == int(value) else str(value)))
    if fault.retry_after_ms is not None:
        headers.append(("retry-after-ms", str(fault.retry_after_ms)))
    if fault.retry_after_date is not None:
        headers.append(("retry-after", email.utils.formatdate(now + fault.retry_after_date, usegmt=True)))
    if fault.should_retry is not None:
        headers.append(("x-should-retry", "true" if fault.should_retry else "false"))
    return headers


def stream_error_message(code: str) -> str:
    """The message of an in-stream error event."""
    if code == "rate_limit_exceeded":
        return "Rate limit reached while streaming. Please try again."
    return "The server had an error while processing your request. Sorry about that!"

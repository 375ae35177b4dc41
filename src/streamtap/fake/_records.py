"""What reached the fake: one frozen record per request, secrets redacted."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

REDACTED = "[redacted]"
# Records kept: plenty for any test, and a long-running fake (the compose stack, a load
# benchmark) holds a bounded log instead of one that grows with every request it serves.
LOG_CAPACITY = 10_000

# Header names whose values are credentials; their values are never stored.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "openai-api-key", "cookie", "set-cookie"}
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it.

    Attributes:
        method, path, query: the request line (query without the leading "?").
        model: the requested model (body `model`), None when absent.
        stream: the body's `stream` flag (or `stream=true` in the query for retrievals).
        retry_count: the `x-stainless-retry-count` header value, if sent.
        traceparent: the W3C `traceparent` header value, if sent.
        fault: the normalised fault spec applied ("" when served clean).
        fault_source: "header", "queue", "incident" or "".
        status: the HTTP status sent (0 when the connection was reset before headers).
        headers: (name, value) pairs, lower-case names; credential values are `[redacted]`.
        at_s: seconds since the server started.
        request_id: the `x-request-id` sent with the answer (None when it had no headers).
    """

    method: str
    path: str
    query: str
    model: str | None
    stream: bool
    retry_count: str | None
    traceparent: str | None
    fault: str
    fault_source: str
    status: int
    headers: tuple[tuple[str, str], ...]
    at_s: float
    request_id: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key == lowered), None)


def redact_headers(
    headers: Iterable[tuple[str, str]], secrets: Iterable[str] = ()
) -> tuple[tuple[str, str], ...]:
    """Lower-case names; values of credential headers, or containing a known secret, redacted.

    Args:
        headers: the raw (name, value) pairs.
        secrets: extra values (e.g. the configured API key) that must never be stored.
    """
    known = [secret for secret in secrets if secret]
    redacted: list[tuple[str, str]] = []
    for name, value in headers:
        key = name.lower()
        if key in _SECRET_HEADERS or "key" in key or "token" in key or any(s in value for s in known):
            value = REDACTED
        redacted.append((key, value))
    return tuple(redacted)


class RequestLog:
    """The most recent `capacity` `RequestRecord`s, thread-safe, with a snapshot reader.

    Args:
        capacity: how many records to keep; the oldest is dropped when a new one arrives.
    """

    def __init__(self, capacity: int = LOG_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._records: deque[RequestRecord] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        """Add one record (dropping the oldest when full)."""
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        """A copy of the records so far, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()

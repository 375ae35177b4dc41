"""What the call machine tells a driver to do next, and the error answer it may return."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._fallback import Route

# Header fields as bytes, as they came on the wire.
RawHeaders = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Send:
    """Send one attempt."""

    method: str
    url: str
    body: bytes | None
    route: Route
    attempt: int
    carrier: Mapping[str, str]
    # A resume of a committed background response: the sequence number of the last event the
    # caller has, which the upstream is asked to start after.
    after: int | None = None

    @property
    def resume(self) -> bool:
        return self.after is not None


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class Serve:
    """Answer without the upstream (a cached answer), already encoded for the caller."""

    body: bytes
    stream: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop: the driver returns `error_response` or raises per `Call.final_failure`."""


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """The last attempt's error status, returned as is so the SDK raises its own exception."""

    status_code: int
    headers: RawHeaders  # as the upstream sent them
    body: bytes


Step = Send | Wait | Serve | GiveUp

"""Server configuration and per-request overrides (`x-fake-chunks`, `x-fake-ttft`, `x-fake-gap`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ._select import Incident

MAX_CHUNKS = 100_000
MAX_SECONDS = 3600.0
HOST_ACCEPTED = (
    "an interface address or name, e.g. 127.0.0.1 or 0.0.0.0 (not empty: that binds every interface)"
)
FAKE_KEY_ACCEPTED = "None (no key needed) or a key that is not empty (that refuses every request)"


@dataclass(frozen=True)
class FakeConfig:
    """How the fake upstream serves.

    Args:
        chunks: content chunks per response (output tokens), 0..100000.
        ttft: seconds from the response headers to the first token.
        gap: seconds between two content chunks.
        api_key: when set, every endpoint answers 401 unless ``Authorization: Bearer <api_key>``.
        seed: seed of the incident RNG (reproducible incident runs).
        incidents: run-level fault windows, relative to server start.
        host: interface to bind; loopback by default.
        port: TCP port; 0 picks a free one.
        replay_on_resume: a retrieved response stream starts from its first event whatever
            ``starting_after`` says, as a server that cannot resume does.
    """

    chunks: int = 20
    ttft: float = 0.0
    gap: float = 0.0
    api_key: str | None = None
    seed: int = 0
    incidents: tuple[Incident, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    replay_on_resume: bool = False

    def __post_init__(self) -> None:
        check_chunks("chunks", self.chunks)
        check_seconds("ttft", self.ttft)
        check_seconds("gap", self.gap)
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host={self.host!r}; accepted: {HOST_ACCEPTED}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            # An empty or all-space key is no secret to echo; any other value is not shown.
            shown = repr(self.api_key) if isinstance(self.api_key, str) else type(self.api_key).__name__
            raise ValueError(f"api_key={shown}; accepted: {FAKE_KEY_ACCEPTED}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port!r}; accepted: 0..65535 (0 picks a free port)")
        object.__setattr__(self, "incidents", tuple(self.incidents))
        for incident in self.incidents:
            if not isinstance(incident, Incident):
                raise ValueError(
                    f"incidents: {incident!r} is not an Incident(start_s, end_s, probability, spec)"
                )


def check_chunks(name: str, value: int) -> int:
    """Validate a chunk count; ValueError names `name` and the accepted range."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CHUNKS:
        raise ValueError(f"{name}={value!r}; accepted: an integer 0..{MAX_CHUNKS}")
    return value


def check_seconds(name: str, value: float) -> float:
    """Validate a duration; ValueError names `name` and the accepted range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}; accepted: seconds 0..{MAX_SECONDS:g}")
    if not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"{name}={value!r}; accepted: seconds 0..{MAX_SECONDS:g}")
    return float(value)


@dataclass(frozen=True)
class Overrides:
    """Per-request overrides read from `x-fake-*` headers (None: use the server's value)."""

    chunks: int | None = None
    ttft: float | None = None
    gap: float | None = None


def parse_overrides(headers: Mapping[str, str]) -> Overrides:
    """Read `x-fake-chunks`, `x-fake-ttft`, `x-fake-gap` from lower-cased `headers`.

    Raises:
        ValueError: naming the header and its accepted values.
    """
    chunks = ttft = gap = None
    if (text := headers.get("x-fake-chunks")) is not None:
        try:
            chunks = check_chunks("x-fake-chunks", int(text))
        except ValueError:
            raise ValueError(f"x-fake-chunks={text!r}; accepted: an integer 0..{MAX_CHUNKS}") from None
    if (text := headers.get("x-fake-ttft")) is not None:
        ttft = _seconds_header("x-fake-ttft", text)
    if (text := headers.get("x-fake-gap")) is not None:
        gap = _seconds_header("x-fake-gap", text)
    return Overrides(chunks, ttft, gap)


def _seconds_header(name: str, text: str) -> float:
    try:
        return check_seconds(name, float(text))
    except ValueError:
        raise ValueError(f"{name}={text!r}; accepted: seconds 0..{MAX_SECONDS:g}") from None

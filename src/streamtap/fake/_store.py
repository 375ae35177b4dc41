"""Stored background responses, so a stream can be resumed with `starting_after`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._content import Frame
from ._responses import ResponseSeed


@dataclass(frozen=True)
class StoredResponse:
    """A background response: how it was built, its full clean event stream and final object."""

    seed: ResponseSeed
    frames: tuple[Frame, ...]
    final: dict[str, Any]

    def frames_after(self, starting_after: int | None) -> list[Frame]:
        """The events with sequence_number > `starting_after` (all of them when None)."""
        if starting_after is None:
            return list(self.frames)
        return [
            frame
            for frame in self.frames
            if frame.sequence_number is not None and frame.sequence_number > starting_after
        ]


class ResponseStore:
    """A bounded, thread-safe map of response id to `StoredResponse` (oldest evicted first).

    Args:
        capacity: how many responses to keep; bounds memory in long load runs.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity!r}; accepted: an integer >= 1")
        self._capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, seed: ResponseSeed, frames: Sequence[Frame], final: dict[str, Any]) -> None:
        """Store a response under `seed.response_id`."""
        with self._lock:
            self._items[seed.response_id] = StoredResponse(seed, tuple(frames), final)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None."""
        with self._lock:
            return self._items.get(response_id)

    def clear(self) -> None:
        """Forget every stored response."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

"""A recorder that keeps every call's CallFinished: how the engine says a call ended."""

from __future__ import annotations

from typing import Any

from streamtap import CallFinished


class Finished:
    """Keeps `calls`, the CallFinished of every call; fails the test on a telemetry error."""

    def __init__(self) -> None:
        self.calls: list[CallFinished] = []

    def start_call(self, event: Any) -> Finished:
        return self

    def on_event(self, event: Any) -> None:
        if isinstance(event, CallFinished):
            self.calls.append(event)

    def breaker_changed(self, event: Any) -> None:
        pass

    def telemetry_failed(self, error: BaseException) -> None:
        raise AssertionError(error)

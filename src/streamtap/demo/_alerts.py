"""Alert notifications as the demo reports them: pure bookkeeping over Alertmanager webhooks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AlertEvent:
    """One alert delivered to the demo's webhook: it fired, or it resolved.

    Args:
        name: the alertname label.
        status: "firing" or "resolved".
        severity: the severity label ("" when absent).
        at: seconds since the demo started when the demo saw the notification.
        summary: the summary annotation.
    """

    name: str
    status: str
    severity: str
    at: float
    summary: str


class AlertLog:
    """The alert events seen so far; a notification Alertmanager repeats is counted once."""

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []
        self._seen: set[tuple[str, str, str]] = set()

    def update(self, alerts: Iterable[Mapping[str, Any]], at: float) -> list[AlertEvent]:
        """Record new events among `alerts` (webhook alert objects) and return them.

        Args:
            alerts: every alert of every notification received so far, in arrival order.
            at: seconds since the demo started.
        """
        new = []
        for alert in alerts:
            labels = alert.get("labels", {})
            name = str(labels.get("alertname", "?"))
            status = str(alert.get("status", "firing"))
            # One firing and one resolved per alert instance, whatever Alertmanager resends.
            key = (name, str(alert.get("startsAt", "")), status)
            if key in self._seen:
                continue
            self._seen.add(key)
            summary = str(alert.get("annotations", {}).get("summary", ""))
            new.append(AlertEvent(name, status, str(labels.get("severity", "")), at, summary))
        self.events.extend(new)
        return new

    def fired(self) -> list[str]:
        """Alert names that fired, in first-firing order, once each."""
        return list(dict.fromkeys(e.name for e in self.events if e.status == "firing"))

    def resolved(self) -> list[str]:
        """Alert names that resolved, in first-resolution order, once each."""
        return list(dict.fromkeys(e.name for e in self.events if e.status == "resolved"))

    def firing_now(self) -> list[str]:
        """Alert names whose latest event is firing."""
        latest: dict[str, str] = {}
        for event in self.events:
            latest[event.name] = event.status
        return [name for name, status in latest.items() if status == "firing"]

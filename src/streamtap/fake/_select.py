"""Which fault a request gets: header, then queue, then incidents (no I/O; clock and RNG injected).

The selector is shared between the server's event loop thread and the test thread that
calls `enqueue` / `clear`, so every method takes one lock.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from ._faults import CLEAN, FaultSpec, parse_fault

Source = Literal["", "header", "queue", "incident"]


@dataclass(frozen=True)
class Incident:
    """A run-level fault window: from `start_s` to `end_s` seconds after server start, each
    generation request gets `spec` with `probability`.

    Args:
        start_s: window start, seconds after the server started (inclusive).
        end_s: window end (exclusive); None for an always-on incident (steady noise).
        probability: chance in [0, 1] that a request inside the window gets the fault.
        spec: the fault spec string (see `parse_fault`); `times` is not accepted here.
    """

    start_s: float
    end_s: float | None
    probability: float
    spec: str
    fault: FaultSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"incident start_s={self.start_s!r}; accepted: seconds >= 0")
        if self.end_s is not None and not (self.end_s > self.start_s):
            raise ValueError(f"incident end_s={self.end_s!r}; accepted: None or seconds > start_s")
        if not (0.0 <= self.probability <= 1.0):
            raise ValueError(f"incident probability={self.probability!r}; accepted: 0..1 (or 0%..100%)")
        fault = parse_fault(self.spec)
        if fault.times is not None:
            raise ValueError(f"incident spec {self.spec!r}: times is only accepted in headers and queues")
        object.__setattr__(self, "fault", fault)

    @classmethod
    def always(cls, probability: float, spec: str) -> Incident:
        """An incident active for the whole run (steady background noise)."""
        return cls(0.0, None, probability, spec)

    def active(self, elapsed_s: float) -> bool:
        """Whether the window covers `elapsed_s` seconds after server start."""
        return self.start_s <= elapsed_s and (self.end_s is None or elapsed_s < self.end_s)


def parse_incident(text: str) -> Incident:
    """Parse the CLI form ``WINDOW:PROBABILITY:SPEC``.

    Args:
        text: WINDOW is ``START-END`` or ``START-`` (open end) in seconds, or ``*`` (always);
            PROBABILITY is ``0.4`` or ``40%``; SPEC a fault spec, e.g. ``120-240:0.4:status=503``.

    Raises:
        ValueError: naming the malformed part and the accepted form.
    """
    form = "WINDOW:PROBABILITY:SPEC, e.g. '120-240:0.4:status=503', '*:2%:reset'"
    window, sep1, rest = text.partition(":")
    probability_text, sep2, spec = rest.partition(":")
    if not (sep1 and sep2):
        raise ValueError(f"incident {text!r}: expected {form}")
    if not spec.strip():  # it would inject nothing, silently
        raise ValueError(f"incident {text!r}: an empty SPEC; expected {form}")
    try:
        probability = (
            float(probability_text[:-1]) / 100 if probability_text.endswith("%") else float(probability_text)
        )
    except ValueError:
        raise ValueError(
            f"incident {text!r}: probability {probability_text!r}; accepted: 0..1 or 0%..100%"
        ) from None
    window = window.strip()
    if window == "*":
        return Incident.always(probability, spec)
    start_text, dash, end_text = window.partition("-")
    try:
        start = float(start_text)
        end = float(end_text) if end_text.strip() else None
    except ValueError:
        raise ValueError(f"incident {text!r}: window {window!r}; accepted: START-END, START- or *") from None
    if not dash:
        raise ValueError(f"incident {text!r}: window {window!r}; accepted: START-END, START- or *")
    if end is not None and not end > start:
        raise ValueError(
            f"incident {text!r}: window {window!r} ends before it starts; END must be over START"
        )
    return Incident(start, end, probability, spec)


@dataclass
class _Queued:
    fault: FaultSpec
    remaining: int


@dataclass(frozen=True)
class Selection:
    """The fault chosen for one request and where it came from ("" when clean by default)."""

    fault: FaultSpec
    source: Source


class FaultSelector:
    """Chooses a request's fault: first match wins among header, queue, incidents.

    Args:
        incidents: run-level windows, checked in order, one RNG draw per active incident.
        seed: seed of the incident RNG, so a run's incidents are reproducible.
        clock: monotonic seconds; elapsed time is measured from construction.
    """

    def __init__(
        self,
        incidents: Iterable[Incident] = (),
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._incidents = tuple(incidents)
        self._seed = seed
        self._rng = random.Random(seed)
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._queue: deque[_Queued] = deque()
        self._times_used: dict[str, int] = {}

    def mark_start(self) -> None:
        """Measure incident windows from now (the server calls this once it listens)."""
        with self._lock:
            self._start = self._clock()

    def enqueue(self, *specs: str) -> None:
        """Queue specs consumed one per generation request in order ("" = a clean request).

        A queued spec with ``times=N`` serves N requests. All specs are validated first,
        so a ValueError queues nothing.
        """
        parsed = [parse_fault(spec) for spec in specs]
        with self._lock:
            self._queue.extend(_Queued(fault, fault.times or 1) for fault in parsed)

    def clear(self) -> None:
        """Forget queued specs and `times` counters; restart the incident RNG from the seed."""
        with self._lock:
            self._queue.clear()
            self._times_used.clear()
            self._rng = random.Random(self._seed)

    @property
    def queued(self) -> int:
        """How many queued specs are still waiting."""
        with self._lock:
            return len(self._queue)

    def select(self, header: str | None, model: str | None, *, generation: bool = True) -> Selection:
        """Choose the fault for one request.

        Args:
            header: the `x-fake-fault` header value, if any (parsed here; may raise ValueError).
            model: the requested model, for `model=` filters.
            generation: False for requests that only header faults may affect (model list,
                response retrieval), so they never consume the queue or draw incidents.
        """
        header_fault = parse_fault(header) if header is not None else None
        with self._lock:
            if header_fault is not None and header_fault.applies_to(model):
                if header_fault.times is not None:
                    key = header or ""
                    used = self._times_used.get(key, 0)
                    if used >= header_fault.times:
                        return Selection(CLEAN, "header")
                    self._times_used[key] = used + 1
                return Selection(header_fault, "header")
            if not generation:
                return Selection(CLEAN, "")
            if self._queue:
                head = self._queue[0]
                if head.fault.applies_to(model):
                    head.remaining -= 1
                    if head.remaining <= 0:
                        self._queue.popleft()
                    return Selection(head.fault, "queue")
            elapsed = self._clock() - self._start
            for incident in self._incidents:
                # One draw per active incident keeps a seeded run reproducible.
                active = incident.active(elapsed) and incident.fault.applies_to(model)
                if active and self._rng.random() < incident.probability:
                    return Selection(incident.fault, "incident")
        return Selection(CLEAN, "")

"""What the demo shows while it runs: a rich live view on a terminal, plain log lines otherwise.

Both views take the same `Frame` (pure data); the text of every line and panel is built by pure
functions, so it is tested without a terminal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import IO, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ._alerts import AlertEvent
from ._stats import Snapshot
from ._story import StoryPhase


@dataclass(frozen=True)
class Frame:
    """Everything one refresh shows.

    Args:
        elapsed: seconds since the story started.
        duration: the run's planned seconds.
        phase: the current story phase.
        stats: the live numbers.
        alerts: the alert events so far, oldest first.
        firing: alert names firing now.
        notes: fixed lines about the setup (URLs, the stack).
        alerts_off: why no alerts are watched (no Prometheus and Alertmanager), or None.
    """

    elapsed: float
    duration: float
    phase: StoryPhase
    stats: Snapshot
    alerts: tuple[AlertEvent, ...]
    firing: tuple[str, ...]
    notes: tuple[str, ...]
    alerts_off: str | None = None


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def status_line(frame: Frame) -> str:
    """The one-line status of `--no-ui`."""
    s = frame.stats
    return (
        f"[{frame.elapsed:5.0f}s] {frame.phase.key}: {s.request_rate:.1f} calls/s, "
        f"errors {pct(s.error_ratio)} (upstream {pct(s.attempt_error_ratio)}), "
        f"retries {s.retry_rate:.1f}/s ({s.retries:.0f} total), fallbacks {s.fallbacks:.0f}, "
        f"ttft p50/p95/p99 {secs(s.ttft_p50)}/{secs(s.ttft_p95)}/{secs(s.ttft_p99)}, "
        f"breaker {s.breaker}, calls {s.calls:.0f}, failed {s.errors:.0f}"
    )


def phase_line(phase: StoryPhase) -> str:
    """The log line announcing a phase."""
    return f"[{phase.start_s:5.0f}s] phase {phase.key}: {phase.title}. Watch: {phase.watch}."


def alert_line(event: AlertEvent) -> str:
    """The log line of an alert notification."""
    text = f"[{event.at:5.0f}s] ALERT {event.status.upper()} {event.name}"
    if event.severity:
        text += f" ({event.severity})"
    return f"{text}: {event.summary}" if event.summary else text


class View(Protocol):
    def __enter__(self) -> View: ...
    def __exit__(self, *exc: object) -> None: ...
    def phase(self, phase: StoryPhase) -> None: ...
    def alert(self, event: AlertEvent) -> None: ...
    def update(self, frame: Frame) -> None: ...
    def message(self, text: str) -> None: ...


class PlainView:
    """Log lines for CI and pipes: a status line every `every` seconds, phases and alerts at once.

    Args:
        out: where the lines go.
        every: seconds between status lines.
    """

    def __init__(self, out: IO[str], every: float = 5.0) -> None:
        self.out = out
        self.every = every
        self._next = 0.0

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.flush()

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def phase(self, phase: StoryPhase) -> None:
        self._print(phase_line(phase))

    def alert(self, event: AlertEvent) -> None:
        self._print(alert_line(event))

    def message(self, text: str) -> None:
        self._print(text)

    def update(self, frame: Frame) -> None:
        if frame.elapsed >= self._next:
            # On a fixed grid (0, 5, 10, ...): a late tick does not push every later line back.
            self._next = (math.floor(frame.elapsed / self.every) + 1) * self.every
            self._print(status_line(frame))


def render(frame: Frame) -> RenderableType:
    """The live view of one frame."""
    s = frame.stats
    header = Table.grid(expand=True, padding=(0, 1))  # a space between columns, however narrow
    header.add_column(ratio=1)
    header.add_column(justify="right")
    header.add_row(
        Text.assemble(("Phase: ", "bold"), (frame.phase.title, "bold cyan")),
        f"{frame.elapsed:.0f}s / {frame.duration:.0f}s",
    )
    header.add_row(Text(f"Watch: {frame.phase.watch}", style="dim"), "")
    progress = ProgressBar(total=frame.duration, completed=min(frame.elapsed, frame.duration))

    numbers = Table(show_header=True, header_style="bold", expand=True, box=None)
    for column in ("calls/s", "errors (user)", "errors (upstream)", "retries/s", "fallbacks/s", "breaker"):
        numbers.add_column(column, justify="right")
    breaker_style = {"open": "bold red", "half-open": "yellow"}.get(s.breaker, "green")
    error_style = "bold red" if (s.error_ratio or 0) > 0.05 else ""
    numbers.add_row(
        f"{s.request_rate:.1f}",
        Text(pct(s.error_ratio), style=error_style),
        pct(s.attempt_error_ratio),
        f"{s.retry_rate:.1f}",
        f"{s.fallback_rate:.1f}",
        Text(s.breaker, style=breaker_style),
    )
    ttft = Table(show_header=True, header_style="bold", expand=True, box=None)
    for column in ("TTFT p50", "TTFT p95", "TTFT p99", "calls", "failed", "retries", "fallbacks"):
        ttft.add_column(column, justify="right")
    ttft.add_row(
        secs(s.ttft_p50),
        secs(s.ttft_p95),
        secs(s.ttft_p99),
        f"{s.calls:.0f}",
        f"{s.errors:.0f}",
        f"{s.retries:.0f}",
        f"{s.fallbacks:.0f}",
    )
    alerts = Table(show_header=True, header_style="bold", expand=True, box=None)
    for column in ("at", "alert", "status", "summary"):
        alerts.add_column(column)
    for event in frame.alerts[-8:]:
        style = "bold red" if event.status == "firing" else "green"
        alerts.add_row(f"{event.at:.0f}s", event.name, Text(event.status, style=style), event.summary)
    if frame.alerts_off is not None:
        alert_panel = Panel(Text(frame.alerts_off, style="dim"), title="Alerts: not watched in this run")
    else:
        firing = ", ".join(frame.firing) if frame.firing else "none"
        alert_panel = Panel(
            alerts if frame.alerts else Text("none yet", style="dim"),
            title=f"Alerts delivered by Alertmanager (firing now: {firing})",
        )
    return Group(
        Panel(Group(header, progress), title="streamtap demo"),
        Panel(Group(numbers, Text(""), ttft), title=f"Last {s.window_s:.0f}s"),
        alert_panel,
        Text("\n".join(frame.notes), style="dim"),
    )


class LiveView:
    """The rich live view; phases, alerts and messages scroll above it.

    Args:
        console: the rich console (a terminal).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live = Live(console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def phase(self, phase: StoryPhase) -> None:
        self.console.print(Text(phase_line(phase), style="cyan"))

    def alert(self, event: AlertEvent) -> None:
        self.console.print(Text(alert_line(event), style="bold red" if event.status == "firing" else "green"))

    def message(self, text: str) -> None:
        self.console.print(text)

    def update(self, frame: Frame) -> None:
        self._live.update(render(frame))

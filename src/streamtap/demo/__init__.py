"""`streamtap demo`: a few minutes of traffic through both doors, a story of incidents told by
the fake upstream, a live view of streamtap's numbers, and (with Prometheus and Alertmanager on
PATH) the alerts they fire and resolve."""

from __future__ import annotations

from ._plan import DemoError, DemoOptions
from ._run import run

__all__ = ["DemoError", "DemoOptions", "run"]

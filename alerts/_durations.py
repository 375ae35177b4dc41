"""Kept for the repo's tests: Prometheus durations live in `streamtap.monitoring._durations`."""

from __future__ import annotations

from streamtap.monitoring._durations import fmt, parse

__all__ = ["fmt", "parse"]

"""Kept for the repo's scripts and tests: the rule generator lives in `streamtap.monitoring.rules`."""

from __future__ import annotations

from streamtap.monitoring.rules import (
    HEADER,
    PAGE_BURN_WINDOWS,
    STREAM_FAILURE_TYPES,
    TICKET_BURN_WINDOWS,
    Params,
    alert_names,
    dump,
    recording_names,
    render,
    windows,
)

__all__ = [
    "HEADER",
    "PAGE_BURN_WINDOWS",
    "STREAM_FAILURE_TYPES",
    "TICKET_BURN_WINDOWS",
    "Params",
    "alert_names",
    "dump",
    "recording_names",
    "render",
    "windows",
]

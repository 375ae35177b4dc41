"""How long the sync driver lets one socket read of a streamed body block (`read_limit`)."""

from __future__ import annotations

import pytest

from streamtap._sync import SHORTEST_READ, read_limit


@pytest.mark.parametrize(
    ("limit", "default", "cap", "expected"),
    [
        pytest.param(2.0, 5.0, None, 2.0, id="the-attempts-deadline"),
        pytest.param(None, 5.0, None, 5.0, id="no-deadline-the-transports"),
        pytest.param(None, None, None, None, id="no-timeout-at-all"),
        pytest.param(2.0, 5.0, 0.5, 0.5, id="the-callers-shorter-read-timeout"),
        pytest.param(0.2, 5.0, 0.5, 0.2, id="a-deadline-before-the-callers-timeout"),
    ],
)
def test_read_limit(
    limit: float | None, default: float | None, cap: float | None, expected: float | None
) -> None:
    assert read_limit(limit, default, cap) == expected


@pytest.mark.parametrize("limit", [0.0, 1e-9])
def test_a_deadline_already_passed_still_blocks_briefly(limit: float) -> None:
    """0 would make the socket non-blocking: with no bytes waiting, its read fails as a broken
    connection (`stream_interrupted`) instead of timing out (`timeout`, `stall`, ...)."""
    assert read_limit(limit, 5.0, None) == SHORTEST_READ
    assert read_limit(5.0, 5.0, 0.0) == SHORTEST_READ

"""Shared test helpers: real binaries are required under CI=true, skipped with a reason elsewhere."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(*names: str) -> str:
    """Return the path of the first of `names` on PATH.

    Outside CI a missing binary skips the test with a clear reason; with CI=true it fails,
    because CI installs every binary the suite needs.
    """
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"{' or '.join(names)} not on PATH (./scripts/test installs it with apt-get)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

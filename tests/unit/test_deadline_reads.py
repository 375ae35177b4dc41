"""Whose reads an attempt's deadlines bound: its own connection's under HTTP/1.1; under HTTP/2,
whose streams share one connection, none but its own request's (and a warning, once)."""

from __future__ import annotations

import logging
from typing import Any

import httpx2
import pytest

from streamtap import _async_body, _driver, _sync_body


class _Stream:
    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b""


class _Attempt:
    def read_timeout(self, now: float) -> float | None:
        return 0.5


def _response(version: bytes, stream: _Stream) -> httpx2.Response:
    return httpx2.Response(200, extensions={"http_version": version, "network_stream": stream})


@pytest.mark.parametrize("deadline_reads", [_sync_body.deadline_reads, _async_body.deadline_reads])
def test_an_http11_connection_reads_to_the_attempts_deadline(deadline_reads: Any) -> None:
    stream = _Stream()
    restore = deadline_reads(_response(b"HTTP/1.1", stream), _Attempt(), lambda: 0.0, None)
    assert "read" in vars(stream)
    restore()
    assert "read" not in vars(stream)


@pytest.mark.parametrize("deadline_reads", [_sync_body.deadline_reads, _async_body.deadline_reads])
def test_an_http2_connection_is_left_to_every_stream_on_it(
    deadline_reads: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_driver, "_http2_warned", [])
    caplog.set_level(logging.WARNING, logger="streamtap")
    stream = _Stream()
    for _ in range(3):
        assert deadline_reads(_response(b"HTTP/2", stream), _Attempt(), lambda: 0.0, None) is None
    assert "read" not in vars(stream)
    (warning,) = caplog.messages
    assert "HTTP/2" in warning and "http2=False" in warning

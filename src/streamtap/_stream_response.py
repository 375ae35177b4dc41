"""The response a committed stream gives the caller: its body reads itself, through no layers.

httpx2 reads a streamed body through `iter_bytes` → `iter_raw` → the client's timing wrapper,
with a content decoder (a generator per read) and two chunkers on the way. The engine's body
is never content-encoded (the drivers pass identity bytes on, or decode them first; the
caller's headers name no encoding) and the SDK reads it with no chunk size, so for it those
layers only cost time on every read. `iter_bytes()` and `aiter_bytes()` without a chunk size
therefore hand the caller the body's own reader (`reads`, `areads`): the one generator that
also watches the upstream. It keeps what the layers keep: the consumed and closed states and
their errors, the request on an httpx2 error, the close (and so `elapsed`) at the end, and
`num_bytes_downloaded` (counted when asked, not on every read). Everything else is httpx2's
own, and a stream replaced after the response was made is read through httpx2's layers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx2


class DirectSyncBody(httpx2.SyncByteStream):
    """A sync body that its response reads by the body's own reader."""

    def reads(self, response: httpx2.Response | None) -> Iterator[bytes]:
        """The body's reads; read by `response`, it also closes it at the end."""
        raise NotImplementedError

    def passed_bytes(self) -> int:
        """How many bytes the body has passed on so far."""
        raise NotImplementedError


class DirectAsyncBody(httpx2.AsyncByteStream):
    """The async twin of DirectSyncBody."""

    def areads(self, response: httpx2.Response | None) -> AsyncGenerator[bytes, None]:
        """The body's reads; read by `response`, it also closes it at the end."""
        raise NotImplementedError

    def passed_bytes(self) -> int:
        """How many bytes the body has passed on so far."""
        raise NotImplementedError


class StreamResponse(httpx2.Response):
    """An `httpx2.Response` whose body (`stream`, the engine's) is read by the body's own reader."""

    def __init__(self, *args: Any, stream: DirectSyncBody | DirectAsyncBody, **kwargs: Any) -> None:
        super().__init__(*args, stream=stream, **kwargs)
        self._body = stream
        self._read_directly = False

    @property
    def num_bytes_downloaded(self) -> int:
        if self._read_directly:
            return self._body.passed_bytes()
        return self._num_bytes_downloaded

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        body = self._body
        if chunk_size is None and isinstance(body, DirectSyncBody) and self._take():
            return body.reads(self)
        return super().iter_bytes(chunk_size)

    def aiter_bytes(self, chunk_size: int | None = None) -> AsyncGenerator[bytes, None]:
        body = self._body
        if chunk_size is None and isinstance(body, DirectAsyncBody) and self._take():
            return body.areads(self)
        return super().aiter_bytes(chunk_size)

    def _take(self) -> bool:
        """Whether the body's own reader reads it now (then the stream is consumed).

        Not when the content was read already, or the stream was replaced (the client wraps
        the body in a timer whose iteration only passes it on: that one still counts as the
        body); httpx2's layers read those. The states httpx2 refuses a read in are refused
        as httpx2 does.
        """
        stream = self.stream
        if hasattr(self, "_content") or getattr(stream, "_stream", stream) is not self._body:
            return False
        if self.is_stream_consumed:
            raise httpx2.StreamConsumed()
        if self.is_closed:
            raise httpx2.StreamClosed()
        self.is_stream_consumed = True
        self._read_directly = True
        return True

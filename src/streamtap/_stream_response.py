"""The response a committed stream gives the caller: its body read through fewer layers.

httpx2 reads a streamed body through `iter_bytes` → `iter_raw` → the client's timing wrapper,
with a content decoder (a generator per read) and two chunkers on the way. The engine's body
is never content-encoded (the drivers pass identity bytes on, or decode them first; the
caller's headers name no encoding) and the SDK reads it with no chunk size, so for it those
layers only cost time on every read. `iter_bytes()` and `aiter_bytes()` without a chunk size
therefore read the body directly and keep what the layers keep: the consumed and closed
states and their errors, `num_bytes_downloaded`, the request on a transport error, the
close (and so `elapsed`) at the end. Everything else is httpx2's own.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx2


class StreamResponse(httpx2.Response):
    """An `httpx2.Response` over the engine's body (`stream`), read without httpx2's layers."""

    def __init__(
        self, *args: Any, stream: httpx2.SyncByteStream | httpx2.AsyncByteStream, **kwargs: Any
    ) -> None:
        super().__init__(*args, stream=stream, **kwargs)
        self._body = stream

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        if chunk_size is not None or hasattr(self, "_content"):
            return super().iter_bytes(chunk_size)
        return self._iter_body()

    def aiter_bytes(self, chunk_size: int | None = None) -> AsyncGenerator[bytes, None]:
        if chunk_size is not None or hasattr(self, "_content"):
            return super().aiter_bytes(chunk_size)
        return self._aiter_body()

    def _source(self, kind: type[Any], wrong: str) -> Any:
        """The body to read: the engine's own, unless the stream is not (or no longer) it.

        The client wraps the body in a timer whose iteration only passes it on; that wrapper
        still closes it (and so sets `elapsed`) through `close()`.
        """
        if self.is_stream_consumed:
            raise httpx2.StreamConsumed()
        if self.is_closed:
            raise httpx2.StreamClosed()
        stream = self.stream
        if not isinstance(stream, kind):
            raise RuntimeError(wrong)
        self.is_stream_consumed = True
        self._num_bytes_downloaded = 0
        return self._body if getattr(stream, "_stream", stream) is self._body else stream

    def _iter_body(self) -> Iterator[bytes]:
        source = self._source(httpx2.SyncByteStream, "Attempted to call a sync iterator on an async stream.")
        try:
            for chunk in source:
                if chunk:
                    self._num_bytes_downloaded += len(chunk)
                    yield chunk
        except httpx2.RequestError as error:
            _attach(error, self._request)
            raise
        finally:
            self.close()

    async def _aiter_body(self) -> AsyncGenerator[bytes, None]:
        source = self._source(httpx2.AsyncByteStream, "Attempted to call an async iterator on a sync stream.")
        chunks = source.__aiter__()
        try:
            async for chunk in chunks:
                if chunk:
                    self._num_bytes_downloaded += len(chunk)
                    yield chunk
        except httpx2.RequestError as error:
            _attach(error, self._request)
            raise
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
            await self.aclose()


def _attach(error: httpx2.RequestError, request: httpx2.Request | None) -> None:
    """What httpx2 does for an error raised while reading a body: name the request."""
    if request is not None:
        error.request = request

"""`FakeUpstream`: the public handle, served from a daemon thread or inside a running loop."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType

from .._heap import settle_for_serving
from ._app import App
from ._config import FakeConfig, check_chunks
from ._content import generate_pieces
from ._records import RequestLog, RequestRecord
from ._select import FaultSelector
from ._server import Server
from ._store import ResponseStore

_JOIN_TIMEOUT_S = 5.0


class FakeUpstream:
    """A fake OpenAI upstream with fault injection on a real loopback socket.

    Use it as a context manager (its own event loop in a daemon thread), or ``async with`` /
    `start_async` / `serve` inside a running loop.

    Args:
        config: chunks, pacing, API key, seed, incidents, host and port.
        clock: monotonic seconds, for incident windows and record timestamps.
        wall_clock: epoch seconds, for `created` fields and Retry-After dates.
    """

    def __init__(
        self,
        config: FakeConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or FakeConfig()
        self._selector = FaultSelector(self.config.incidents, seed=self.config.seed, clock=clock)
        self._store = ResponseStore()
        self._log = RequestLog()
        self._app = App(
            self.config, self._selector, self._store, self._log, wall_clock=wall_clock, clock=clock
        )
        self._server: Server | None = None
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._port is None:
            raise RuntimeError("FakeUpstream is not started; use `with FakeUpstream() as fake:` or start()")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI `base_url`, e.g. ``http://127.0.0.1:8600/v1``."""
        return f"http://{self.config.host}:{self.port}/v1"

    @property
    def active_connections(self) -> int:
        """Open client connections (0 once every client left: stalls do not leak)."""
        server = self._server
        return 0 if server is None else server.connection_count

    # -- test controls -----------------------------------------------------------------------

    def enqueue(self, *specs: str) -> None:
        """Queue fault specs consumed one per generation request ("" = clean); ValueError if invalid."""
        self._selector.enqueue(*specs)

    @property
    def queued(self) -> int:
        """How many queued specs are left."""
        return self._selector.queued

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the requests that reached the fake (the most recent 10,000), oldest first."""
        return self._log.snapshot()

    def clear(self) -> None:
        """Forget records, queued specs, `times` counters and stored responses."""
        self._log.clear()
        self._selector.clear()
        self._store.clear()

    def expected_pieces(
        self, *, model: str, messages: object = None, input: object = None, chunks: int | None = None
    ) -> list[str]:
        """The fault-free content deltas for a request.

        Args:
            model: the requested model.
            messages: chat `messages` as sent (for chat completions).
            input: responses `input` as sent (for the responses API).
            chunks: the chunk count; the server's configured count when None.
        """
        if (messages is None) == (input is None):
            raise ValueError("expected_pieces: pass exactly one of messages= (chat) or input= (responses)")
        count = self.config.chunks if chunks is None else check_chunks("chunks", chunks)
        return generate_pieces(model, messages if input is None else input, count)

    def expected_text(
        self, *, model: str, messages: object = None, input: object = None, chunks: int | None = None
    ) -> str:
        """The fault-free text for a request (see `expected_pieces` for the arguments)."""
        pieces = self.expected_pieces(model=model, messages=messages, input=input, chunks=chunks)
        return "".join(pieces)

    # -- async lifecycle ---------------------------------------------------------------------

    async def start_async(self) -> FakeUpstream:
        """Bind and serve inside the running event loop; returns self once listening."""
        if self._server is not None:
            raise RuntimeError("FakeUpstream is already started")
        server = Server(self._app, self.config.host, self.config.port)
        await server.start()
        self._server = server
        self._port = server.port
        self._selector.mark_start()
        self._app.mark_start()
        return self

    async def stop_async(self) -> None:
        """Stop accepting, close every connection and wait for them."""
        server, self._server, self._port = self._server, None, None
        if server is not None:
            await server.stop()

    async def serve(self) -> None:
        """Serve until cancelled (e.g. by a signal handler), then stop cleanly."""
        if self._server is None:
            await self.start_async()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop_async()

    async def __aenter__(self) -> FakeUpstream:
        return await self.start_async()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_async()

    # -- thread lifecycle --------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Serve from a new event loop in a daemon thread; returns self once listening."""
        if self._thread is not None or self._server is not None:
            raise RuntimeError("FakeUpstream is already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as err:  # reported to the starting thread
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="streamtap-fake-upstream", daemon=True)
        thread.start()
        ready.wait(_JOIN_TIMEOUT_S)
        if failure:
            thread.join(_JOIN_TIMEOUT_S)
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Close every connection and join the server thread (within a few seconds)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop_async(), loop).result(_JOIN_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_JOIN_TIMEOUT_S)
            self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_until_signal(config: FakeConfig, announce: Callable[[str], None]) -> None:
    """Serve `config` in a new event loop until SIGINT or SIGTERM, then stop gracefully.

    Args:
        config: the server configuration.
        announce: called with the base URL once the server listens.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        try:
            async with FakeUpstream(config) as fake:
                announce(fake.base_url)
                settle_for_serving()
                await stopping.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    asyncio.run(main())

"""A byte relay: what any proxy process in the path adds before any work of its own.

proxy_load.py's `relay` target. It listens on 127.0.0.1 and, for every client connection,
opens one to the upstream and copies bytes both ways as they arrive, parsing nothing. What a
request through it adds to the time to first token is the second process itself: the kernel's
delivery twice more each way, and waking and scheduling the relay's event loop. It runs on
uvloop when installed, as the proxy does; reading from a side stops while the other side's
transport pushes back.

    python benchmarks/_byte_relay.py --listen 8799 --upstream 127.0.0.1:8600
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal


class _Side(asyncio.Protocol):
    """One connection of a relayed pair; whatever it receives goes to its peer's transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []  # received before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        self._close_peer()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_peer()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def _close_peer(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Side):
    """A client's connection: opens its upstream connection, then relays."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__()
        self._upstream = upstream
        self._connecting: asyncio.Task[None] | None = None  # kept: a task nobody holds may vanish

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self._upstream
        try:
            _, upstream = await loop.create_connection(_Side, host, port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        if self.transport is None or self.transport.is_closing():
            upstream.transport.close()  # type: ignore[union-attr]
            return
        for data in self.pending:
            upstream.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()


async def serve(port: int, upstream: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(upstream), "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", type=int, required=True, help="the port to listen on, on 127.0.0.1")
    parser.add_argument("--upstream", required=True, help="host:port to relay to (loopback only)")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        parser.error(f"--upstream must be on loopback (127.0.0.1 or localhost), got {host!r}")
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(serve(args.listen, (host, int(port))))
    else:
        asyncio.run(serve(args.listen, (host, int(port))))


if __name__ == "__main__":
    main()

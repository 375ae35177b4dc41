"""Running the proxy: uvicorn in the foreground (the CLI) or in a thread (tests, demo, benchmarks).

uvicorn is the ASGI server: the most widely deployed one, pure-Python to install (no compiler,
no Rust toolchain), with the controls a sidecar needs: graceful shutdown with a deadline
(`timeout_graceful_shutdown`), keep-alive and incomplete-request limits, no server header.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

from ._events import Recorder
from ._proxy import Proxy
from ._proxy_config import ProxyConfig


def uvicorn_config(app: Proxy, config: ProxyConfig, *, port: int | None = None) -> uvicorn.Config:
    host, listen_port = config.host_port
    return uvicorn.Config(
        app,
        host=host,
        port=listen_port if port is None else port,
        lifespan="on",
        log_level="warning",
        access_log=False,  # never a place where a token could be written
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=15,
        timeout_graceful_shutdown=max(int(config.shutdown_grace), 1),
        h11_max_incomplete_event_size=64 * 1024,  # request line and headers
    )


def serve(config: ProxyConfig, *, recorders: Sequence[Recorder] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting and let streams finish up to the grace."""
    uvicorn.Server(uvicorn_config(Proxy(config, recorders=recorders), config)).run()


class ProxyServer:
    """The proxy on a background thread, for tests, the demo and benchmarks.

    Args:
        config: the proxy's settings; its listen port may be 0 (a free port is picked).
        recorders: telemetry sinks (default: streamtap's defaults).
    """

    def __init__(self, config: ProxyConfig, *, recorders: Sequence[Recorder] | None = None) -> None:
        self.app = Proxy(config, recorders=recorders)
        self._server = uvicorn.Server(uvicorn_config(self.app, config))  # off the main thread: no signals
        self._thread = threading.Thread(target=self._server.run, name="streamtap-proxy", daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> ProxyServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 35.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

"""Running the proxy: uvicorn in the foreground (the CLI) or in a thread (tests, demo, benchmarks).

uvicorn is the ASGI server: the most widely deployed one, with httptools (a dependency, wheels
for the common platforms) parsing HTTP/1.1 and uvloop as the event loop where it installs (see
`_proxy_protocol`), and the controls a sidecar needs: graceful shutdown with a deadline
(`timeout_graceful_shutdown`), keep-alive and incomplete-request limits, no server header.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import uvicorn

from ._events import Recorder
from ._fallback import shown_url
from ._heap import settle_for_serving
from ._preflight_rules import parse_base_url
from ._proxy import Proxy
from ._proxy_config import ProxyConfig
from ._proxy_protocol import LimitedHttpToolsProtocol, has_uvloop

log = logging.getLogger("streamtap.proxy")


def uvicorn_config(app: Any, config: ProxyConfig, *, ops: bool = False) -> uvicorn.Config:
    host_port = config.ops_host_port if ops else config.host_port
    assert host_port is not None
    host, port = host_port
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        interface="asgi3",
        lifespan="off" if ops else "on",
        log_level="warning",
        access_log=False,  # never a place where a token could be written
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=15,  # also how long a request head may take (`_proxy_protocol`)
        timeout_graceful_shutdown=math.ceil(config.shutdown_grace),  # uvicorn takes whole seconds
        http=LimitedHttpToolsProtocol,  # httptools, with h11's head limit and a head timer
        ws="none",  # the proxy speaks no WebSocket, even where a WebSocket library is installed
        loop="uvloop" if has_uvloop() else "asyncio",
    )


def _servers(config: ProxyConfig, recorders: Sequence[Recorder] | None) -> tuple[Proxy, list[uvicorn.Server]]:
    # An upstream that parses but is likely wrong (an endpoint, OpenAI's without /v1) is said
    # at start, as `streamtap check` says it: else only the calls failing on it would tell.
    warning = parse_base_url(config.upstream, source="upstream")[0].hint
    if warning:
        log.warning("upstream %s: %s", config.upstream, warning)
    if config.upstream_api_key is not None:
        # Without a key of its own an upstream fallback is sent the request's headers as they
        # go upstream: here they carry the proxy's key, to another host.
        for index, fallback in enumerate(config.fallbacks):
            if fallback.kind == "upstream" and fallback.api_key is None and fallback.base_url is not None:
                log.warning(
                    "fallbacks[%d] (upstream %s) has no api_key: it is sent the proxy's own upstream "
                    "key; give it an api_key of its own unless that upstream may see this key",
                    index,
                    shown_url(fallback.base_url),
                )
    app = Proxy(config, recorders=recorders)
    servers = [uvicorn.Server(uvicorn_config(app, config))]
    if config.ops_listen is not None:
        servers.append(uvicorn.Server(uvicorn_config(app.ops, config, ops=True)))
    return app, servers


async def _serve_all(servers: list[uvicorn.Server], announce: Callable[[str], None] | None = None) -> None:
    """Serve every listener until all stop; announce the API's URL once all are bound.

    A listener that cannot start (its port taken) exits as uvicorn does alone, with its one
    log line and status 3: the others are told to stop rather than cancelled, so the failure
    is not buried in a traceback of the task group and of a lifespan cut short.
    """
    failures: list[SystemExit] = []

    async def run(server: uvicorn.Server) -> None:
        try:
            await server.serve()
        except SystemExit as failure:
            failures.append(failure)
        finally:
            # One listener down, all down: none serves on alone, and nothing waits to announce.
            for other in servers:
                other.should_exit = True

    async def announce_when_bound() -> None:
        while not all(server.started for server in servers):
            if any(server.should_exit for server in servers):
                return
            await anyio.sleep(0.01)
        assert announce is not None
        announce(listen_url(servers[0].servers[0].sockets[0].getsockname()))

    async with anyio.create_task_group() as group:
        for server in servers:
            group.start_soon(run, server)
        if announce is not None:
            group.start_soon(announce_when_bound)
    if failures:
        raise failures[0]


def listen_url(sockname: Any) -> str:
    """The base URL of a listening socket's address (IPv6 hosts in brackets)."""
    host, port = sockname[0], sockname[1]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def serve(
    config: ProxyConfig,
    *,
    recorders: Sequence[Recorder] | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting and let streams finish up to the grace.

    Args:
        config: the proxy's settings.
        recorders: telemetry sinks (default: streamtap's defaults).
        announce: called with the API's base URL once every listener is bound (the port
            picked for a `:0` listen).
    """
    _, servers = _servers(config, recorders)
    settle_for_serving()
    if len(servers) == 2:
        _stop_together(*servers)
    anyio.run(_serve_all, servers, announce, backend_options={"use_uvloop": has_uvloop()})


def _stop_together(main: uvicorn.Server, ops: uvicorn.Server) -> None:
    """A signal, which the main listener captures, stops the ops listener too."""
    original = main.handle_exit

    def handle_exit(sig: int, frame: Any) -> None:
        original(sig, frame)
        ops.should_exit = True

    main.handle_exit = handle_exit  # type: ignore[method-assign]
    ops.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]


class ProxyServer:
    """The proxy on a background thread, for tests, the demo and benchmarks.

    Args:
        config: the proxy's settings; its listen port may be 0 (a free port is picked).
        recorders: telemetry sinks (default: streamtap's defaults).
    """

    def __init__(self, config: ProxyConfig, *, recorders: Sequence[Recorder] | None = None) -> None:
        self.app, self._servers = _servers(config, recorders)
        self._server = self._servers[0]
        self._thread = threading.Thread(
            target=anyio.run,
            args=(_serve_all, self._servers),
            kwargs={"backend_options": {"use_uvloop": has_uvloop()}},
            name="streamtap-proxy",
            daemon=True,
        )
        self.port = 0
        self.ops_port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> ProxyServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not all(server.started for server in self._servers):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        if len(self._servers) > 1:
            self.ops_port = self._servers[1].servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 35.0) -> None:
        for server in self._servers:
            server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

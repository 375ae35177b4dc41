"""A small HTTP upstream on 127.0.0.1 for wire shapes the fake upstream does not produce."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive, as real upstreams), and no access log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that leaves midway (a proxy refusing an upload, a cancelled call): expected."""


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve `handler` from a thread on a free port; yields `http://127.0.0.1:PORT` (`https://`
    with an `ssl_context`)."""
    server = _Server(("127.0.0.1", 0), handler)
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scheme = "http" if ssl_context is None else "https"
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

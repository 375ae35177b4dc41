"""A tiny HTTP forward proxy on loopback, for tests: it records each request line it forwards.

A client configured with this proxy sends absolute-form request lines (`POST
http://127.0.0.1:PORT/v1/chat/completions HTTP/1.1`); the proxy records each one, rewrites it to
origin form, drops the hop-by-hop `Proxy-*` headers and forwards it to the target over one
upstream connection per client connection. Responses are relayed byte for byte, so streamed
bodies and keep-alive work as they would through a real proxy. Plain HTTP only (no CONNECT).
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import httpx2

# Every socket operation is bounded: a broken test fails instead of hanging.
IO_TIMEOUT = 10.0


class ForwardProxy:
    """Use as a context manager; `url` to configure clients, `request_lines` to assert on."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.request_lines: list[str] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ForwardProxy:
        self._accepting.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(IO_TIMEOUT)
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _keep(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(IO_TIMEOUT)
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # the listener was closed
                return
            threading.Thread(target=self._serve, args=(self._keep(conn),), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        buffer = b""
        upstream: socket.socket | None = None
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").split("\r\n")
                method, target, version = line.split(" ")
                with self._lock:
                    self.request_lines.append(line)
                url = httpx2.URL(target)
                length = 0
                kept = []
                for field in fields:
                    name, _, value = field.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    if not name.lower().startswith("proxy-"):
                        kept.append(field)
                while len(buffer) < length:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                if upstream is None:
                    upstream = self._keep(socket.create_connection((url.host, url.port or 80)))
                    threading.Thread(target=_relay, args=(upstream, client), daemon=True).start()
                origin = url.raw_path.decode("ascii")
                request = "\r\n".join([f"{method} {origin} {version}", *kept, "", ""])
                upstream.sendall(request.encode("latin-1") + body)
        except OSError:
            return
        finally:
            if upstream is not None:
                upstream.close()
            client.close()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        sink.close()

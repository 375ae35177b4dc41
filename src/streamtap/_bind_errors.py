"""One line for a listener that cannot bind, naming the flag at fault."""

from __future__ import annotations

import errno
import socket


def bind_failure(
    error: OSError, *, host_flag: str, host: str, port_flag: str, port: int, free_port: str | None = None
) -> str:
    """Why `host`:`port` could not be bound: the address (not resolvable, not this machine's)
    or the port (taken, privileged), with what to pass instead (`free_port`: how to ask for a
    free port, by default `{port_flag} 0`)."""
    if isinstance(error.__cause__, OSError):
        # `serve_metrics` re-raises the socket's error in the library's terms (`port=0`);
        # the flags' terms are wanted here.
        error = error.__cause__
    reason = error.strerror or str(error)
    if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
        return f"{host_flag} {host}: {reason}; pass an address of this machine, e.g. 127.0.0.1"
    free = f"{port_flag} 0" if free_port is None else free_port
    return f"{port_flag} {port} on {host}: {reason}; pass another port, or {free} for a free one"

from __future__ import annotations

import errno
import socket

from streamtap._bind_errors import bind_failure

FLAGS = {"host_flag": "--host", "port_flag": "--port"}


def test_the_address_is_at_fault_when_it_does_not_resolve_or_is_not_ours() -> None:
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert bind_failure(unknown, host="999.1.1.1", port=80, **FLAGS) == (
        "--host 999.1.1.1: Name or service not known; pass an address of this machine, e.g. 127.0.0.1"
    )
    foreign = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    assert bind_failure(foreign, host="10.9.9.9", port=80, **FLAGS).startswith(
        "--host 10.9.9.9: Cannot assign"
    )


def test_the_port_is_at_fault_otherwise() -> None:
    taken = OSError(errno.EADDRINUSE, "Address already in use")
    assert bind_failure(taken, host="127.0.0.1", port=8600, **FLAGS) == (
        "--port 8600 on 127.0.0.1: Address already in use; pass another port, or --port 0 for a free one"
    )

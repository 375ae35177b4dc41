"""The network steps of `preflight`: DNS resolves, TCP connects, TLS verifies. Each returns a
`Check` with a hint that says what to fix; none raises for a failure it can name.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpcore2
import httpx2

from ._preflight_report import Check
from ._preflight_rules import NETWORK_HINT, Target

Address = tuple[int, Any]  # (address family, socket address)


def check_dns(target: Target, timeout: float, *, via: str = "") -> tuple[Check, list[Address]]:
    """Step 3: `target.host` resolves (``socket.getaddrinfo``) within `timeout` seconds."""
    host = target.host
    result: list[Any] = []
    error: list[BaseException] = []
    done = threading.Event()

    def resolve() -> None:
        try:
            result.extend(socket.getaddrinfo(host, target.port, type=socket.SOCK_STREAM))
        except OSError as err:
            error.append(err)
        finally:
            done.set()

    # getaddrinfo has no timeout of its own; a daemon thread lets a hung resolver be abandoned.
    threading.Thread(target=resolve, name="streamtap-preflight-dns", daemon=True).start()
    if not done.wait(timeout):
        hint = "the DNS server did not answer: are you offline? behind a proxy, set HTTPS_PROXY"
        return Check("dns", False, f"{via}resolving {host!r} took more than {timeout:g} s", hint), []
    if error:
        err = error[0]
        hint = dns_hint(target, err, via=via)
        return Check("dns", False, f"{via}cannot resolve {host!r}: {err}", hint), []
    addresses = [(family, sockaddr) for family, _, _, _, sockaddr in result]
    shown = ", ".join(dict.fromkeys(str(sockaddr[0]) for _, sockaddr in addresses[:3]))
    more = f" (+{len(addresses) - 3} more)" if len(addresses) > 3 else ""
    return Check("dns", True, f"{via}{host} → {shown}{more}"), addresses


def dns_hint(target: Target, err: BaseException, *, via: str = "") -> str:
    """The fix hint for a host that does not resolve: a typo only where the user wrote the host."""
    if isinstance(err, socket.gaierror) and err.errno == socket.EAI_AGAIN:
        return "DNS is unreachable: are you offline? behind a proxy, set HTTPS_PROXY"
    if target.default and not via:
        # Nobody typed api.openai.com: a machine that cannot resolve it resolves no public name.
        return (
            f"this machine cannot resolve public names ({target.host} is the default, not a typo): "
            "it is offline, or on a network that needs a proxy (set HTTPS_PROXY)"
        )
    return f"check {target.host!r} for typos ({target.source}), then this machine's DNS and network"


def check_tcp(
    target: Target, addresses: list[Address], timeout: float, *, via: str = ""
) -> tuple[Check, socket.socket | None]:
    """Step 4: connect to the resolved addresses in turn until one answers; `timeout` for them all."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    for family, sockaddr in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(remaining)
        try:
            sock.connect(sockaddr)
        except OSError as err:
            sock.close()
            last = err
            continue
        return Check("tcp", True, f"{via}connected to {_hostport(sockaddr)}"), sock
    where = f"{target.host}:{target.port}"
    if isinstance(last, ConnectionRefusedError):
        hint = f"nothing listens on {where}: is the server running and the port right ({target.source})?"
        if via:
            hint = f"nothing listens on {where}: check the proxy in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY"
        return Check("tcp", False, f"{via}connection to {where} refused", hint), None
    if last is None or isinstance(last, TimeoutError):
        hint = f"no answer in {timeout:g} s: a firewall may drop the traffic; behind a proxy, set HTTPS_PROXY"
        return Check("tcp", False, f"{via}connecting to {where} timed out", hint), None
    return Check("tcp", False, f"{via}cannot connect to {where}: {last}", NETWORK_HINT), None


def _hostport(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def check_tls(sock: socket.socket, host: str, timeout: float, context: ssl.SSLContext | None = None) -> Check:
    """Step 5: a verified TLS handshake over the connected `sock`.

    Args:
        sock: a connected TCP socket; it stays open (the caller closes it).
        host: the name the certificate must match (SNI too).
        timeout: seconds for the handshake.
        context: the SSL context; default httpx2's, the one the SDK's HTTP client uses.
    """
    if context is None:
        loaded = ssl_context()
        if isinstance(loaded, Check):
            return loaded
        context = loaded
    ctx = context
    # One bound on the whole handshake, not on each read: CPython turns a socket's timeout into a
    # deadline for the handshake as a whole (a server that drips its certificate a byte at a
    # time fails at `timeout`).
    sock.settimeout(timeout)
    try:
        # The wrapper takes over the descriptor (`sock` is detached): closing it ends the connection.
        tls = ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as err:
        message = str(err.verify_message or err)
        return Check("tls", False, f"certificate verify failed: {message}", cert_hint(message))
    except ssl.SSLError as err:
        text = str(err)
        if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "packet length" in text:
            hint = "the server does not speak TLS on this port: use http:// if it is a plain-HTTP server"
        else:
            hint = "the TLS handshake failed: a proxy or firewall may interfere; check the base URL"
        return Check("tls", False, f"TLS handshake failed: {text}", hint)
    except TimeoutError:
        hint = "the server accepted TCP but not TLS in time: a firewall or proxy may interfere"
        return Check("tls", False, f"TLS handshake timed out after {timeout:g} s", hint)
    except OSError as err:
        hint = "the connection broke during the handshake: a firewall or TLS-inspecting proxy may interfere"
        return Check("tls", False, f"TLS handshake failed: {err}", hint)
    with tls:
        cert = tls.getpeercert() or {}
        expires = cert.get("notAfter")
        detail = f"{tls.version()}, certificate verified for {host}"
    return Check("tls", True, detail + (f", valid until {expires}" if expires else ""))


def cert_hint(message: str) -> str:
    lowered = message.lower()
    if "expired" in lowered or "not yet valid" in lowered:
        return "the certificate is expired or not yet valid: check this machine's clock, then the server"
    if "hostname" in lowered or "ip address mismatch" in lowered:
        return "the certificate is for another host: check the host in the base URL"
    return (
        "the certificate is not signed by a CA this machine trusts (self-signed, or a TLS-inspecting "
        "proxy): set SSL_CERT_FILE to a bundle with your organization's CA"
    )


def ssl_context(environ: Mapping[str, str] | None = None) -> ssl.SSLContext | Check:
    """httpx2's SSL context, the SDK's (SSL_CERT_FILE, SSL_CERT_DIR), or the failed ``tls`` check
    naming the variable, its path and what is wrong with it when it cannot be loaded (the SDK's
    HTTP client fails to start then, for http:// base URLs too)."""
    try:
        return httpx2.create_ssl_context()
    except (OSError, ValueError) as err:
        return ca_failure(err, os.environ if environ is None else environ)


def ca_failure(err: BaseException, environ: Mapping[str, str]) -> Check:
    """The ``tls`` check for CA certificates that cannot be loaded (`err`, from loading them)."""
    if environ.get("SSL_CERT_FILE"):
        name, path = "SSL_CERT_FILE", environ["SSL_CERT_FILE"]
    elif environ.get("SSL_CERT_DIR"):
        name, path = "SSL_CERT_DIR", environ["SSL_CERT_DIR"]
    else:
        return Check("tls", False, f"cannot load this machine's CA certificates: {err}", NETWORK_HINT)
    fix = f"point {name} at a PEM file of CA certificates (with your organization's CA), or unset it"
    if isinstance(err, FileNotFoundError):
        what = "does not exist"
    elif isinstance(err, IsADirectoryError):
        what = "is a directory"
        fix = "a directory of CA certificates goes in SSL_CERT_DIR; SSL_CERT_FILE takes a PEM file"
    elif isinstance(err, PermissionError):
        what = "cannot be read (permission denied)"
    elif "NO_CERTIFICATE_OR_CRL_FOUND" in str(err) or "no certificate" in str(err).lower():
        what = "has no PEM certificate in it"
    else:
        what = f"cannot be loaded ({err})"
    return Check("tls", False, f"{name}={path!r} {what}", fix)


class Deadline(httpcore2.NetworkBackend):
    """httpcore2's network backend under one wall-clock deadline: every connect, TLS handshake,
    read and write of a request gets the time left, not a fresh timeout each (httpx2's are per
    operation: a server that drips a byte a second never trips them). Counts the bytes read,
    to tell a server that never answered from one that answered too slowly.

    Args:
        seconds: the time the request has, from now.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.received = 0
        self._backend = httpcore2.SyncBackend()

    def left(self, timeout: float | None, expired: type[Exception]) -> float:
        """The timeout for the next operation: `timeout` or the time left, the lesser; raises
        `expired` when none is left."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise expired("the request's deadline passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        timeout = self.left(timeout, httpcore2.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        timeout = self.left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream, deadline: Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._stream.read(max_bytes, self._deadline.left(timeout, httpcore2.ReadTimeout))
        self._deadline.received += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        timeout = self._deadline.left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def deadline_transport(
    proxy: str | None, context: ssl.SSLContext, seconds: float
) -> tuple[httpx2.HTTPTransport, Deadline]:
    """An httpx2 transport (through `proxy`, verifying with `context`) whose requests end within
    `seconds` from now, head and body, and the `Deadline` that counts what they read."""
    transport = httpx2.HTTPTransport(verify=context, proxy=proxy)
    deadline = Deadline(seconds)
    # httpx2 takes no network backend; its pool (a ConnectionPool, or an HTTPProxy, which is
    # one) opens every connection, proxied or not, through this attribute. Should a later httpx2
    # change that, the check keeps httpx2's timeouts, per operation (`has_deadline` tells, and
    # a test fails).
    pool = transport._pool
    if isinstance(pool, httpcore2.ConnectionPool) and hasattr(pool, "_network_backend"):
        pool._network_backend = deadline
    return transport, deadline


def has_deadline(transport: httpx2.HTTPTransport) -> bool:
    """Whether `deadline_transport` could bound `transport`'s requests as a whole."""
    return isinstance(getattr(transport._pool, "_network_backend", None), Deadline)

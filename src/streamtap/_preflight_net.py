"""The network steps of `preflight`: DNS resolves, TCP connects, TLS verifies. Each returns a
`Check` with a hint that says what to fix; none raises for a failure it can name.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

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
        if isinstance(err, socket.gaierror) and err.errno == socket.EAI_AGAIN:
            hint = "DNS is unreachable: are you offline? behind a proxy, set HTTPS_PROXY"
        else:
            hint = f"check {host!r} for typos ({target.source}), then this machine's DNS and network"
        return Check("dns", False, f"{via}cannot resolve {host!r}: {err}", hint), []
    addresses = [(family, sockaddr) for family, _, _, _, sockaddr in result]
    shown = ", ".join(dict.fromkeys(str(sockaddr[0]) for _, sockaddr in addresses[:3]))
    more = f" (+{len(addresses) - 3} more)" if len(addresses) > 3 else ""
    return Check("dns", True, f"{via}{host} → {shown}{more}"), addresses


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
    ctx = context if context is not None else httpx2.create_ssl_context()
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

"""What the proxy may forward, and where: path, header and token rules. Pure.

The proxy only ever talks to its configured upstream. A request names a path under `/v1/`;
the upstream URL is the configured base plus that path, after refusing anything that could
climb out of it (dot segments, encoded slashes or backslashes, control characters), for the
upstream or for any server on the way that reads paths otherwise: Tomcat and Spring take a
segment's `;parameters` off before they look for dot segments (`..;` is `..` there), and a
stack that decodes twice reads `%252e` as `.`.
"""

from __future__ import annotations

import hmac
import re
import zlib
from collections.abc import Iterable
from urllib.parse import unquote

from ._fallback import IDENTITY_HEADERS

# RFC 9110 §7.6.1 hop-by-hop headers, plus the proxy-only ones; never forwarded either way.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Recomputed or owned by the proxy.
# The client's traceparent passes on; an attempt span, when tracing is on, replaces it with its own.
_REQUEST_OWNED = frozenset({b"host", b"content-length", b"authorization"})
# With a key of the proxy's own, the client's identity beside it: Azure's `api-key`, and the
# organization and project to bill, which the client must not choose for the proxy's key (nor
# get refused with, a project-scoped key under another project's header).
_CLIENT_IDENTITY = frozenset(name.encode() for name in IDENTITY_HEADERS) - {b"authorization"}
# uvicorn writes its own Date on every response.
_RESPONSE_DROPPED = HOP_BY_HOP | {b"date"}
# The content codings the engine decodes (httpx2's own decoders, without optional packages; door 1's
# client asks for the same). A call's answer reaches the client decoded whatever the client
# accepts, so the upstream must not be offered a coding the engine cannot read (br, zstd).
_DECODABLE = b"gzip, deflate"
_AUTO_HEADER = 32 + zlib.MAX_WBITS  # zlib reads a gzip or a zlib (HTTP "deflate") header

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §5.5: no field value holds a control character but HTAB; a proxy replaces CR, LF and
# NUL with SP before forwarding (the rest too here: uvicorn refuses to send any of them, and
# the client would get no answer at all). A name that is not a token is no field.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_TOKEN = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
# An encoded percent before two hex digits: decoded once more, the path would change.
_DOUBLE_ENCODED = re.compile(r"%25[0-9A-Fa-f]{2}")


def upstream_url(base: str, raw_path: bytes, query: bytes) -> str | None:
    """The upstream URL for a request path, or None when the path is not a safe /v1 path."""
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not path.startswith("/v1/") or "\\" in path or "//" in path:
        return None
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered or "%2e" in lowered or "%00" in lowered:
        return None
    if _DOUBLE_ENCODED.search(path):
        return None
    decoded = unquote(path)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        return None
    if any(_is_dot_segment(segment) for segment in decoded.split("/")):
        return None
    url = base + path[len("/v1") :]
    if query:
        try:
            text = query.decode("ascii")
        except UnicodeDecodeError:
            return None
        if any(ord(ch) < 0x21 for ch in text) or "#" in text:
            return None
        url += "?" + text
    return url


def _is_dot_segment(segment: str) -> bool:
    """Whether a decoded path segment is `.` or `..`, with or without `;parameters` (`..;x`),
    which servers that drop them before resolving dot segments read as `..`."""
    return segment.partition(";")[0] in (".", "..")


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def forward_request_headers(headers: Headers, *, upstream_key: str | None, decoded: bool = False) -> Headers:
    """The client's headers as sent upstream: hop-by-hop stripped, the key set or passed on.

    `decoded`: the proxy reads the answer (a call's, or, while it holds keys, an error it masks
    them in), so Accept-Encoding offers what it decodes rather than what the client does; else
    the client's goes.
    """
    named = _connection_tokens(headers)
    out: Headers = []
    if decoded:
        out.append((b"accept-encoding", _DECODABLE))
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or (decoded and lower == b"accept-encoding"):
            continue
        if lower in _REQUEST_OWNED:
            if lower == b"authorization" and upstream_key is None:
                out.append((b"authorization", value))
            continue
        if upstream_key is not None and lower in _CLIENT_IDENTITY:
            continue  # the proxy's key, not the client, says which account and project pay
        out.append((lower, value))
    if upstream_key is not None:
        out.append((b"authorization", f"Bearer {upstream_key}".encode()))
    return out


def field_value(value: bytes) -> bytes:
    """`value` as a field may hold it: its control characters made spaces (`_CONTROL`)."""
    return _CONTROL.sub(b" ", value)


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The upstream's response headers as sent to the client: hop-by-hop stripped, Date, which
    the server writes on every response (a second one would make the value a list), and a
    Content-Length that a Transfer-Encoding overrides; control characters in a value become
    spaces, and a field whose name is not a token is dropped."""
    pairs = list(headers)
    dropped = _RESPONSE_DROPPED | _connection_tokens(pairs)
    if any(k.lower() == b"transfer-encoding" for k, _ in pairs):
        # RFC 9112 §6.3: Transfer-Encoding overrides a Content-Length beside it, which a proxy
        # must remove; the body relayed is the chunks' content, whatever length was also claimed.
        dropped |= {b"content-length"}
    return [
        (name, field_value(v))
        for k, v in pairs
        if (name := k.lower()) not in dropped and name and not _NOT_TOKEN.search(name)
    ]


def identity_body(headers: Headers, body: bytes, limit: int) -> tuple[Headers, bytes] | None:
    """A call's request body without its content coding (gzip, deflate) and the headers without
    Content-Encoding, so the engine can read the call and resend it; None when it decodes to
    over `limit` bytes (a small body can inflate a thousandfold). A body in another coding, or
    one that does not decode, is returned as it came (and is passed through)."""
    coding = header(headers, b"content-encoding")
    if coding is None or coding.strip().lower() not in (b"gzip", b"x-gzip", b"deflate"):
        return headers, body
    decoder = zlib.decompressobj(_AUTO_HEADER)
    try:
        plain = decoder.decompress(body, limit + 1)
    except zlib.error:
        return headers, body
    if len(plain) > limit:
        return None
    if not decoder.eof or decoder.unused_data:
        return headers, body
    return [(k, v) for k, v in headers if k.lower() != b"content-encoding"], plain


def authorized(headers: Headers, token: str | None) -> bool:
    """Whether the client presented the proxy's own token (always, when none is configured)."""
    if token is None:
        return True
    value = header(headers, b"authorization")
    if value is None:
        return False
    # RFC 9110 §11.1: the scheme is case-insensitive ("bearer" too); the token is compared in
    # constant time.
    scheme, _, credentials = value.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token.encode())


def declared_length(headers: Headers) -> int:
    """The body length the client's Content-Length declares; 0 when it declares none (the
    server has already refused a malformed or conflicting one)."""
    return _length(headers) or 0


def length_header(headers: Headers) -> Headers:
    """The Content-Length to send with a body streamed on as it comes: the client's, which the
    server holds it to (none when it declared none: then chunked). An upstream that refuses
    chunked request bodies takes it as the client sent it."""
    length = _length(headers)
    return [] if length is None else [(b"content-length", b"%d" % length)]


def _length(headers: Headers) -> int | None:
    value = header(headers, b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None

"""HTTP/1.1 framing for the proxy's upstream client: request heads, response heads, chunked bodies. Pure.

Only what a client of an OpenAI-compatible API needs: one request at a time per connection,
responses framed by Content-Length, chunked transfer coding, or the end of the connection.
Malformed input raises `httpx2.RemoteProtocolError` (the upstream's fault) or
`httpx2.LocalProtocolError` (ours), the exception types the engine already classifies.
"""

from __future__ import annotations

import re

import httpx2

MAX_HEAD = 64 * 1024  # a response's status line and headers together
_MAX_SIZE_LINE = 1024  # a chunk-size line, extensions included
_MAX_TRAILERS = 64 * 1024
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# How a response body ends.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3


def request_head(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers; refuses names or values that could split the message."""
    lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise httpx2.LocalProtocolError(f"illegal header {name!r}")
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class ResponseHead:
    """A parsed status line and header block.

    Args:
        data: the bytes before the blank line that ends the head (without it).
    """

    __slots__ = ("close", "framing", "headers", "length", "minor", "reason", "status")

    def __init__(self, data: bytes) -> None:
        status_line, _, rest = data.partition(b"\r\n")
        match = _STATUS.fullmatch(status_line)
        if match is None:
            raise httpx2.RemoteProtocolError(f"malformed status line {status_line[:80]!r}")
        self.minor = int(match[1])
        self.status = int(match[2])
        self.reason = match[3] or b""
        self.headers: list[tuple[bytes, bytes]] = []
        connection = b""
        length: bytes | None = None
        coding = b""
        for line in rest.split(b"\r\n") if rest else ():
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise httpx2.RemoteProtocolError(f"malformed header line {line[:80]!r}")
            value = value.strip(b" \t")
            lower = name.lower()
            if lower == b"content-length":
                # RFC 9110 §8.6: one value repeated ("42, 42", as a proxy that combined
                # duplicate fields sends it) is that value; different values are no length.
                values = {item.strip(b" \t") for item in value.split(b",")}
                if len(values) != 1 or (length is not None and length not in values):
                    raise httpx2.RemoteProtocolError("conflicting Content-Length headers")
                value = length = values.pop()
            elif lower == b"transfer-encoding":
                coding = value.lower()
            elif lower == b"connection":
                connection += b"," + value.lower()
            self.headers.append((name, value))
        tokens = {t.strip() for t in connection.split(b",")}
        # HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 keeps alive unless told to close.
        self.close = b"close" in tokens or (self.minor == 0 and b"keep-alive" not in tokens)
        self.length = 0
        if coding:
            if coding.rsplit(b",", 1)[-1].strip() == b"chunked":
                self.framing = CHUNKED
            else:
                self.framing, self.close = UNTIL_CLOSE, True
            if length is not None:
                self.close = True  # RFC 9112 §6.3: both framings present; never reuse the connection
        elif length is not None:
            if not length.isdigit() or len(length) > 18:
                raise httpx2.RemoteProtocolError(f"malformed Content-Length {length[:40]!r}")
            self.framing, self.length = LENGTH, int(length)
        else:
            self.framing, self.close = UNTIL_CLOSE, True

    def body_framing(self, method: str) -> int:
        """How the body of this response to `method` ends."""
        if method == "HEAD" or self.status in (204, 304) or self.status < 200:
            return NO_BODY
        if self.framing == LENGTH and self.length == 0:
            return NO_BODY
        return self.framing


class ChunkedDecoder:
    """Incremental decoding of a chunked body: bytes in as read, payload bytes out."""

    __slots__ = ("_pending", "_remaining", "_state", "_trailers", "done", "leftover")

    def __init__(self) -> None:
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._pending = b""  # an unfinished size line, CRLF or trailer section
        self._remaining = 0
        self._trailers = 0
        self.done = False
        self.leftover = b""  # bytes after the body's end (a pipelining server; kept out of the body)

    def feed(self, data: bytes) -> bytes:
        """The payload bytes in `data`; `done` turns True at the zero-size chunk's end."""
        if self._state == 0 and not self._pending:
            # The usual read: exactly one whole chunk, as servers write them.
            line_end = data.find(b"\r\n", 0, _MAX_SIZE_LINE)
            if line_end > 0:
                size_text = data[:line_end]
                if _HEX.fullmatch(size_text):
                    size = int(size_text, 16)
                    end = line_end + 2 + size
                    if size and len(data) == end + 2 and data[end:] == b"\r\n":
                        return data[line_end + 2 : end]
        parts: list[bytes] = []
        position = 0
        if self._pending:
            data, self._pending = self._pending + data, b""
        size = len(data)
        while position < size and not self.done:
            state = self._state
            if state == 1:
                take = min(self._remaining, size - position)
                parts.append(data[position : position + take])
                position += take
                self._remaining -= take
                if not self._remaining:
                    self._state = 2
            elif state == 2:
                if size - position < 2:
                    self._pending = data[position:]
                    break
                if data[position : position + 2] != b"\r\n":
                    raise httpx2.RemoteProtocolError("a chunk's data is not followed by CRLF")
                position += 2
                self._state = 0
            else:
                line_end = data.find(b"\r\n", position)
                if line_end < 0:
                    self._pending = data[position:]
                    limit = _MAX_SIZE_LINE if state == 0 else _MAX_TRAILERS - self._trailers
                    if len(self._pending) > limit:
                        raise httpx2.RemoteProtocolError("chunk-size line or trailers too long")
                    break
                line = data[position:line_end]
                position = line_end + 2
                if state == 3:
                    self._trailers += len(line) + 2
                    if self._trailers > _MAX_TRAILERS:
                        raise httpx2.RemoteProtocolError("trailers too long")
                    if not line:
                        self.done = True
                    continue
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if len(line) > _MAX_SIZE_LINE or not _HEX.fullmatch(size_text):
                    raise httpx2.RemoteProtocolError(f"malformed chunk-size line {line[:40]!r}")
                self._remaining = int(size_text, 16)
                self._state = 1 if self._remaining else 3
        if self.done:
            self.leftover = data[position:]
        return parts[0] if len(parts) == 1 else b"".join(parts)

"""Text and JSON that encode as UTF-8 whatever JSON decoded into them.

JSON may escape a lone UTF-16 surrogate (`"\\ud800"`), and Python's decoder hands it back as
it is: a str that `.encode()` refuses. A request or an upstream's answer can hold one (a client
that cut an emoji in half), so what streamtap writes from them goes through here:
- JSON it sends on (a fallback's request body, an event it makes up) keeps the surrogate
  escaped, so it says exactly what came in (`json_bytes`);
- text it records (span names and attributes, metric attributes, captured content) has U+FFFD
  in its place (`valid_text`): OTLP's strings must be UTF-8, and an exporter that meets one
  drops the attribute or refuses the whole batch.
"""

from __future__ import annotations

import json
import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD; `text` itself when it has none."""
    if text.isascii():
        return text
    try:
        text.encode()  # a fifth of the search's time on a long text that has none
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def json_bytes(value: object) -> bytes:
    """Compact JSON of `value` in UTF-8, non-ASCII as it is; a lone surrogate stays escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: escape what is not ASCII, as JSON allows
        return json.dumps(value, separators=(",", ":")).encode()

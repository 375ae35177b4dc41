"""Keys and tokens: one check for every place a secret is given, and how one is shown. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable

_CONVENTIONAL_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def clean_secret(value: str, where: str) -> str:
    """`value` without the whitespace around it, or a ValueError naming `where` (never the value).

    A Kubernetes secret made from a file, or a key read from one, ends in its newline, which no
    header may carry: sent as is, every request fails in the HTTP library, whose error quotes
    the header, key included. Whitespace around it is dropped; a value that is only whitespace,
    or has a control character inside, is refused.

    Args:
        value: the key or token.
        where: the setting, as the error names it (e.g. ``fallbacks[0].api_key``).
    """
    if not value:
        raise ValueError(f"{where} must be a non-empty string, got an empty one")
    value = value.strip()
    if not value:
        raise ValueError(f"{where} must be a non-empty string, got only whitespace")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(
            f"{where} must be a string without control characters, got one with a line break, tab or other inside"
        )
    return value


def shown_variable(name: str, setting: str) -> str:
    """The variable `name` as a message may show it: a conventional name (upper case, digits
    and _) as it is; anything else as "the variable <setting> names", for given where a name
    belongs, a value is most often the secret itself (a token of letters and digits too)."""
    return name if _CONVENTIONAL_NAME.fullmatch(name) else f"the variable {setting} names"


def fingerprint(key: str) -> str:
    """A safe label for `key`: ``sk-...XYZ9`` (the last 4 characters only for keys of 16+ characters).

    Args:
        key: the API key; it never appears in the result.
    """
    # Label the key the way its owner knows it: without the quotes or "Bearer " around it.
    key = key.strip().strip("\"'`")
    if key.lower().startswith("bearer "):
        key = key[7:].strip()
    head = "sk-" if key.startswith("sk-") else ""
    if len(key) < 16:
        return f"{head}..."
    tail = "".join(c if c.isascii() and c.isprintable() and not c.isspace() else "?" for c in key[-4:])
    return f"{head}...{tail}"


class SecretMask:
    """Replaces secrets in text by their fingerprints (`fingerprint`).

    An upstream's error may quote the key it was sent ("Incorrect API key provided: sk-...");
    the proxy masks the keys it holds in what it tells its clients, who were never given them.

    Args:
        secrets: the keys to mask; at least 8 characters each (a shorter one would mask
            ordinary words), which every key is.
    """

    __slots__ = ("_pairs",)

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)  # longest first
        self._pairs = tuple((s.encode(), fingerprint(s).encode()) for s in unique)

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def __call__(self, data: bytes) -> bytes:
        for secret, shown in self._pairs:
            if secret in data:
                data = data.replace(secret, shown)
        return data

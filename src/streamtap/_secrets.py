"""Keys and tokens as a header can carry them: one check for every place a secret is given. Pure."""

from __future__ import annotations


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

"""JSON from the wire: what a client or an upstream sends, parsed so that nothing but a
ValueError says it cannot be.

`json.loads` raises RecursionError for a document nested about a thousand levels deep, which
any client or upstream can send in 2 KB; code that catches ValueError for "not JSON" would let
it through, to a plain-text 500 and a traceback in the log per request.
"""

from __future__ import annotations

import json
from typing import Any


def parse_json(data: str | bytes) -> Any:
    """`json.loads(data)`; a document nested too deeply to parse raises ValueError, as any other
    that cannot be parsed does."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None

"""Bounded metric labels: the model label is normalised and capped, `api` is a closed set.

A label value that grows without bound (every fine-tune id, a typo per request) makes a
Prometheus series per value and eventually an outage of its own, so a labeller admits at most
`cap` distinct model values and reports the rest as `_other`. Recorders share labellers: the
Prometheus ones of a registry (per `max_models`), the OTel ones of a meter provider.
"""

from __future__ import annotations

import re
import threading
from typing import Final
from urllib.parse import urlsplit

from ._taxonomy import APIS, ERROR_TYPES, PHASES, Api, ErrorType, Phase
from ._utf8 import valid_text

OTHER: Final = "_other"
UNKNOWN: Final = "_unknown"
MAX_MODEL_LENGTH: Final = 64
DEFAULT_MODEL_CAP: Final = 50

# Model names are things like "gpt-4o-mini", "ft:gpt-4o:org::id" or "meta-llama/llama-3-70b":
# keep the characters those use and replace anything else (spaces, quotes, control characters).
_UNSAFE = re.compile(r"[^a-z0-9._:/\-]+")


def normalise_model(raw: object, *, max_length: int = MAX_MODEL_LENGTH) -> str:
    """Return `raw` stripped, lowercased, with unsafe characters replaced by `_`, truncated.

    Args:
        raw: the model as the caller wrote it; anything that is not a string is `_unknown`.
        max_length: the longest value kept.
    """
    if not isinstance(raw, str):
        return UNKNOWN
    value = _UNSAFE.sub("_", raw.strip().lower())[:max_length]
    return value or UNKNOWN


class ModelLabeler:
    """Admits at most `cap` distinct model label values; later ones become `_other`.

    Thread-safe: the common path (a model already admitted) is a set lookup without a lock.
    """

    __slots__ = ("_admitted", "_cap", "_lock", "_normalise")

    def __init__(self, cap: int = DEFAULT_MODEL_CAP, *, normalise: bool = True) -> None:
        """Args:
        cap: how many distinct values are kept before `_other` (at least 1).
        normalise: lowercase and restrict the charset (Prometheus); False keeps the exact
            name, only stripped and truncated (OpenTelemetry, whose conventions want it exact).
        """
        if not isinstance(cap, int) or cap < 1:
            raise ValueError(f"max_models must be an integer >= 1, got {cap!r}")
        self._cap = cap
        self._normalise = normalise
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, raw: object) -> str:
        if self._normalise:
            value = normalise_model(raw)
        elif isinstance(raw, str):
            value = valid_text(raw.strip()[: MAX_MODEL_LENGTH * 2]) or UNKNOWN
        else:
            value = UNKNOWN
        if value in self._admitted:
            return value
        with self._lock:
            if value in self._admitted:
                return value
            if len(self._admitted) >= self._cap:
                return OTHER
            self._admitted.add(value)
            return value


def api_label(api: object) -> Api:
    """The `api` label: one of the closed set, `other` for anything else."""
    return api if api in APIS else "other"


def error_type_label(error_type: object) -> ErrorType:
    """An error_type from the closed taxonomy; an unknown value becomes `other`."""
    return error_type if error_type in ERROR_TYPES else "other"


def phase_label(phase: object, status_code: int | None) -> Phase:
    """The phase of a failed attempt; when the engine gave none, infer it from the status."""
    if phase in PHASES:
        return phase
    return "headers" if status_code is not None else "connect"


def upstream_name(raw: object) -> str:
    """An upstream as a label value: a URL is reduced to its host[:port], never its path,
    query or credentials (the label must never carry a key)."""
    if not isinstance(raw, str) or not raw.strip():
        return UNKNOWN
    value = raw.strip()
    if "://" in value:
        parts = urlsplit(value)
        host = parts.hostname or UNKNOWN
        value = f"{host}:{parts.port}" if parts.port else host
    return value.split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]

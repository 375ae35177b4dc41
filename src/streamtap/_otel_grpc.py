"""The SDK's OTLP/gRPC exporters, built with the settings streamtap read for them.

Their constructors read some OTEL_* variables whatever they are given: each parses
OTEL_EXPORTER_OTLP_{SIGNAL}_TIMEOUT with float() even when handed a timeout, which then wins.
A value that does not parse ("abc", or empty, which the specification calls unset) raised
there, after streamtap had warned of it and said which timeout it used instead, and stopped
`streamtap proxy` at start. Such a value is hidden from the constructor, which reads os.environ
through its module's `environ`: the promise of the warning is kept.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any, TypeVar

from ._otel_env import compression, grpc_endpoint

T = TypeVar("T")
_lock = threading.Lock()  # one swap of a module's `environ` at a time


def grpc_exporter(cls: type[T], environ: Mapping[str, str], signal: str, timeout: float) -> T:
    """`cls` (an SDK OTLP/gRPC exporter, or a subclass of one) with `signal`'s compression from
    `environ` and `timeout`, which raises on values it would otherwise read itself (`none`
    among them: _otel_env.py)."""
    import grpc  # type: ignore[import-untyped]

    gzip = compression(environ, signal) == "gzip"
    options: dict[str, Any] = {
        "compression": grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
        "timeout": timeout,
        "endpoint": grpc_endpoint(environ, signal),
    }
    name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT"
    module = next(
        (sys.modules[k.__module__] for k in cls.__mro__ if k.__module__.startswith("opentelemetry.exporter")),
        None,
    )
    with _lock:
        seen = getattr(module, "environ", None)
        if module is None or not isinstance(seen, Mapping) or name not in seen or _parses(seen[name]):
            return cls(**options)
        # A copy without it, for as long as the constructor runs; any other reader of that
        # module's `environ` meanwhile sees the same values, that one aside.
        vars(module)["environ"] = {key: value for key, value in seen.items() if key != name}
        try:
            return cls(**options)
        finally:
            vars(module)["environ"] = seen


def _parses(value: str) -> bool:
    """Whether the SDK's float() takes `value` (its value then loses to the timeout given)."""
    try:
        float(value)
    except ValueError:
        return False
    return True

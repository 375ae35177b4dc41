"""streamtap: observable, resilient OpenAI streaming calls.

Wrap a client in one line::

    client = streamtap.instrument(openai.OpenAI())
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._engine import Engine
from ._errors import CircuitOpenError, StreamBroken, StreamInterrupted, StreamTimedOut
from ._events import (
    AttemptFinished,
    AttemptStarted,
    BreakerTransition,
    CallEvent,
    CallFinished,
    CallObserver,
    CallStarted,
    FallbackUsed,
    FirstToken,
    Recorder,
    RetryScheduled,
    RetrySuppressed,
)
from ._fallback import AnswerCache, Fallback, MemoryCache
from ._instrument import instrument
from ._policy import BreakerSettings, BudgetSettings, Policy
from ._taxonomy import Api, BreakerState, ErrorType, FallbackKind, Outcome, Phase, SuppressCause
from ._transport import AsyncStreamtapTransport, StreamtapTransport
from ._version import __version__

# Telemetry is imported on first use, so `import streamtap` does not load prometheus_client
# or the OpenTelemetry SDK for an app that brings its own recorders.
_LAZY = {
    "OtelEventRecorder": "._otel_events",
    "OtelMetricsRecorder": "._otel_metrics",
    "OtelTraceRecorder": "._otel_traces",
    "PreflightReport": "._preflight_report",
    "PrometheusRecorder": "._prometheus",
    "StreamtapInstrumentor": "._instrumentor",
    "apreflight": "._preflight",
    "default_recorders": "._telemetry",
    "mark_process_dead": "._exposition",
    "metrics_asgi_app": "._exposition",
    "metrics_wsgi_app": "._exposition",
    "preflight": "._preflight",
    "serve_metrics": "._exposition",
    "setup_telemetry": "._telemetry",
}

if TYPE_CHECKING:
    from ._exposition import mark_process_dead, metrics_asgi_app, metrics_wsgi_app, serve_metrics
    from ._instrumentor import StreamtapInstrumentor
    from ._otel_events import OtelEventRecorder
    from ._otel_metrics import OtelMetricsRecorder
    from ._otel_traces import OtelTraceRecorder
    from ._preflight import apreflight, preflight
    from ._preflight_report import PreflightReport
    from ._prometheus import PrometheusRecorder
    from ._telemetry import default_recorders, setup_telemetry


def __dir__() -> list[str]:
    # The lazy names before their first use too (REPL completion, help()), and not the
    # helpers this module imports for itself (importlib, Any, ...).
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


if not TYPE_CHECKING:
    # Hidden from type checkers, which would otherwise type any attribute of the module, a
    # misspelt one included, as Any; they read the lazy names from the imports above.
    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'streamtap' has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value


__all__ = [
    "AnswerCache",
    "Api",
    "AsyncStreamtapTransport",
    "AttemptFinished",
    "AttemptStarted",
    "BreakerSettings",
    "BreakerState",
    "BreakerTransition",
    "BudgetSettings",
    "CallEvent",
    "CallFinished",
    "CallObserver",
    "CallStarted",
    "CircuitOpenError",
    "Engine",
    "ErrorType",
    "Fallback",
    "FallbackKind",
    "FallbackUsed",
    "FirstToken",
    "MemoryCache",
    "OtelEventRecorder",
    "OtelMetricsRecorder",
    "OtelTraceRecorder",
    "Outcome",
    "Phase",
    "Policy",
    "PreflightReport",
    "PrometheusRecorder",
    "Recorder",
    "RetryScheduled",
    "RetrySuppressed",
    "StreamBroken",
    "StreamInterrupted",
    "StreamTimedOut",
    "StreamtapInstrumentor",
    "StreamtapTransport",
    "SuppressCause",
    "__version__",
    "apreflight",
    "default_recorders",
    "instrument",
    "mark_process_dead",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "preflight",
    "serve_metrics",
    "setup_telemetry",
]

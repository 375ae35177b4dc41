"""streamtap: observable, resilient OpenAI streaming calls.

Wrap a client in one line::

    client = streamtap.instrument(openai.OpenAI())
"""

from ._engine import Engine
from ._errors import CircuitOpenError, StreamInterrupted
from ._events import (
    AttemptFinished,
    AttemptStarted,
    BreakerTransition,
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
from ._transport import AsyncStreamtapTransport, StreamtapTransport
from ._version import __version__

__all__ = [
    "AnswerCache",
    "AsyncStreamtapTransport",
    "AttemptFinished",
    "AttemptStarted",
    "BreakerSettings",
    "BreakerTransition",
    "BudgetSettings",
    "CallFinished",
    "CallObserver",
    "CallStarted",
    "CircuitOpenError",
    "Engine",
    "Fallback",
    "FallbackUsed",
    "FirstToken",
    "MemoryCache",
    "Policy",
    "Recorder",
    "RetryScheduled",
    "RetrySuppressed",
    "StreamInterrupted",
    "StreamtapTransport",
    "__version__",
    "instrument",
]

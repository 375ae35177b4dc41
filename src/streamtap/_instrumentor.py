"""`StreamtapInstrumentor`: OpenTelemetry auto-instrumentation (`opentelemetry-instrument`).

Registered as the `streamtap` entry point of the `opentelemetry_instrumentor` group, so
`opentelemetry-instrument python app.py` routes every OpenAI client the app creates through
streamtap without a code change. Clients are changed in place right after the SDK's own
`__init__`: their HTTP client becomes one whose transport is streamtap's, wrapping the
client's own transport (so its pool, proxies and TLS settings stay). The SDK keeps its own
retries for the endpoints streamtap does not serve; a call streamtap served never comes back
to them (see `instrument`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import openai
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from ._engine import Engine
from ._events import Recorder
from ._fallback import Fallback
from ._instrument import install, warn_if_instrumented_twice
from ._policy import Policy

log = logging.getLogger("streamtap")

_MARK = "_streamtap_wrapper"
_ACCEPTED = (
    "policy",
    "fallbacks",
    "recorders",
    "tracer_provider",
    "meter_provider",
    "prometheus_registry",
    "logger_provider",
    "capture_content",
)
_CLASSES: tuple[type[openai.OpenAI | openai.AsyncOpenAI], ...] = (openai.OpenAI, openai.AsyncOpenAI)


class StreamtapInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Routes the chat completions and responses calls of every new OpenAI client through streamtap.

    `instrument()` (what `opentelemetry-instrument` calls, without arguments) accepts:

    Args:
        policy: retries, timeouts, budget and breaker (default `Policy()`).
        fallbacks: tried in order when a call fails before its first content.
        recorders: telemetry sinks; default `default_recorders()` (global providers and
            Prometheus REGISTRY), or `setup_telemetry(...)` when any of `tracer_provider`,
            `meter_provider`, `prometheus_registry`, `logger_provider` is given.
        tracer_provider, meter_provider, prometheus_registry, logger_provider: passed to
            `setup_telemetry` (inference events go to the logger provider when the GenAI
            variables ask for them).
        capture_content: record prompts and answers; None reads
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.

    Clients created before `instrument()` are left as they are; `uninstrument()` restores the
    SDK's constructors (clients already created keep streamtap).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 3.0",)

    def _instrument(self, **kwargs: Any) -> None:
        # A misspelt argument (`fallback=`, `polcy=`) would otherwise be dropped without a word.
        # Other *_provider arguments are the generic ones distributions hand every instrumentor.
        unknown = sorted(k for k in kwargs if k not in _ACCEPTED and not k.endswith("_provider"))
        if unknown:
            raise TypeError(
                f"StreamtapInstrumentor.instrument() got an unknown argument {unknown[0]!r}; "
                f"accepted: {', '.join(_ACCEPTED)}"
            )
        engine = Engine(
            _policy(kwargs.get("policy")),
            _fallbacks(kwargs.get("fallbacks")),
            _recorders(kwargs),
            capture_content=kwargs.get("capture_content"),
        )
        for cls in _CLASSES:
            cls.__init__ = _wrapped_init(cls.__dict__["__init__"], engine)  # type: ignore[method-assign]

    def _uninstrument(self, **kwargs: Any) -> None:
        # The instrumentor is a singleton whose constructor may run again between the two
        # calls, so the originals live on the wrappers themselves (functools.wraps' __wrapped__).
        for cls in _CLASSES:
            init = cls.__dict__["__init__"]
            if getattr(init, _MARK, False):
                cls.__init__ = init.__wrapped__  # type: ignore[method-assign]
            else:
                log.debug(
                    "streamtap: %s.__init__ was wrapped again after streamtap; left as is", cls.__name__
                )


def _policy(value: object) -> Policy | None:
    if value is None or isinstance(value, Policy):
        return value
    raise TypeError(f"StreamtapInstrumentor.instrument(policy=...) takes a streamtap.Policy, got {value!r}")


def _fallbacks(value: Any) -> Iterable[Fallback]:
    return () if value is None else value  # the Engine checks it, as for instrument()


def _recorders(kwargs: dict[str, Any]) -> Sequence[Recorder]:
    recorders = kwargs.get("recorders")
    if recorders is not None:
        return recorders  # type: ignore[no-any-return]  # the Engine checks it
    keys = ("tracer_provider", "meter_provider", "prometheus_registry", "logger_provider")
    if any(kwargs.get(key) is not None for key in keys):
        from ._telemetry import setup_telemetry

        return setup_telemetry(**{key: kwargs[key] for key in keys if kwargs.get(key) is not None})
    from ._telemetry import default_recorders

    return default_recorders()


def _wrapped_init(original: Callable[..., None], engine: Engine) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            # Here, not in _instrument: opentelemetry-instrument may load the other one later.
            warn_if_instrumented_twice()
            install(self, engine)
        except Exception:  # a client streamtap cannot route still works, as the SDK made it
            log.debug(
                "streamtap could not instrument %s; it is left as is", type(self).__name__, exc_info=True
            )

    setattr(__init__, _MARK, True)
    return __init__

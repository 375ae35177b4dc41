"""OtelMetricsRecorder: the GenAI semantic-convention client histograms, recorded per call.

Everything is recorded once, at CallFinished. In particular
`gen_ai.client.operation.time_per_output_chunk` is recorded once per call as the mean
(duration − time to first chunk) / (chunks − 1) rather than once per chunk as the conventions
describe: per-chunk recording is what makes the official instrumentation 1.42× slower on a
stream, and streamtap never does per-chunk telemetry work.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

from ._events import BreakerTransition, CallEvent, CallFinished, CallObserver, CallStarted
from ._labels import OTHER, ModelLabeler
from ._otel_attrs import PROVIDER, check_provider, operation_name
from ._version import __version__

# Advised boundaries from the GenAI metric conventions.
DURATION_BOUNDARIES: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BOUNDARIES: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
# The exact model name is an attribute here (the conventions want it exact), still capped:
# an unbounded attribute would hit the SDK's cardinality limit and fold everything together.
MAX_MODELS: Final = 200
# Distinct `server.address` and `server.port` pairs (an upstream per base URL, a fallback's own
# among them) before `server.address` `_OTHER`, which then carries no `server.port`.
MAX_SERVERS: Final = 50
# OpenAI's service tiers. Any other value an upstream sends is `_OTHER` on the metrics (the span
# keeps it as sent): a metric attribute takes no unbounded value from the wire.
SERVICE_TIERS: Final = frozenset({"auto", "default", "flex", "scale", "priority"})

Attributes = dict[str, str | int | bool]


class OtelMetricsRecorder:
    """Records gen_ai.client.* histograms once per call.

    Args:
        meter_provider: where metrics go; None uses the global provider (resolved lazily).
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        check_provider("OtelMetricsRecorder meter_provider", meter_provider, "get_meter")
        meter = metrics.get_meter("streamtap", __version__, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES,
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BOUNDARIES,
        )
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streaming response.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES,
        )
        self.time_per_output_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description="Mean time per output chunk after the first, recorded once per streaming call.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES,
        )
        caps = _caps_for(meter_provider if meter_provider is not None else metrics.get_meter_provider())
        self._models, self._response_models, self._servers = caps

    def start_call(self, event: CallStarted) -> CallObserver:
        attrs: Attributes = {
            "gen_ai.operation.name": operation_name(event.api),
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": self._models(event.model),
        }
        if event.server_address:
            # Capped as (address, port) pairs: a port is as unbounded as an address (one host,
            # as many ports as base URLs name).
            port = event.server_port
            pair = event.server_address if port is None else f"{event.server_address}:{port}"
            if self._servers(pair) == OTHER:
                attrs["server.address"] = OTHER  # and no port: a port of any server says little
            else:
                attrs["server.address"] = event.server_address
                if port is not None:
                    attrs["server.port"] = port
        return _MetricsCall(self, attrs, event.stream)

    def breaker_changed(self, event: BreakerTransition) -> None:
        """Breaker states are a Prometheus gauge; nothing to record here."""

    def telemetry_failed(self, error: BaseException) -> None:
        """Counted by the Prometheus recorder."""


# The attribute caps of a meter provider's streams: the request model, the response model (the
# upstream names one per requested one: a dated snapshot, the fine-tune id, so as many values),
# and the server. Shared by every recorder on the provider, as the streams are: a recorder per
# client must not add its own 200 models.
_Caps = tuple[ModelLabeler, ModelLabeler, ModelLabeler]
_CAPS: weakref.WeakKeyDictionary[object, _Caps] = weakref.WeakKeyDictionary()
_CAPS_LOCK = threading.Lock()


def _caps_for(provider: object) -> _Caps:
    with _CAPS_LOCK:
        try:
            found = _CAPS.get(provider)
        except TypeError:  # a provider that takes no weak reference keeps a recorder's own caps
            found = None
        if found is None:
            found = (
                ModelLabeler(MAX_MODELS, normalise=False),
                ModelLabeler(MAX_MODELS, normalise=False),
                ModelLabeler(MAX_SERVERS, normalise=False),
            )
            with contextlib.suppress(TypeError):
                _CAPS[provider] = found
        return found


def time_per_output_chunk(duration: float, ttft: float | None, chunks: int) -> float | None:
    """The mean gap after the first chunk, or None when it is undefined (< 2 chunks)."""
    if ttft is None or chunks < 2:
        return None
    return max(duration - ttft, 0.0) / (chunks - 1)


class _MetricsCall:
    __slots__ = ("_attrs", "_done", "_recorder", "_stream")

    def __init__(self, recorder: OtelMetricsRecorder, attrs: Attributes, stream: bool) -> None:
        self._recorder = recorder
        self._attrs = attrs
        self._stream = stream
        self._done = False

    def on_event(self, event: CallEvent) -> None:
        if not isinstance(event, CallFinished) or self._done:
            return
        self._done = True
        r = self._recorder
        attrs = dict(self._attrs)
        if event.response_model:
            attrs["gen_ai.response.model"] = r._response_models(event.response_model)
        if event.service_tier:
            # The OpenAI refinement of duration and token usage; a handful of values. Its
            # other attribute, openai.response.system_fingerprint, stays on the span: a value
            # per backend configuration would multiply every series for little a query needs.
            tier = event.service_tier
            attrs["openai.response.service_tier"] = tier if tier in SERVICE_TIERS else "_OTHER"
        # cancelled / abandoned calls are not errors, but their durations are not answers
        # either: `streamtap.outcome` lets a query keep them apart.
        duration_attrs: Attributes = {**attrs, "streamtap.outcome": event.outcome}
        if event.outcome == "error":
            duration_attrs["error.type"] = event.error_type or "_OTHER"
        r.duration.record(max(event.duration, 0.0), duration_attrs)
        if event.input_tokens is not None and event.input_tokens >= 0:
            r.token_usage.record(event.input_tokens, {**attrs, "gen_ai.token.type": "input"})
        if event.output_tokens is not None and event.output_tokens >= 0:
            r.token_usage.record(event.output_tokens, {**attrs, "gen_ai.token.type": "output"})
        if self._stream and event.time_to_first_token is not None:
            r.time_to_first_chunk.record(event.time_to_first_token, attrs)
            per_chunk = time_per_output_chunk(event.duration, event.time_to_first_token, event.chunks)
            if per_chunk is not None:
                r.time_per_output_chunk.record(per_chunk, attrs)

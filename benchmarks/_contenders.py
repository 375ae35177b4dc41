"""The clients the overhead benchmark races, all over the same in-memory upstream.

raw        the plain OpenAI SDK
control    a second plain OpenAI SDK client, timed like every contender: its paired difference
           to raw is what "no difference" measures in the same run (an A/A control)
engine     streamtap.instrument(raw, recorders=[]): the engine alone
glance     the engine with no Shape learnt (`no_shape`): every committed read goes through
           StreamAttempt.feed and the dialect's glance, the hot path before the Shape lane
           (give or take the empty-text test feed has since)
layered    the engine with its caller's response read through httpx2's own layers (`httpx_layers`:
           iter_bytes -> iter_raw -> the client's timer, a decoder and two chunkers per read),
           as before StreamResponse; against `engine`, what reading the body directly saves
positional the engine with Shape.fits as it was before it used removeprefix and partition
           (`positional_fits`: startswith, endswith and find with positions, whose argument
           parsing costs more than their search); against `engine`, what that change saves
floor      the engine with its hot path's test cut to the first one (`prefix_only`): a read that
           starts like the stream's content frames passes; what sitting in the byte path,
           counting and timing each chunk, costs before the other tests
unkept     the engine keeping no delivered chunk (`unkept`: each call's `delivered` a deque of one,
           a C append like the list's, so each chunk is freed once the SDK is done with it, as
           under the raw SDK); against `engine`, what holding a stream's chunks until the call
           ends costs beyond its instructions (the benchmark's streams never fail, so the
           text for an error is never asked for)
verified   the engine as the proxy runs it (`Engine(verify_events=True)`): every event it passes
           on unparsed is first checked to decode; against `engine`, what that check costs
           (in process the SDK then parses each event as well, as it always does)
telemetry  streamtap.instrument(raw, recorders=setup_telemetry(...)): OTel traces (SDK
           TracerProvider, SimpleSpanProcessor into an InMemorySpanExporter), OTel metrics
           (SDK MeterProvider, InMemoryMetricReader) and Prometheus on a fresh CollectorRegistry
official   the plain SDK patched by opentelemetry-instrumentation-genai-openai, with the same
           kind of tracer and meter providers

One recorder of `telemetry` at a time, run only when named (`--contenders`), to split what all
telemetry adds between its recorders:

prometheus    the engine with the Prometheus recorder alone, on a fresh CollectorRegistry (what
              `setup_telemetry` returns under OTEL_SDK_DISABLED=true)
otel-traces   the engine with the OTel trace recorder alone (the same in-memory tracer provider)
otel-metrics  the engine with the OTel metrics recorder alone (the same in-memory meter provider)

And one more, run only when named: `events`, all telemetry plus each call's opt-in inference event
(`setup_telemetry(events=True)`, an SDK LoggerProvider with a SimpleLogRecordProcessor into an
InMemoryLogRecordExporter, no content captured): against `telemetry`, what the event costs.

The official instrumentation patches the SDK's classes for the whole process, so it is turned
on right before each of its own repetitions and off right after, outside the timed region.
"""

from __future__ import annotations

import collections
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from _streams import MemoryUpstream
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import streamtap

if TYPE_CHECKING:
    from streamtap._dialect import Shape

# What the contenders that patch the engine replace, kept on first use. The engine's private
# modules are imported only then, so `raw` and `engine` also run over another checkout's src
# (instruction_counts.py --before-src), which may not have them.
_ORIGINALS: dict[str, Any] = {}

NAMES = (
    "raw",
    "control",
    "glance",
    "layered",
    "positional",
    "engine",
    "floor",
    "unkept",
    "verified",
    "telemetry",
    "official",
    "prometheus",
    "otel-traces",
    "otel-metrics",
    "events",
)
# Run only when named: the default runs (the verdict's) keep the contenders they always had.
BY_NAME_ONLY = ("prometheus", "otel-traces", "otel-metrics", "events")
DEFAULT_NAMES = tuple(name for name in NAMES if name not in BY_NAME_ONLY)
OFFICIAL_PACKAGE = "opentelemetry-instrumentation-genai-openai"
_OFFICIAL_MODULE = "opentelemetry.instrumentation.genai.openai"


def official_missing() -> str | None:
    """Why the official instrumentation cannot run here, or None when it can."""
    try:
        found = importlib.util.find_spec(_OFFICIAL_MODULE) is not None
    except ModuleNotFoundError:  # a parent package (opentelemetry.instrumentation) is missing
        found = False
    return None if found else f"{OFFICIAL_PACKAGE} is not installed (pip install -e '.[bench]')"


def _nothing() -> None:
    """No change to the process around a repetition."""


@dataclass
class Contender:
    """One client to time, with what to do around each repetition (untimed)."""

    name: str
    client: Any
    before: Callable[[], None] = _nothing
    after: Callable[[], None] = _nothing
    spans: InMemorySpanExporter | None = None
    registry: CollectorRegistry | None = None
    metrics: InMemoryMetricReader | None = None
    logs: InMemoryLogRecordExporter | None = None
    span_counts: list[int] = field(default_factory=list)
    event_counts: list[int] = field(default_factory=list)

    @property
    def patches_process(self) -> bool:
        """Whether a repetition changes the process (the SDK's or the engine's classes).

        Such a contender cannot share a round with others stream by stream (overhead.py
        --lockstep): its change would apply to them too.
        """
        return self.before is not _nothing

    def finish_repetition(self) -> None:
        self.after()
        if self.spans is not None:
            self.span_counts.append(len(self.spans.get_finished_spans()))
            self.spans.clear()
        if self.logs is not None:
            self.event_counts.append(len(self.logs.get_finished_logs()))
            self.logs.clear()


def in_memory_otel() -> tuple[InMemorySpanExporter, TracerProvider, MeterProvider]:
    """OTel SDK tracer and meter providers that keep what they record in memory, and the spans."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return spans, tracer_provider, meter_provider


def _raw(upstream: MemoryUpstream, mode: str) -> Any:
    options: dict[str, Any] = {"api_key": "sk-x", "base_url": "http://bench.local/v1"}
    if mode == "async":
        return openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=upstream), **options)
    return openai.OpenAI(http_client=httpx2.Client(transport=upstream), **options)


def prefix_only(shape: Shape, read: bytes) -> bool:
    """Shape.fits with only its first test: enough for the benchmark's well-formed streams."""
    return read.startswith(shape.prefix)


def positional_fits(shape: Shape, read: bytes) -> bool:
    """Shape.fits as it was written first, with positional startswith, endswith and find."""
    prefix = shape.prefix
    if not read.startswith(prefix):
        return False
    tail = shape.tail
    start = len(prefix)
    end = len(read)
    if tail is None:
        return read.endswith(b"}\n\n") and read.find(10, start) == end - 2 and 13 not in read
    quote = read.find(34, start)
    if not shape.padded:
        return quote == end - len(tail) and quote > start and read.endswith(tail)
    return (
        quote > start
        and read.startswith(tail, quote)
        and read.find(34, quote + len(tail)) == end - 4
        and read.endswith(b'"}\n\n')
    )


def use_fits(test: Callable[[Shape, bytes], bool] | None) -> None:
    """Make `test` every Shape's test, for the whole process; None puts the engine's back."""
    from streamtap._dialect import Shape

    fits = _ORIGINALS.setdefault("fits", Shape.fits)
    Shape.fits = test or fits  # type: ignore[method-assign,assignment]


def no_shape(on: bool) -> None:
    """Make (or stop making) every dialect learn no Shape, for the whole process."""
    from streamtap._chat import CHAT
    from streamtap._responses import RESPONSES

    shapes = _ORIGINALS.setdefault("shapes", {dialect: type(dialect).shape for dialect in (CHAT, RESPONSES)})
    for dialect, shape in shapes.items():
        type(dialect).shape = (lambda self, frame: None) if on else shape


def httpx_layers(on: bool) -> None:
    """Make (or stop making) the engine's caller responses read their body as httpx2 does."""
    from streamtap._stream_response import StreamResponse

    readers = _ORIGINALS.setdefault("readers", (StreamResponse.iter_bytes, StreamResponse.aiter_bytes))
    if on:
        StreamResponse.iter_bytes = httpx2.Response.iter_bytes  # type: ignore[method-assign]
        StreamResponse.aiter_bytes = httpx2.Response.aiter_bytes  # type: ignore[method-assign]
    else:
        StreamResponse.iter_bytes, StreamResponse.aiter_bytes = readers  # type: ignore[method-assign]


def unkept(on: bool) -> None:
    """Make (or stop making) every call keep at most its last delivered chunk."""
    from streamtap._engine import Engine

    start_call = _ORIGINALS.setdefault("start_call", Engine.start_call)

    def forgetful(self: Engine, *args: Any, **kwargs: Any) -> Any:
        call = start_call(self, *args, **kwargs)
        call.delivered = collections.deque(maxlen=1)
        return call

    Engine.start_call = forgetful if on else start_call  # type: ignore[method-assign]


def build(name: str, upstream: MemoryUpstream, mode: str) -> Contender:
    """The contender `name` (one of NAMES) in `mode` (sync, async)."""
    if name in ("raw", "control"):
        return Contender(name, _raw(upstream, mode))
    if name == "engine":
        return Contender(name, streamtap.instrument(_raw(upstream, mode), recorders=[]))
    if name == "glance":
        client = streamtap.instrument(_raw(upstream, mode), recorders=[])
        return Contender(name, client, before=lambda: no_shape(True), after=lambda: no_shape(False))
    if name == "layered":
        client = streamtap.instrument(_raw(upstream, mode), recorders=[])
        return Contender(name, client, before=lambda: httpx_layers(True), after=lambda: httpx_layers(False))
    if name == "positional":
        client = streamtap.instrument(_raw(upstream, mode), recorders=[])
        return Contender(name, client, before=lambda: use_fits(positional_fits), after=lambda: use_fits(None))
    if name == "floor":
        client = streamtap.instrument(_raw(upstream, mode), recorders=[])
        return Contender(name, client, before=lambda: use_fits(prefix_only), after=lambda: use_fits(None))
    if name == "unkept":
        client = streamtap.instrument(_raw(upstream, mode), recorders=[])
        return Contender(name, client, before=lambda: unkept(True), after=lambda: unkept(False))
    if name == "verified":
        from streamtap._engine import Engine
        from streamtap._instrument import streamtap_http_client

        raw = _raw(upstream, mode)
        engine = Engine(recorders=[], verify_events=True)
        return Contender(
            name, raw.copy(http_client=streamtap_http_client(raw._client, engine), max_retries=0)
        )
    if name in ("telemetry", "events"):
        spans, tracer_provider, meter_provider = in_memory_otel()
        registry = CollectorRegistry()
        logs: InMemoryLogRecordExporter | None = None
        logger_provider: LoggerProvider | None = None
        if name == "events":
            logs, logger_provider = InMemoryLogRecordExporter(), LoggerProvider()  # type: ignore[no-untyped-call]
            logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
        recorders = streamtap.setup_telemetry(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            prometheus_registry=registry,
            logger_provider=logger_provider,
            events=logs is not None,
        )
        client = streamtap.instrument(_raw(upstream, mode), recorders=recorders)
        return Contender(name, client, spans=spans, registry=registry, logs=logs)
    if name in BY_NAME_ONLY:
        return _one_recorder(name, upstream, mode)
    if name == "official":
        missing = official_missing()
        if missing is not None:
            raise RuntimeError(missing)
        module = importlib.import_module(_OFFICIAL_MODULE)
        instrumentor = module.OpenAIInstrumentor()
        spans, tracer_provider, meter_provider = in_memory_otel()

        def on() -> None:
            instrumentor.instrument(
                tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True
            )

        return Contender(name, _raw(upstream, mode), before=on, after=instrumentor.uninstrument, spans=spans)
    raise ValueError(f"contender must be one of {', '.join(NAMES)}, got {name!r}")


def _one_recorder(name: str, upstream: MemoryUpstream, mode: str) -> Contender:
    """The engine with the one recorder of `telemetry` that `name` (of BY_NAME_ONLY) names."""
    if name == "prometheus":
        registry = CollectorRegistry()
        client = streamtap.instrument(
            _raw(upstream, mode), recorders=[streamtap.PrometheusRecorder(registry)]
        )
        return Contender(name, client, registry=registry)
    if name == "otel-traces":
        spans, tracer_provider, _ = in_memory_otel()
        recorders = [streamtap.OtelTraceRecorder(tracer_provider)]
        return Contender(name, streamtap.instrument(_raw(upstream, mode), recorders=recorders), spans=spans)
    reader = InMemoryMetricReader()
    recorder = streamtap.OtelMetricsRecorder(MeterProvider(metric_readers=[reader]))
    return Contender(name, streamtap.instrument(_raw(upstream, mode), recorders=[recorder]), metrics=reader)


def patches_process(name: str) -> bool:
    """Whether contender `name` changes the process for its repetitions (Contender.patches_process)."""
    contender = build(name, MemoryUpstream(1), "sync")
    contender.client.close()
    return contender.patches_process


def open_sync(client: Any, api: str) -> Any:
    """Create one stream of `api` (chat, responses): the SDK's Stream, not yet read."""
    if api == "chat":
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Write a long story."}],
            stream=True,
            stream_options={"include_usage": True},
        )
    return client.responses.create(model="gpt-4o-mini", input="Write a long story.", stream=True)


async def open_async(client: Any, api: str) -> Any:
    """The async twin of open_sync."""
    if api == "chat":
        return await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Write a long story."}],
            stream=True,
            stream_options={"include_usage": True},
        )
    return await client.responses.create(model="gpt-4o-mini", input="Write a long story.", stream=True)


def consume_sync(client: Any, api: str) -> int:
    """Create one stream and read it to the end; the number of items the SDK yielded."""
    items = 0
    for _ in open_sync(client, api):
        items += 1
    return items


async def consume_async(client: Any, api: str) -> int:
    """The async twin of consume_sync."""
    items = 0
    async for _ in await open_async(client, api):
        items += 1
    return items

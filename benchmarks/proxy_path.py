"""The proxy's own work on a stream's time-to-first-token path: in process, no sockets.

`proxy_load.py` measures the proxy between real processes on loopback, where the host's noise
(other jobs, idle CPUs waking) moves the added time to first token by milliseconds. This
drives the proxy's ASGI app (`streamtap._proxy.Proxy`) directly: an in-memory request in,
the in-memory upstream of `overhead.py` behind it (one network read per SSE event), and times

- **first**: from the call to the `send` of the first content event (the part of a client's
  time to first token that is the proxy's own work: reading and checking the request,
  starting the call and its telemetry, building the upstream request, reading the preamble
  and the first content, and relaying them);
- **whole**: from the call to the end of the relayed stream.

Contenders, interleaved in rotating order every round: the proxy with no recorders, with
Prometheus only (`PrometheusRecorder` on a fresh registry: what `setup_telemetry` returns
under OTEL_SDK_DISABLED=true), with Prometheus and the OTel recorders on the API's no-op
providers (`otel-noop`: what it returned before), and with all telemetry (`setup_telemetry`
on OTel SDK providers with in-memory exporters and a fresh registry).
Reported: medians and p90 in µs, and each contender's paired difference to the proxy without
recorders. Loopback is not touched at all.

    python benchmarks/proxy_path.py                  # 2,000 rounds, ~15 s
    python benchmarks/proxy_path.py --rounds 200 --chunks 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from _contenders import in_memory_otel
from _streams import MemoryUpstream
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry

import streamtap
from streamtap._events import Recorder
from streamtap._proxy import Proxy
from streamtap._proxy_config import ProxyConfig

NAMES = ("none", "prometheus", "otel-noop", "telemetry")
_LABELS = {
    "none": "proxy, no recorders",
    "prometheus": "proxy, Prometheus only",
    "otel-noop": "proxy, Prometheus and the OTel recorders on no-op providers",
    "telemetry": "proxy, all telemetry (Prometheus, OTel traces and metrics)",
}
_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Write a long story."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()
_SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/v1/chat/completions",
    "raw_path": b"/v1/chat/completions",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8787"),
        (b"authorization", b"Bearer sk-bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BODY)).encode()),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ],
}


def build(name: str, chunks: int) -> tuple[Proxy, Callable[[], None]]:
    """The proxy of contender `name` over its own in-memory upstream, and its untimed cleanup."""
    config = ProxyConfig(upstream="http://bench.local/v1", listen="127.0.0.1:0")
    upstream = MemoryUpstream(chunks)
    if name == "none":
        return Proxy(config, recorders=[], transport=upstream), lambda: None
    recorders: list[Recorder]
    if name == "prometheus":
        recorders = [streamtap.PrometheusRecorder(CollectorRegistry())]
        return Proxy(config, recorders=recorders, transport=upstream), lambda: None
    if name == "otel-noop":
        traces = streamtap.OtelTraceRecorder(NoOpTracerProvider())
        recorders = [
            traces,
            streamtap.PrometheusRecorder(CollectorRegistry(), trace_ids=traces),
            streamtap.OtelMetricsRecorder(NoOpMeterProvider()),
        ]
        return Proxy(config, recorders=recorders, transport=upstream), lambda: None
    if name == "telemetry":
        spans, tracer_provider, meter_provider = in_memory_otel()
        recorders = streamtap.setup_telemetry(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            prometheus_registry=CollectorRegistry(),
        )
        return Proxy(config, recorders=recorders, transport=upstream), spans.clear
    raise ValueError(f"contender must be one of {', '.join(NAMES)}, got {name!r}")


async def one_stream(proxy: Proxy) -> tuple[int, int, bytes]:
    """Serve one streamed chat completion: ns to the first content sent, ns to the end, the body."""
    sent: list[bytes] = []
    first = 0
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": _BODY, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves: the relay's watcher waits
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal first
        body = message.get("body", b"")
        if body and not first:
            first = time.perf_counter_ns()
        sent.append(body)

    started = time.perf_counter_ns()
    await proxy(dict(_SCOPE), receive, send)
    ended = time.perf_counter_ns()
    return first - started, ended - started, b"".join(sent)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(names: list[str], rounds: int, warmup: int, chunks: int) -> dict[str, Any]:
    built = {name: build(name, chunks) for name in names}
    times: dict[str, dict[str, list[float]]] = {name: {"first": [], "whole": []} for name in names}
    contents: dict[str, set[int]] = {name: set() for name in names}
    for round_ in range(warmup + rounds):
        k = round_ % len(names)
        for name in names[k:] + names[:k]:
            proxy, cleanup = built[name]
            first, whole, body = await one_stream(proxy)
            cleanup()
            contents[name].add(body.count(b'"content":"') - body.count(b'"content":""'))
            if round_ >= warmup:
                times[name]["first"].append(first / 1000)
                times[name]["whole"].append(whole / 1000)
    result: dict[str, Any] = {"rounds": rounds, "chunks": chunks, "contenders": {}}
    base = names[0]
    for name in names:
        entry: dict[str, Any] = {"contents": sorted(contents[name])}
        for what in ("first", "whole"):
            values = times[name][what]
            entry[what] = {"median": statistics.median(values), "p90": _quantile(values, 0.9)}
            if name != base:
                paired = [a - b for a, b in zip(values, times[base][what], strict=True)]
                entry[what]["paired_vs_" + base] = statistics.median(paired)
        result["contenders"][name] = entry
    return result


def markdown(result: dict[str, Any]) -> str:
    names = list(result["contenders"])
    base = names[0]
    lines = [
        f"Python {platform.python_version()} on {platform.machine()}; {result['rounds']} rounds, "
        f"{result['chunks']} content chunks per stream, contenders interleaved.",
        "",
        "| contender | first content µs (median) | p90 | paired vs no recorders | whole stream µs (median) | p90 | paired vs no recorders |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name in names:
        entry = result["contenders"][name]
        cells = [_LABELS[name]]
        for what in ("first", "whole"):
            stats = entry[what]
            paired = stats.get("paired_vs_" + base)
            cells += [
                f"{stats['median']:,.1f}",
                f"{stats['p90']:,.1f}",
                "—" if paired is None else f"{paired:+,.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=30, help="content chunks per stream (default 30)")
    parser.add_argument(
        "--contenders", default=",".join(NAMES), help=f"comma-separated, of {', '.join(NAMES)}"
    )
    parser.add_argument("--json", action="store_true", help="print the raw result as JSON")
    args = parser.parse_args()
    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    for name in names:
        if name not in NAMES:
            parser.error(f"--contenders: {name!r} is not one of {', '.join(NAMES)}")
    result = asyncio.run(run(names, args.rounds, args.warmup, args.chunks))
    print(json.dumps(result, indent=1) if args.json else markdown(result))


if __name__ == "__main__":
    main()

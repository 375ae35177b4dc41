"""What an OTLP span export costs the exporting process: the CPU to encode one batch.

The SDK's BatchSpanProcessor encodes in its own thread, which shares the GIL with the thread
serving calls: while a batch is encoded, the serving thread waits (the proxy's time to first
token at p99, `proxy_hops.py --otlp`). This records the spans of `--calls` streamed chat
calls through door 1 with all telemetry (the in-memory upstream of `overhead.py`), then times
the OTLP/protobuf encoding of batches of each `--batches` size two ways, alternated: the
SDK's encoder as its HTTP exporter calls it (`encode_spans(...).SerializePartialToString()`)
and streamtap's (`streamtap._otlp_spans.encode_spans`, which the exporter `setup_telemetry`
builds uses), its cache of encoded attributes emptied before each batch. It checks that both
give the same bytes, and reports the median per batch and per span over `--repeats`.

Then it exports the same batches over OTLP/gRPC to a receiver on 127.0.0.1 (in process,
answering each request at once) with the SDK's gRPC exporter and with the subclass
`setup_telemetry` builds, alternated, checks that both send the same bytes, and reports the
median CPU the exporting thread spent per export (`time.thread_time`): encoding and gRPC's
Python side, what holds the GIL.

    python benchmarks/otlp_encode.py                        # 16, 64 and 512 spans, ~15 s
    python benchmarks/otlp_encode.py --batches 64 --repeats 50 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Iterator
from typing import Any

from _args import at_least_one, counts
from _contenders import build, consume_sync
from _otlp_sink import grpc_server
from _streams import MemoryUpstream
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from streamtap import _otlp_spans


@contextlib.contextmanager
def grpc_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """An OTLP/gRPC receiver on 127.0.0.1; yields its endpoint and the last body it got."""
    last: list[bytes] = [b""]
    server, port = grpc_server(0, lambda path, body: last.__setitem__(0, body))
    try:
        yield f"127.0.0.1:{port}", last
    finally:
        server.stop(None)


def export_over_grpc(batches: list[list[ReadableSpan]], repeats: int) -> list[dict[str, Any]]:
    """Per batch, the exporting thread's CPU per export: the SDK's gRPC exporter and streamtap's."""
    rows = []
    with grpc_receiver() as (endpoint, last):
        exporters = {
            "sdk": GrpcSpanExporter(endpoint=endpoint, insecure=True),
            "streamtap": _otlp_spans.with_this_encoding(GrpcSpanExporter)(endpoint=endpoint, insecure=True),
        }
        try:
            for batch in batches:
                sent = {}
                for name, exporter in exporters.items():
                    if exporter.export(batch) is not SpanExportResult.SUCCESS:
                        raise SystemExit(f"the {name} gRPC exporter failed to export {len(batch)} spans")
                    sent[name] = last[0]
                if sent["sdk"] != sent["streamtap"]:
                    raise SystemExit(f"streamtap's gRPC export of {len(batch)} spans differs from the SDK's")
                cpu: dict[str, list[float]] = {name: [] for name in exporters}
                for _ in range(repeats):
                    for name, exporter in exporters.items():
                        _otlp_spans._cache.clear()
                        started = time.thread_time()
                        exporter.export(batch)
                        cpu[name].append(time.thread_time() - started)
                rows.append(
                    {
                        "spans": len(batch),
                        "bytes": len(sent["sdk"]),
                        "sdk_cpu_ms": statistics.median(cpu["sdk"]) * 1e3,
                        "streamtap_cpu_ms": statistics.median(cpu["streamtap"]) * 1e3,
                    }
                )
        finally:
            for exporter in exporters.values():
                exporter.shutdown()
    return rows


def measure(calls: int, chunks: int, batches: list[int], repeats: int) -> dict[str, Any]:
    contender = build("telemetry", MemoryUpstream(chunks), "sync")
    assert contender.spans is not None
    for _ in range(calls):
        consume_sync(contender.client, "chat")
    spans = contender.spans.get_finished_spans()
    rows = []
    by_size = [[spans[i % len(spans)] for i in range(size)] for size in batches]
    for size, batch in zip(batches, by_size, strict=True):
        encoded = encode_spans(batch).SerializePartialToString()
        if _otlp_spans.encode_spans(batch) != encoded:
            raise SystemExit(f"streamtap's encoding of {size} spans differs from the SDK's")
        sdk, ours = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            encode_spans(batch).SerializePartialToString()
            sdk.append(time.perf_counter() - started)
            _otlp_spans._cache.clear()
            started = time.perf_counter()
            _otlp_spans.encode_spans(batch)
            ours.append(time.perf_counter() - started)
        rows.append(
            {
                "spans": size,
                "bytes": len(encoded),
                "sdk_ms": statistics.median(sdk) * 1e3,
                "streamtap_ms": statistics.median(ours) * 1e3,
                "sdk_us_per_span": statistics.median(sdk) * 1e6 / size,
                "streamtap_us_per_span": statistics.median(ours) * 1e6 / size,
            }
        )
    return {
        "settings": {"calls": calls, "chunks": chunks, "repeats": repeats},
        "python": platform.python_version(),
        "recorded_spans": len(spans),
        "batches": rows,
        "grpc_exports": export_over_grpc(by_size, repeats),
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"Python {report['python']}; the spans of {s['calls']} streamed chat calls of {s['chunks']} chunks "
        f"({report['recorded_spans']} spans: a call's and its attempt's); median of {s['repeats']} encodings.",
        "",
        "| spans per batch | SDK's encoder: ms (median) | µs per span | streamtap's: ms (median) | µs per span "
        "| SDK / streamtap | bytes |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {row['spans']} | {row['sdk_ms']:.2f} | {row['sdk_us_per_span']:.1f} | {row['streamtap_ms']:.2f} "
        f"| {row['streamtap_us_per_span']:.1f} | {row['sdk_ms'] / row['streamtap_ms']:.1f}x | {row['bytes']:,} |"
        for row in report["batches"]
    ]
    lines += [
        "",
        "Exported over OTLP/gRPC to a receiver on 127.0.0.1: the exporting thread's CPU per export (median).",
        "",
        "| spans per batch | SDK's gRPC exporter: ms | streamtap's: ms | SDK / streamtap |",
        "|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {row['spans']} | {row['sdk_cpu_ms']:.2f} | {row['streamtap_cpu_ms']:.2f} "
        f"| {row['sdk_cpu_ms'] / row['streamtap_cpu_ms']:.1f}x |"
        for row in report["grpc_exports"]
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=256, help="calls whose spans are encoded (default 256)")
    parser.add_argument("--chunks", type=int, default=30, help="content chunks per call (default 30)")
    parser.add_argument(
        "--batches", default="16,64,512", help="comma list of spans per batch (default 16,64,512)"
    )
    parser.add_argument("--repeats", type=int, default=20, help="encodings of each batch (default 20)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()
    batches = counts(parser, "batches", args.batches)
    at_least_one(parser, calls=args.calls, chunks=args.chunks, repeats=args.repeats)
    report = measure(args.calls, args.chunks, batches, args.repeats)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


if __name__ == "__main__":
    main()

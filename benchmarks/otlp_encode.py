"""What an OTLP span export costs the exporting process: the CPU to encode one batch.

The SDK's BatchSpanProcessor encodes in its own thread, which shares the GIL with the thread
serving calls: while a batch is encoded, the serving thread waits (the proxy's time to first
token at p99, `proxy_hops.py --otlp`). This records the spans of `--calls` streamed chat
calls through door 1 with all telemetry (the in-memory upstream of `overhead.py`), then times
the OTLP/protobuf encoding of batches of each `--batches` size two ways, alternated: the
SDK's encoder as its HTTP exporter calls it (`encode_spans(...).SerializePartialToString()`)
and streamtap's (`streamtap._otlp_spans.encode_spans`, which the exporter `setup_telemetry`
builds uses), its cache of encoded attributes emptied before each batch. It checks that both
give the same bytes, and reports the median per batch and per span over `--repeats`. Nothing
touches a socket.

    python benchmarks/otlp_encode.py                        # 16, 64 and 512 spans, ~10 s
    python benchmarks/otlp_encode.py --batches 64 --repeats 50 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

from _args import at_least_one, counts
from _contenders import build, consume_sync
from _streams import MemoryUpstream
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from streamtap import _otlp_spans


def measure(calls: int, chunks: int, batches: list[int], repeats: int) -> dict[str, Any]:
    contender = build("telemetry", MemoryUpstream(chunks), "sync")
    assert contender.spans is not None
    for _ in range(calls):
        consume_sync(contender.client, "chat")
    spans = contender.spans.get_finished_spans()
    rows = []
    for size in batches:
        batch = [spans[i % len(spans)] for i in range(size)]
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

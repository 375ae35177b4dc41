"""What an OTLP span export costs the exporting process: the CPU to encode one batch.

The SDK's BatchSpanProcessor encodes in its own thread, which shares the GIL with the thread
serving calls: while a batch is encoded, the serving thread waits (the proxy's time to first
token at p99, `proxy_hops.py --otlp`). This records the spans of `--calls` streamed chat
calls through door 1 with all telemetry (the in-memory upstream of `overhead.py`), then times
the OTLP/protobuf encoding of batches of each `--batches` size, as the HTTP exporter does it
(`encode_spans(...).SerializePartialToString()`), and reports the median per batch and per
span over `--repeats`. Nothing touches a socket.

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

from _contenders import build, consume_sync
from _streams import MemoryUpstream
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans


def measure(calls: int, chunks: int, batches: list[int], repeats: int) -> dict[str, Any]:
    contender = build("telemetry", MemoryUpstream(chunks), "sync")
    assert contender.spans is not None
    for _ in range(calls):
        consume_sync(contender.client, "chat")
    spans = contender.spans.get_finished_spans()
    rows = []
    for size in batches:
        batch = [spans[i % len(spans)] for i in range(size)]
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            encoded = encode_spans(batch).SerializePartialToString()
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        rows.append(
            {"spans": size, "ms": median * 1e3, "us_per_span": median * 1e6 / size, "bytes": len(encoded)}
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
        "| spans per batch | encoding ms (median) | µs per span | bytes |",
        "|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {row['spans']} | {row['ms']:.2f} | {row['us_per_span']:.1f} | {row['bytes']:,} |"
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
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches must be a comma list of whole numbers, got {args.batches!r}")
    for name, value in (
        ("calls", args.calls),
        ("chunks", args.chunks),
        ("repeats", args.repeats),
        *(("batches", b) for b in batches),
    ):
        if value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    report = measure(args.calls, args.chunks, batches, args.repeats)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


if __name__ == "__main__":
    main()

"""What a scrape of /metrics costs the serving process: the CPU to write one exposition.

The proxy's `/metrics` (and `metrics_asgi_app`, `metrics_wsgi_app`) write the exposition in
a worker thread, which still holds the GIL against the thread serving calls while it runs
(`proxy_hops.py --scrape`). Every series is per `api` and `model`, so the cost grows with the
models served. This records `--calls` streamed calls per (api, model) for `--models` models
through door 1 with all telemetry (the in-memory upstream of `overhead.py`; the histograms
carry exemplars), then answers a scrape in process, alternated, with prometheus_client's own
WSGI app and with streamtap's, and reports the median over `--repeats`:

- `openmetrics`: what Prometheus asks for (OpenMetrics 1.0.0 before the text format, gzip);
- `text`: the text format 0.0.4, uncompressed.

It checks that both apps answer the same bytes (decompressed), and times gzip alone on the
compressed scrape's body at streamtap's level and at prometheus_client's 9. Nothing touches a
socket.

    python benchmarks/exposition.py                    # 1 and 20 models, ~15 s
    python benchmarks/exposition.py --models 50 --repeats 20 --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

from _args import at_least_one, counts
from _contenders import build
from _streams import MemoryUpstream
from prometheus_client import CollectorRegistry, make_wsgi_app

from streamtap import metrics_wsgi_app
from streamtap._exposition import GZIP_LEVEL

SCRAPES = {
    "openmetrics": {
        "HTTP_ACCEPT": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "HTTP_ACCEPT_ENCODING": "gzip",
    },
    "text": {},
}


def _registry(models: int, calls: int, chunks: int) -> CollectorRegistry:
    contender = build("telemetry", MemoryUpstream(chunks), "sync")
    assert contender.registry is not None
    client = contender.client
    for model in range(models):
        for _ in range(calls):
            name = f"gpt-bench-{model}"
            for _chunk in client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], stream=True
            ):
                pass
            for _event in client.responses.create(model=name, input="hi", stream=True):
                pass
    return contender.registry


def _scrape(app: Callable[..., Iterable[bytes]], environ: dict[str, str]) -> bytes:
    headers: dict[str, str] = {}

    def start_response(status: str, sent: list[tuple[str, str]]) -> None:
        headers.update({name.lower(): value for name, value in sent})

    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", **environ}, start_response))
    return gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body


def _gzip_levels(body: bytes, repeats: int) -> dict[int, dict[str, float]]:
    """The median ms and the size of `body` gzipped at streamtap's level and prometheus_client's."""
    levels = {}
    for level in (GZIP_LEVEL, 9):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            size = len(gzip.compress(body, compresslevel=level))
            times.append(time.perf_counter() - started)
        levels[level] = {"ms": statistics.median(times) * 1e3, "bytes": size}
    return levels


def measure(models: list[int], calls: int, chunks: int, repeats: int) -> dict[str, Any]:
    rows = []
    for count in models:
        registry = _registry(count, calls, chunks)
        theirs, ours = make_wsgi_app(registry), metrics_wsgi_app(registry)
        for scrape, environ in SCRAPES.items():
            body = _scrape(theirs, environ)
            if _scrape(ours, environ) != body:
                raise SystemExit(
                    f"streamtap's {scrape} exposition of {count} models differs from prometheus_client's"
                )
            times: dict[str, list[float]] = {"prometheus_client": [], "streamtap": []}
            for _ in range(repeats):
                for name, app in (("prometheus_client", theirs), ("streamtap", ours)):
                    started = time.perf_counter()
                    _scrape(app, environ)
                    times[name].append(time.perf_counter() - started)
            rows.append(
                {
                    "models": count,
                    "scrape": scrape,
                    "lines": body.count(b"\n"),
                    "bytes": len(body),
                    "prometheus_client_ms": statistics.median(times["prometheus_client"]) * 1e3,
                    "streamtap_ms": statistics.median(times["streamtap"]) * 1e3,
                    "gzip": _gzip_levels(body, repeats) if environ.get("HTTP_ACCEPT_ENCODING") else None,
                }
            )
    return {
        "settings": {"calls": calls, "chunks": chunks, "repeats": repeats},
        "python": platform.python_version(),
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"Python {report['python']}; {s['calls']} streamed chat and responses calls of {s['chunks']} chunks "
        f"per model; median of {s['repeats']} scrapes, alternated.",
        "",
        "| models | scrape | lines | bytes | prometheus_client's app: ms | streamtap's: ms | ratio |",
        "|--:|---|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {row['models']} | {row['scrape']} | {row['lines']:,} | {row['bytes']:,} "
        f"| {row['prometheus_client_ms']:.2f} | {row['streamtap_ms']:.2f} "
        f"| {row['prometheus_client_ms'] / row['streamtap_ms']:.2f}x |"
        for row in report["rows"]
    ]
    lines += [
        "",
        "Of which gzip, the body alone, by level (streamtap's first, then prometheus_client's):",
        "",
        "| models | scrape | level | ms (median) | bytes |",
        "|--:|---|--:|--:|--:|",
    ]
    lines += [
        f"| {row['models']} | {row['scrape']} | {level} | {cost['ms']:.2f} | {cost['bytes']:,} |"
        for row in report["rows"]
        if row["gzip"]
        for level, cost in row["gzip"].items()
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="1,20", help="comma list of models served (default 1,20)")
    parser.add_argument("--calls", type=int, default=3, help="calls per (api, model) (default 3)")
    parser.add_argument("--chunks", type=int, default=10, help="content chunks per call (default 10)")
    parser.add_argument("--repeats", type=int, default=15, help="scrapes per app (default 15)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()
    models = counts(parser, "models", args.models)
    at_least_one(parser, calls=args.calls, chunks=args.chunks, repeats=args.repeats)
    report = measure(models, args.calls, args.chunks, args.repeats)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


if __name__ == "__main__":
    main()

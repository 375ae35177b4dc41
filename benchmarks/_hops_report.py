"""proxy_hops.py's report: the hops it times (each between two of the points `_hop_hooks.py`
notes), their p50 / p90 / p99 per way, the added time to first token per round, and the
Markdown of docs/benchmarks.md's hop tables.
"""

from __future__ import annotations

import statistics
from typing import Any

from _load_procs import gc_summary
from _stats import quantile

PROXIED = (
    ("client to proxy", "sent", "entry"),
    ("proxy: request to upstream write", "entry", "written"),
    ("proxy to fake", "written", "received"),
    ("fake: time to first token", "received", "answered"),
    ("fake to proxy", "answered", "content"),
    ("proxy: first content to relayed", "content", "relayed"),
    ("proxy to client", "relayed", "first"),
    ("whole: time to first token", "sent", "first"),
)
DIRECT = (
    ("client to fake", "sent", "received"),
    ("fake: time to first token", "received", "answered"),
    ("fake to client", "answered", "first"),
    ("whole: time to first token", "sent", "first"),
)
# The hop into the proxy, split where uvicorn gets the bytes and where it has parsed the head.
INTO_PROXY = (
    ("client to proxy: to uvicorn's read of it", "sent", "read"),
    ("client to proxy: uvicorn's parse of the head", "read", "parsed"),
    ("client to proxy: from the app's task created to its start", "parsed", "entry"),
)
# The proxy's two steps again, in the CPU time of its thread (`_hop_hooks`).
PROXY_CPU = (
    ("proxy: request to upstream write, its thread's CPU time", "entry_cpu", "written_cpu"),
    ("proxy: first content to relayed, its thread's CPU time", "content_cpu", "relayed_cpu"),
)
# The proxy's own parts of a proxied request's way: the hops into it and its two steps.
OWN = (
    "client to proxy",
    "proxy: request to upstream write",
    "fake to proxy",
    "proxy: first content to relayed",
)


def _hops(rows: list[dict[str, Any]], spans: tuple[tuple[str, str, str], ...]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name, start, end in spans:
        values = [(r[end] - r[start]) * 1000 for r in rows]
        table[name] = {f"p{q}": quantile(values, q / 100) for q in (50, 90, 99)} if values else {}
    return table


def summarise(
    settings: dict[str, Any],
    marks: dict[int, dict[str, Any]],
    starts: list[float],
    pauses: list[tuple[float, int, float]],
    exported: dict[str, Any] | None,
    scrapes: list[float],
) -> dict[str, Any]:
    """The report of a run: `marks` are every request's points (by request id), `starts` when
    each round began, `pauses` the proxy's garbage collections, `exported` what the OTLP sink
    received, `scrapes` how long each scrape of /metrics took (seconds)."""
    relay, ramp, duration = settings["relay"], settings["ramp"], settings["duration"]
    # Through the relay a request passes the rig's points only, as a direct one does.
    spans = DIRECT if relay else PROXIED
    rounds, proxied, direct = [], [], []
    for start in starts:
        steady = [m for m in marks.values() if start + ramp <= m["sent"] < start + duration]
        ways = (
            [m for m in steady if m["proxied"] and all(k in m for _, a, b in spans for k in (a, b))],
            [m for m in steady if not m["proxied"] and all(k in m for _, a, b in DIRECT for k in (a, b))],
        )
        proxied += ways[0]
        direct += ways[1]
        whole = [[(m["first"] - m["sent"]) * 1000 for m in way] for way in ways]
        rounds.append(
            {
                "proxied": len(ways[0]),
                "direct": len(ways[1]),
                **{
                    f"added_p{q}_ms": quantile(whole[0], q / 100) - quantile(whole[1], q / 100)
                    for q in (50, 99)
                    if whole[0] and whole[1]
                },
            }
        )
    own = [] if relay else [sum((m[b] - m[a]) * 1000 for n, a, b in spans if n in OWN) for m in proxied]
    added = {
        q: statistics.median(r[f"added_{q}_ms"] for r in rounds if f"added_{q}_ms" in r)
        for q in ("p50", "p99")
        if any(f"added_{q}_ms" in r for r in rounds)
    }
    return {
        "settings": settings,
        "requests": {"proxied": len(proxied), "direct": len(direct)},
        "rounds": rounds,
        "added": added,
        "proxied": _hops(proxied, spans),
        "direct": _hops(direct, DIRECT),
        "proxy_own": {f"p{q}": quantile(own, q / 100) for q in (50, 90, 99)} if own else {},
        "into_proxy": _hops([m for m in proxied if "parsed" in m], INTO_PROXY),
        "proxy_cpu": _hops([m for m in proxied if "entry_cpu" in m], PROXY_CPU),
        "proxy_gc": gc_summary(pauses, [(s + ramp, s + duration) for s in starts]) if pauses else None,
        "exported": exported,
        "scrapes_ms": {
            "count": len(scrapes),
            "p50": quantile([t * 1000 for t in scrapes], 0.5),
            "max": max(scrapes) * 1000,
        }
        if scrapes
        else None,
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    telemetry = (
        f"Prometheus and the OTel SDK, exporting over {'OTLP/gRPC' if s['otlp'] == 'grpc' else 'OTLP/HTTP'}"
        if s["otlp"]
        else "Prometheus and the OTel SDK (no exporter)"
        if s["otel"]
        else "Prometheus only"
    )
    through = "a byte relay (no HTTP)" if s["relay"] else f"the proxy ({telemetry})"
    lines = [
        f"{s['streams']} streams through {through} and {s['control_streams']} straight to the "
        f"fake, at once; {s['chunks']} content chunks {s['gap'] * 1000:g} ms apart, fake TTFT "
        f"{s['ttft'] * 1000:g} ms; {s['warmup']:g} s of warm-up, then {s['rounds']} rounds of {s['duration']:g} s, "
        f"the first {s['ramp']:g} s "
        f"of each left out; {report['requests']['proxied']:,} proxied and {report['requests']['direct']:,} "
        "direct requests"
        + (f"; the proxied streams ask for {s['models']} models" if s.get("models", 1) > 1 else "")
        + (f"; the proxy's /metrics scraped every {s['scrape']:g} s" if s.get("scrape") else "")
        + ".",
        "",
        "Added time to first token (proxied minus direct, the same moment), ms: "
        + "; ".join(
            f"{q} {report['added'][q]:+.2f} (rounds: "
            + ", ".join(f"{r[f'added_{q}_ms']:+.2f}" for r in report["rounds"] if f"added_{q}_ms" in r)
            + ")"
            for q in ("p50", "p99")
            if q in report["added"]
        )
        + ".",
        "",
        "| hop | proxied p50 ms | p90 | p99 | direct p50 ms | p90 | p99 |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]

    def cells(row: dict[str, float] | None) -> str:
        return " | ".join(f"{row[q]:.2f}" for q in ("p50", "p90", "p99")) if row else " | ".join(["–"] * 3)

    direct_of = {"client to proxy": "client to fake", "proxy to client": "fake to client"}
    for name in report["proxied"]:
        twin = direct_of.get(name, name)
        lines.append(
            f"| {name} | {cells(report['proxied'].get(name))} | {cells(report['direct'].get(twin))} |"
        )
    gc = report.get("proxy_gc")
    gc_lines = []
    if gc:
        gens = gc["generations"]
        gc_lines = [
            "",
            f"The {'relay' if s['relay'] else 'proxy'}'s garbage collections in the measured windows: "
            + ", ".join(
                f"gen {g} {gens[g]['count']:,} (longest {gens[g]['longest_ms']:.1f} ms)"
                for g in ("0", "1", "2")
            )
            + f"; {gc['ms_per_s']:.1f} ms paused per second of load.",
        ]
    scrapes = report.get("scrapes_ms")
    if scrapes:
        gc_lines += [
            "",
            f"Scrapes of /metrics: {scrapes['count']}, each answered whole in {scrapes['p50']:.1f} ms "
            f"at the median, {scrapes['max']:.1f} at most.",
        ]
    exported = report.get("exported")
    if exported:
        batches = exported["span_batches"]
        requests = exported["requests"]
        gc_lines += [
            "",
            f"Exported to the sink, the stop's flush included: {sum(batches):,} spans in "
            f"{len(batches):,} requests (largest {max(batches, default=0)}), "
            f"{requests.get('/v1/metrics', 0)} metrics requests, {exported['bytes'] / 1e6:.1f} MB.",
        ]
    if s["relay"]:  # no proxy points through the relay
        return "\n".join(lines + gc_lines)
    own = report["proxy_own"]
    lines.append(
        f"| the proxy's own: the hops into it and its two steps, summed | {cells(own)} | – | – | – |"
    )
    for key, spans in (("into_proxy", INTO_PROXY), ("proxy_cpu", PROXY_CPU)):
        for name, _, _ in spans:
            lines.append(f"| {name} | {cells(report[key].get(name))} | – | – | – |")
    return "\n".join(lines + gc_lines)

"""Where a proxied stream's time to first token goes under load, hop by hop.

`proxy_load.py` tells how much later a client sees its first token through the proxy than
straight from the fake upstream; this tells where that time is spent. One process (the rig)
runs the fake upstream and the load generator on one event loop, pinned to one CPU; the proxy
(`streamtap proxy`, Prometheus only unless `--otel` or `--otlp`) runs on the other. The rig keeps
`--streams` streams open through the proxy and `--control-streams` straight to the fake, all
at once, for `--warmup` seconds unmeasured and then `--rounds` rounds of `--duration` seconds.
The rig's garbage collector is paused during each of them and collects between them: its
collections (up to 84 ms) would otherwise land in the times it measures. Every request carries
an id, and each process notes when it passes each point of its way (`_hop_hooks.py`; one
monotonic clock for the machine):

    proxied: sent → [client to proxy] → entry → [proxy: request] → written → [proxy to fake]
             → received → [fake: TTFT] → answered → [fake to proxy] → content
             → [proxy: first content] → relayed → [proxy to client] → first
    direct:  sent → [client to fake] → received → [fake: TTFT] → answered → [fake to client] → first

A hop between processes holds the kernel's delivery and the time until the receiving event
loop gets to the bytes: with a loop busy relaying other streams, mostly the latter.
Reported: per round, the added time to first token (a proxied request's whole time minus a
direct one's of the same round, at p50 and p99) and its median over rounds; p50 / p90 / p99 in
ms of every hop, over the requests started after each round's `--ramp`. Loopback only; bounded
by `--warmup` plus `--rounds` × `--duration`, plus the streams in flight.

    python benchmarks/proxy_hops.py                       # 200 streams, 50 ms apart, 10 s
    python benchmarks/proxy_hops.py --streams 20 --markdown
    python benchmarks/proxy_hops.py --relay               # the same through a byte relay
    python benchmarks/proxy_hops.py --otlp                # exporting spans and metrics
    python benchmarks/proxy_hops.py --otlp grpc           # the same over OTLP/gRPC
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512 python benchmarks/proxy_hops.py --otlp   # the SDK's batches
    python benchmarks/proxy_hops.py --models 20 --scrape 5   # 20 models' /metrics, scraped every 5 s

`--relay` puts `_byte_relay.py` in the proxy's place, a process that copies bytes and parses
nothing: its added time is what a second process in the path costs here by itself. Through it
a request passes the rig's points only, so its table has the direct way's rows.

`--otel` records every span and OTel metric and exports nothing; `--otlp` exports them as
shipped, over OTLP/HTTP (`--otlp grpc`: OTLP/gRPC) to `_otlp_sink.py` (a receiver that keeps
nothing, on the rig's CPU), its metrics every 10 s. The proxy reads the usual OTEL_* variables, so the SDK's own settings
can be tried the same way. `--models N` has the proxied streams ask for N models, a share
each, which multiplies the proxy's series; `--scrape S` scrapes its /metrics every S seconds
from the rig (OpenMetrics and gzip, as Prometheus asks) and reports how long each took.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _load_client  # noqa: E402
import _load_procs as procs  # noqa: E402
from _hop_hooks import install_rig_hooks  # noqa: E402
from _hops_report import markdown, summarise  # noqa: E402

_SETTINGS = (
    "streams", "control_streams", "chunks", "gap", "ttft", "warmup", "duration", "ramp", "rounds", "otel",
    "otlp", "relay", "models", "scrape",
)  # fmt: skip
_PRELUDE = (
    "import sys; sys.path.insert(0, {here!r}); import _hop_hooks; from pathlib import Path; "
    "_hop_hooks.install_proxy_hooks(Path({out!r})); "
)


async def _scrape(url: str, every: float, took: list[float]) -> None:
    """GET `url` every `every` seconds, as Prometheus does (OpenMetrics, gzip), until cancelled;
    note in `took` how long each answer took to arrive whole."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    head = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
        "Accept-Encoding: gzip\r\n\r\n"
    ).encode()
    while True:
        await asyncio.sleep(every)
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(head)
        await reader.read()  # to the end: the server closes
        took.append(time.perf_counter() - started)
        writer.close()


async def _load(
    args: argparse.Namespace, proxy_url: str, fake_url: str, fake_port: int, scrapes: list[float]
) -> list[float]:
    """Run `args.rounds` rounds of load against one fake, scraping the proxy's /metrics every
    `args.scrape` seconds when it is over 0 (their times in `scrapes`); when each round began."""
    from streamtap.fake import FakeConfig
    from streamtap.fake._upstream import FakeUpstream

    config = FakeConfig(chunks=args.chunks, ttft=args.ttft, gap=args.gap, port=fake_port)
    starts: list[float] = []
    async with FakeUpstream(config):
        load = {
            "streams": args.streams,
            "duration_s": args.duration,
            "ramp_s": args.ramp,
            "chunks": args.chunks,
            "stream_s": args.ttft + args.chunks * args.gap,
            "models": args.models,
        }
        scraper = None
        if args.scrape > 0:
            metrics = proxy_url.removesuffix("/v1") + "/metrics"
            scraper = asyncio.ensure_future(_scrape(metrics, args.scrape, scrapes))
        if args.warmup > 0:  # unmeasured: the proxy's connections, caches and first collections
            await _round(args, proxy_url, fake_url, {**load, "duration_s": args.warmup})
        for _ in range(args.rounds):
            starts.append(time.perf_counter())
            await _round(args, proxy_url, fake_url, load)
        if scraper is not None:
            scraper.cancel()
    return starts


async def _round(args: argparse.Namespace, proxy_url: str, fake_url: str, load: dict[str, Any]) -> None:
    # The rig's own garbage collections (up to 84 ms here) would land in the times to first
    # token of whichever requests were in flight: none during a round, one between rounds.
    gc.collect()
    gc.disable()
    try:
        await asyncio.gather(
            _load_client.run_load(proxy_url + "/chat/completions", **load),
            _load_client.run_load(
                fake_url + "/chat/completions", **{**load, "streams": args.control_streams, "models": 1}
            ),
        )
    finally:
        gc.enable()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the rounds; the hops of every proxied and direct request started after a round's ramp,
    and per round the added time to first token (proxied minus direct, same moment)."""
    cpus = sorted(os.sched_getaffinity(0))
    rig_cpus, proxy_cpus = ({cpus[0]}, {cpus[-1]}) if len(cpus) > 1 and not args.no_pin else (None, None)
    marks: dict[int, dict[str, Any]] = {}
    scrapes: list[float] = []
    fake_port = procs.free_port()
    fake_url = f"http://127.0.0.1:{fake_port}/v1"
    with tempfile.TemporaryDirectory(prefix="proxy-hops-") as tmp:
        work = Path(tmp)
        trace = work / "proxy.jsonl"
        sink = endpoint = None
        if args.relay:
            proxy, proxy_url = procs.start_relay(fake_url, proxy_cpus, work)
        else:
            name = "streamtap-otel" if args.otel else "streamtap"
            if args.otlp:
                grpc = args.otlp == "grpc"
                name = "streamtap-otlp-grpc" if grpc else "streamtap-otlp"
                sink, endpoint = procs.start_otlp_sink(rig_cpus, work, grpc=grpc)
            prelude = _PRELUDE.format(here=str(HERE), out=str(trace))
            proxy, proxy_url = procs.start_streamtap(
                fake_url, proxy_cpus, work, name, prelude=prelude, otlp=endpoint
            )
        try:
            if rig_cpus:
                os.sched_setaffinity(0, rig_cpus)
            install_rig_hooks(marks, fake_port)
            with asyncio.Runner(loop_factory=procs.uvloop_factory()) as runner:
                starts = runner.run(_load(args, proxy_url, fake_url, fake_port, scrapes))
        finally:
            procs.stop(proxy)  # first: it flushes what it still holds to the sink
            if sink is not None:
                procs.stop(sink)
            if rig_cpus:
                os.sched_setaffinity(0, set(cpus))
        # The proxy noted its garbage collections (procs.gc_probe_env) and wrote them as it exited.
        pauses = procs.gc_pauses(work, proxy.pid)
        exported = procs.otlp_received(work) if sink is not None else None
        for line in trace.read_text().splitlines() if trace.exists() else ():
            row = json.loads(line)
            marks.get(row.pop("rid"), {}).update(row)
    settings = {k: getattr(args, k) for k in _SETTINGS}
    return summarise(settings, marks, starts, pauses, exported, scrapes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=200, help="streams through the proxy (default 200)")
    parser.add_argument(
        "--control-streams", type=int, default=40, help="streams straight to the fake (default 40)"
    )
    parser.add_argument("--chunks", type=int, default=30, help="content chunks per stream (default 30)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between chunks (default 0.05)")
    parser.add_argument(
        "--ttft", type=float, default=0.05, help="the fake's time to first token (default 0.05)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds left out of each round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of load (default 3)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of unmeasured load before the rounds (default 5)"
    )
    parser.add_argument(
        "--otel", action="store_true", help="the proxy with the OTel SDK recording too, exporting nothing"
    )
    parser.add_argument(
        "--otlp",
        nargs="?",
        const="http/protobuf",
        choices=("http/protobuf", "grpc"),
        help="the proxy with the OTel SDK exporting to a local receiver, as shipped, over OTLP/HTTP "
        "(or the protocol named: http/protobuf, grpc)",
    )
    parser.add_argument(
        "--relay",
        action="store_true",
        help="a byte relay (_byte_relay.py) in the proxy's place: what a second process adds by itself",
    )
    parser.add_argument(
        "--models",
        type=int,
        default=1,
        help="models the proxied streams ask for, a share each (default 1): the size of /metrics",
    )
    parser.add_argument(
        "--scrape",
        type=float,
        default=0.0,
        help="seconds between scrapes of the proxy's /metrics, as Prometheus does (default 0: none)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the rig and the proxy to CPUs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--markdown", action="store_true", help="print Markdown (the default)")
    args = parser.parse_args()
    if args.relay + args.otel + bool(args.otlp) > 1:
        parser.error("--relay, --otel and --otlp each name what runs in the proxy's place: pick one")
    if args.scrape < 0:
        parser.error(f"--scrape must be 0 (none) or seconds between scrapes, got {args.scrape}")
    if args.scrape and args.relay:
        parser.error("--scrape needs the proxy: a byte relay has no /metrics")
    for field in ("streams", "control_streams", "chunks", "rounds", "models"):
        if getattr(args, field) < 1:
            parser.error(f"--{field.replace('_', '-')} must be at least 1")
    report = measure(args)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


if __name__ == "__main__":
    main()

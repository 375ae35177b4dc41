"""Where a call's telemetry time goes, timed where it runs: inside a long stream, not in a loop.

`overhead.py --chunks 1` times telemetry's per-call work with calls one after another, where
the recorders' code and data stay in the caches. In a 500-chunk stream the SDK's work between
a call's start, its first token and its end evicts them. This reads `telemetry`'s streams (the
contender of `overhead.py`: Prometheus, OTel traces and metrics on in-memory providers) and
times, with `perf_counter`, each recorder's handling of each event and the start of each call's
recorders; it prints µs per call for each, their sum, and the whole call.

    python benchmarks/telemetry_in_situ.py                        # sync chat, 500 chunks, 60 calls
    python benchmarks/telemetry_in_situ.py --chunks 1 --calls 2000 # the same work, calls in a loop
    python benchmarks/telemetry_in_situ.py --mode async
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from typing import Any

from _contenders import build, consume_async, consume_sync
from _streams import MemoryUpstream

from streamtap import _events


def timed(spent: dict[tuple[str, str], float]) -> None:
    """Time every recorder's handling of every event into `spent` (seconds), for the process."""

    def deliver(self: Any, event: Any) -> None:
        for observer in self._observers:
            started = time.perf_counter()
            observer.on_event(event)
            spent[(type(observer).__name__, type(event).__name__)] += time.perf_counter() - started

    start_call = _events.Fanout.start_call

    def starting(self: _events.Fanout, event: Any) -> Any:
        started = time.perf_counter()
        observer = start_call(self, event)
        spent[("every recorder", "start_call")] += time.perf_counter() - started
        return observer

    _events._GuardedCall._deliver = deliver  # type: ignore[method-assign]
    _events.Fanout.start_call = starting  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("sync", "async"), default="sync")
    parser.add_argument("--api", choices=("chat", "responses"), default="chat")
    parser.add_argument("--chunks", type=int, default=500, help="content chunks per stream (500)")
    parser.add_argument("--calls", type=int, default=60, help="timed calls (60)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first (10)")
    args = parser.parse_args()

    spent: collections.defaultdict[tuple[str, str], float] = collections.defaultdict(float)
    timed(spent)
    contender = build("telemetry", MemoryUpstream(args.chunks), args.mode)

    def call() -> None:
        if args.mode == "sync":
            consume_sync(contender.client, args.api)
        else:
            asyncio.run(consume_async(contender.client, args.api))
        contender.finish_repetition()

    for _ in range(args.warmup):
        call()
    spent.clear()
    started = time.perf_counter()
    for _ in range(args.calls):
        call()
    whole = (time.perf_counter() - started) / args.calls * 1e6
    print(
        f"{args.api} {args.mode}, {args.chunks} chunks a stream, {args.calls} calls: {whole:,.0f} µs a call"
    )
    print("| recorder | event | µs a call |")
    print("|---|---|--:|")
    for (recorder, event), seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"| {recorder} | {event} | {seconds / args.calls * 1e6:.1f} |")
    total = sum(spent.values()) / args.calls * 1e6
    print(f"| all | | {total:.1f} ({total / max(args.chunks, 1):.2f} a chunk) |")


if __name__ == "__main__":
    main()

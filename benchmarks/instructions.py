"""Run streams of one contender over the in-memory upstream, for an instruction counter.

Timing on a shared 2-core machine is noisy; instruction counts are not. Run this under
valgrind's callgrind twice, with N and with 0 measured streams, and subtract:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/instructions.py chat engine 4      # then with 0 instead of 4

(difference / 4 / 500 = instructions per chunk; `--mode async` runs the async client on
asyncio). Contenders are those of overhead.py; `floor` is the engine with its hot path's test
cut to the first one, to see what the rest costs. `instruction_counts.py` runs the pairs and
prints the table.
"""

from __future__ import annotations

import argparse
import asyncio

from _contenders import NAMES, build, consume_async, consume_sync
from _streams import CHUNKS, MemoryUpstream


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("api", choices=("chat", "responses"))
    parser.add_argument("contender", choices=NAMES)
    parser.add_argument("streams", type=int, help="measured streams (after 2 unmeasured ones)")
    parser.add_argument("--chunks", type=int, default=CHUNKS)
    parser.add_argument("--mode", choices=("sync", "async"), default="sync")
    args = parser.parse_args()
    if args.mode == "async":
        asyncio.run(_consume_async(args.api, args.contender, args.streams, args.chunks))
        return
    contender = build(args.contender, MemoryUpstream(args.chunks), "sync")
    contender.before()  # e.g. installs the prefix-only test of `floor`
    for _ in range(2 + args.streams):
        consume_sync(contender.client, args.api)


async def _consume_async(api: str, name: str, streams: int, chunks: int) -> None:
    # Async clients belong to the event loop they first run in: build them inside it.
    contender = build(name, MemoryUpstream(chunks), "async")
    contender.before()
    for _ in range(2 + streams):
        await consume_async(contender.client, api)


if __name__ == "__main__":
    main()

"""Instructions per chunk, per contender, counted by valgrind: the deterministic overhead table.

For every contender and mode it runs `instructions.py` under callgrind with N and with 0
measured streams (each after the same 2 warm-up streams) and reports (count(N) − count(0)) /
N / chunks, and that figure minus the raw SDK's. The same command gives the same counts to
within a few hundred instructions per chunk, but the memory layout moves them: 40 more bytes
of environment shift the raw SDK by ~3 k per chunk (where objects land decides hash-table
collisions and cache lines). So every figure is measured under `--layouts` environments of
different sizes (an unused variable of 0, 40, 80, ... bytes); the table gives the median over
them and, for the difference to the raw SDK (paired within each layout), its range.

    python benchmarks/instruction_counts.py --contenders raw,layered,engine --modes sync,async
    python benchmarks/instruction_counts.py --before-src ../old/src    # adds the engine there

`--before-src` runs the engine of another checkout (its `src` first on PYTHONPATH) beside the
others, as the row "engine (before)". Needs valgrind; with 2 jobs a run takes ~3 minutes per
row, mode and layout. Progress goes to stderr, the Markdown table to stdout.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import _valgrind
from _streams import CHUNKS

HERE = Path(__file__).resolve().parent
_COLLECTED = re.compile(r"Collected : (\d+)")
BEFORE = "engine (before)"
LAYOUT_VARIABLE = "STREAMTAP_BENCH_LAYOUT"
LAYOUT_STEP = 40


def count(api: str, contender: str, mode: str, streams: int, pythonpath: str | None, layout: int) -> int:
    """Instructions callgrind collects for one run of instructions.py, in layout number `layout`."""
    name = "engine" if contender == BEFORE else contender
    env = {**os.environ, "PYTHONHASHSEED": "0", LAYOUT_VARIABLE: "x" * (LAYOUT_STEP * layout)}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(HERE / "instructions.py"),
        api,
        name,
        str(streams),
        "--mode",
        mode,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = _valgrind.parser(__doc__, streams=4)
    parser.add_argument("--before-src", type=Path, help="another checkout's src: its engine as a row")
    parser.add_argument("--layouts", type=int, default=3, help="environment sizes to measure under")
    args = parser.parse_args()
    contenders, modes = _valgrind.contenders_and_modes(parser, args)
    before = str(args.before_src.resolve()) if args.before_src else None
    if before is not None:
        contenders.append(BEFORE)
    layouts = range(args.layouts)
    runs = [(c, m, n, k) for k in layouts for m in modes for c in contenders for n in (args.streams, 0)]
    counts: dict[tuple[str, str, int, int], int] = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(count, args.api, c, m, n, before if c == BEFORE else None, k): (c, m, n, k)
            for c, m, n, k in runs
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            counts[futures[future]] = future.result()
            c, m, n, k = futures[future]
            print(f"[{done}/{len(runs)}] {c}, {m}, {n} streams, layout {k}", file=sys.stderr, flush=True)
    per_chunk = {
        (c, m, k): (counts[c, m, args.streams, k] - counts[c, m, 0, k]) / args.streams / CHUNKS
        for c, m, _, k in runs
    }
    print(
        f"Instructions per chunk, {args.api}, {args.streams} streams of {CHUNKS} chunks minus 0, "
        f"median over {args.layouts} layouts (range of the difference):\n"
    )
    print("| contender | " + " | ".join(f"{m} per chunk | {m} over raw" for m in modes) + " |")
    print("|---|" + "--:|--:|" * len(modes))
    for c in contenders:
        cells = []
        for m in modes:
            cells.append(f"{statistics.median(per_chunk[c, m, k] for k in layouts) / 1000:,.1f} k")
            if c == "raw":
                cells.append("—")
                continue
            over = [per_chunk[c, m, k] - per_chunk["raw", m, k] for k in layouts]
            cells.append(
                f"{statistics.median(over) / 1000:+,.1f} k ({min(over) / 1000:+,.1f} to {max(over) / 1000:+,.1f})"
            )
        print(f"| {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

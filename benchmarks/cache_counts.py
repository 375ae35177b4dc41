"""Simulated cache misses and branch mispredictions per chunk, per contender (valgrind's cachegrind).

Timed, the engine costs a larger share of the raw SDK's time than it adds instructions. No
hardware counters are readable in this kind of VM, so this asks valgrind's simulator instead:
for each contender it runs `instructions.py` under `cachegrind --cache-sim=yes
--branch-sim=yes` with N and with 0 measured streams and reports, per chunk, the instructions,
first-level instruction and data cache misses, last-level misses and mispredicted branches,
and each contender's difference to the raw SDK. The simulator models this host's cache sizes
(I1, D1 and the last level, no L2) and a simple branch predictor, not this CPU's: read the
rows as shares, not as cycles.

    python benchmarks/cache_counts.py --contenders raw,engine --modes sync

Needs valgrind; about 4 minutes per contender and mode with 2 jobs.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
from pathlib import Path

import _valgrind
from _streams import CHUNKS

HERE = Path(__file__).resolve().parent
# cachegrind's summary lines, and the per-chunk column each becomes.
EVENTS = {"I   refs": "instructions", "I1  misses": "I1 misses", "D1  misses": "D1 misses",
          "LL misses": "LL misses", "Mispredicts": "mispredicts"}  # fmt: skip


def simulate(api: str, contender: str, mode: str, streams: int) -> dict[str, int]:
    """cachegrind's totals for one run of instructions.py."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=yes",
        "--branch-sim=yes",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        str(HERE / "instructions.py"),
        api,
        contender,
        str(streams),
        "--mode",
        mode,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    totals = {}
    for summary, column in EVENTS.items():
        found = re.search(rf"{re.escape(summary)}:\s+([\d,]+)", done.stderr)
        if found is not None:
            totals[column] = int(found.group(1).replace(",", ""))
    if done.returncode != 0 or len(totals) != len(EVENTS):
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return totals


def main() -> None:
    parser = _valgrind.parser(__doc__, streams=2)
    args = parser.parse_args()
    contenders, modes = _valgrind.contenders_and_modes(parser, args)
    runs = [(c, m, n) for m in modes for c in contenders for n in (args.streams, 0)]
    totals: dict[tuple[str, str, int], dict[str, int]] = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(simulate, args.api, c, m, n): (c, m, n) for c, m, n in runs}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            totals[futures[future]] = future.result()
            c, m, n = futures[future]
            print(f"[{done}/{len(runs)}] {c}, {m}, {n} streams", file=sys.stderr, flush=True)
    chunks = args.streams * CHUNKS
    print(
        f"Per chunk, {args.api}, {args.streams} streams of {CHUNKS} chunks minus 0, "
        "valgrind's cache and branch simulation (over raw: the difference, and its share of raw's):\n"
    )
    columns = list(EVENTS.values())
    print("| contender | mode | " + " | ".join(columns) + " |")
    print("|---|---|" + "--:|" * len(columns))
    for m in modes:
        raw = {e: (totals["raw", m, args.streams][e] - totals["raw", m, 0][e]) / chunks for e in columns}
        for c in contenders:
            cells = []
            for e in columns:
                value = (totals[c, m, args.streams][e] - totals[c, m, 0][e]) / chunks
                if c == "raw":
                    cells.append(f"{value:,.0f}")
                else:
                    # No share of what raw barely has (last-level misses: ~0 per chunk).
                    share = f"{(value - raw[e]) / raw[e]:+.1%}" if raw[e] >= 1 else "—"
                    cells.append(f"{value - raw[e]:+,.0f} ({share})")
            print(f"| {c} | {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

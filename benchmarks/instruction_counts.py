"""Instructions per chunk, per contender, counted by valgrind: the deterministic overhead table.

For every contender and mode it runs `instructions.py` under callgrind with N and with 0
measured streams (each after the same 2 warm-up streams) and reports (count(N) − count(0)) /
N / chunks, and that figure minus the raw SDK's. The same command gives the same counts to
within a few hundred instructions per chunk; a different command line (other arguments, other
paths) can shift a whole column by a few thousand, so compare rows of one run only.

    python benchmarks/instruction_counts.py --contenders raw,layered,engine --modes sync,async
    python benchmarks/instruction_counts.py --before-src ../old/src    # adds the engine there

`--before-src` runs the engine of another checkout (its `src` first on PYTHONPATH) beside the
others, as the row "engine (before)". Needs valgrind; a run takes ~2 minutes per row and mode
with 2 jobs. Progress goes to stderr, the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _contenders import NAMES
from _streams import CHUNKS

HERE = Path(__file__).resolve().parent
_COLLECTED = re.compile(r"Collected : (\d+)")
BEFORE = "engine (before)"


def count(api: str, contender: str, mode: str, streams: int, pythonpath: str | None) -> int:
    """Instructions callgrind collects for one run of instructions.py."""
    name = "engine" if contender == BEFORE else contender
    env = {**os.environ, "PYTHONHASHSEED": "0"}
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api", choices=("chat", "responses"), default="chat")
    parser.add_argument("--contenders", default="raw,engine", help=f"comma-separated, of {', '.join(NAMES)}")
    parser.add_argument("--modes", default="sync", help="comma-separated: sync, async")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--before-src", type=Path, help="another checkout's src: its engine as a row")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    contenders = args.contenders.split(",")
    modes = args.modes.split(",")
    unknown = [c for c in contenders if c not in NAMES] + [m for m in modes if m not in ("sync", "async")]
    if unknown:
        parser.error(f"unknown contender or mode {unknown}; contenders: {NAMES}, modes: sync, async")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    if "raw" not in contenders:
        contenders.insert(0, "raw")
    before = str(args.before_src.resolve()) if args.before_src else None
    if before is not None:
        contenders.append(BEFORE)
    runs = [(c, m, n) for m in modes for c in contenders for n in (args.streams, 0)]
    counts: dict[tuple[str, str, int], int] = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(count, args.api, c, m, n, before if c == BEFORE else None): (c, m, n)
            for c, m, n in runs
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            counts[futures[future]] = future.result()
            c, m, n = futures[future]
            print(f"[{done}/{len(runs)}] {c}, {m}, {n} streams", file=sys.stderr, flush=True)
    per_chunk = {
        (c, m): (counts[c, m, args.streams] - counts[c, m, 0]) / args.streams / CHUNKS for c, m, _ in runs
    }
    print(f"Instructions per chunk, {args.api}, {args.streams} streams of {CHUNKS} chunks minus 0:\n")
    print("| contender | " + " | ".join(f"{m} per chunk | {m} over raw" for m in modes) + " |")
    print("|---|" + "--:|--:|" * len(modes))
    for c in contenders:
        cells = []
        for m in modes:
            value, raw = per_chunk[c, m], per_chunk["raw", m]
            cells += [f"{value / 1000:,.1f} k", "—" if c == "raw" else f"{(value - raw) / 1000:+,.1f} k"]
        print(f"| {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

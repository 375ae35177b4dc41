"""Stop a process now and then, as a CI machine's stolen time does, to check that tests hold up.

A shared CI machine can stop a test process for most of a second. Every timeout in the
process then sees the time pass at once, and a test whose timeout is shorter than the pause
can fail. Run the tests, then point this at the pytest process:

    .venv/bin/python -m pytest tests/engine/test_proxy_matrix.py & \\
    python scripts/stutter.py $! --pause 0.8 --every 0.02 0.15

It sends SIGSTOP, waits `--pause` seconds, sends SIGCONT, waits a random time within
`--every`, and so on until the process is gone (ended and reaped by its parent) or `--for`
seconds have passed. Only for processes you started; Linux and macOS.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pid", type=int, help="the process to stop now and then")
    parser.add_argument("--pause", type=float, default=0.8, help="seconds each stop lasts (default 0.8)")
    parser.add_argument(
        "--every",
        type=float,
        nargs=2,
        default=(0.3, 1.5),
        metavar=("MIN", "MAX"),
        help="seconds between stops, drawn uniformly (default 0.3 1.5)",
    )
    parser.add_argument(
        "--for", dest="limit", type=float, default=600.0, help="stop after this (default 600 s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    low, high = args.every
    if not args.pause > 0:
        parser.error(f"--pause must be > 0 seconds, got {args.pause}")
    if not 0 <= low <= high:
        parser.error(f"--every needs 0 <= MIN <= MAX, got {low} {high}")
    if not args.limit > 0:
        parser.error(f"--for must be > 0 seconds, got {args.limit}")
    rng = random.Random(args.seed)
    end = time.monotonic() + args.limit
    stops = 0
    try:
        while time.monotonic() < end:
            time.sleep(rng.uniform(low, high))
            os.kill(args.pid, signal.SIGSTOP)
            try:
                time.sleep(args.pause)
            finally:
                os.kill(args.pid, signal.SIGCONT)
            stops += 1
    except ProcessLookupError:
        pass  # the process ended: done
    print(f"stopped process {args.pid} {stops} times for {args.pause:g} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

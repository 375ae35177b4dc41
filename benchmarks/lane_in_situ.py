"""What the hot path's test costs where it runs: between the SDK's reads, not in a tight loop.

The engine passes each committed content read after one test, `Shape.fits` (is this read
exactly one more ordinary content frame of the stream?). Timed alone in a loop the test takes
well under a microsecond; between two of the SDK's reads, which parse JSON and build pydantic
models, the same work runs from colder caches and branch predictors. This runs the raw SDK, a
second raw client (the A/A control) and the engine in lockstep rounds (`_lockstep.py`, chat,
one process per variant), with `Shape.fits` replaced for the whole process by a variant. Only
the engine calls it, so the variant changes the engine alone:

    engine   the engine's own test
    floor    its first test only (the read starts like the stream's content frames)
    busy     the floor, then an empty loop of 20 steps: work of a known cost in a tight loop
    none     no test (every read passes; enough for these well-formed streams)

For each variant: the variant's own cost per call in a tight loop (median of `timeit` runs on a
content read of the benchmark's stream), and the engine's paired µs per chunk over the raw SDK
in situ, with its 95% interval and the A/A control's.

    python benchmarks/lane_in_situ.py                        # 4 variants x 100 rounds, ~3 min
    python benchmarks/lane_in_situ.py --variants engine,none --rounds 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any

VARIANTS = ("engine", "floor", "busy", "none")
_STEPS = range(20)


def variant(name: str) -> Callable[[Any, bytes], bool]:
    """The test `name` stands for (see the module's docstring)."""
    from _contenders import prefix_only

    from streamtap._dialect import Shape

    if name == "engine":
        return Shape.fits
    if name == "floor":
        return prefix_only
    if name == "busy":

        def busy(shape: Shape, read: bytes) -> bool:
            for _ in _STEPS:
                pass
            return read.startswith(shape.prefix)

        return busy
    if name == "none":
        return lambda shape, read: True
    raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {name!r}")


def tight_ns(test: Callable[[Any, bytes], bool]) -> float:
    """ns per call of `test` on one content read of the benchmark's chat stream, in a loop."""
    from _streams import chat_events

    from streamtap._chat import CHAT

    read = chat_events(3)[2]
    shape = CHAT.shape(read)
    assert shape is not None and test(shape, read)
    runs = timeit.repeat(lambda: test(shape, read), number=100_000, repeat=7)
    return statistics.median(runs) / 100_000 * 1e9


def one(name: str, rounds: int, warmup: int, mode: str) -> dict[str, Any]:
    """Run variant `name` in this process: its tight cost and the lockstep paired figures."""
    import asyncio

    import _lockstep
    from _contenders import build
    from _stats import against
    from _streams import CHUNKS, MemoryUpstream

    from streamtap._dialect import Shape

    test = variant(name)
    tight = tight_ns(test)
    Shape.fits = test  # type: ignore[method-assign]
    names = ("raw", "control", "engine")
    if mode == "sync":
        contenders = [build(n, MemoryUpstream(CHUNKS), "sync") for n in names]
        out = _lockstep.run_sync(contenders, "chat", rounds, warmup)
    else:

        async def run() -> dict[str, Any]:
            contenders = [build(n, MemoryUpstream(CHUNKS), "async") for n in names]
            return await _lockstep.run_async(contenders, "chat", rounds, warmup)

        out = asyncio.run(run())
    raw = out["raw"]["times"]
    return {
        "variant": name,
        "mode": mode,
        "tight_ns": tight,
        "raw_us_per_chunk": statistics.median(raw) / CHUNKS,
        "items": {n: sorted(out[n]["items"]) for n in names},
        "control": against(out["control"]["times"], raw, CHUNKS),
        "engine": against(out["engine"]["times"], raw, CHUNKS),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | mode | in a tight loop, ns per call | engine over raw in situ, µs/chunk [95% CI] "
        "| A/A control µs/chunk [95% CI] | raw SDK µs/chunk |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for r in results:
        engine, control = r["engine"], r["control"]
        e_low, e_high = engine["paired_ci95_us_per_chunk"]
        c_low, c_high = control["paired_ci95_us_per_chunk"]
        lines.append(
            f"| {r['variant']} | {r['mode']} | {r['tight_ns']:.0f} "
            f"| {engine['paired_us_per_chunk']:+.2f} [{e_low:+.2f}, {e_high:+.2f}] "
            f"| {control['paired_us_per_chunk']:+.2f} [{c_low:+.2f}, {c_high:+.2f}] "
            f"| {r['raw_us_per_chunk']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--mode", choices=("sync", "async"), default="sync")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single variant, in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.rounds, args.warmup, args.mode)))
        return 0
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    for name in names:
        if name not in VARIANTS:
            parser.error(f"--variants: {name!r} is not one of {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1, --warmup at least 0")
    results = []
    started = time.perf_counter()
    for i, name in enumerate(names, 1):
        # One process per variant: each test is installed for a whole run, never swapped mid-way.
        print(f"[{i}/{len(names)}] {name} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        command = [
            sys.executable,
            __file__,
            "--one",
            name,
            f"--rounds={args.rounds}",
            f"--warmup={args.warmup}",
            f"--mode={args.mode}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        results.append(json.loads(done.stdout))
    print(json.dumps(results, indent=1) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

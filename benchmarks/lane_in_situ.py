"""What the hot path's test costs where it runs: between the SDK's reads, not in a tight loop.

The engine passes each committed content read after one test, `Shape.fits` (is this read
exactly one more ordinary content frame of the stream?). Timed alone in a loop the test takes
well under a microsecond; between two of the SDK's reads, which parse JSON and build pydantic
models, the same work runs from colder caches and branch predictors. Two ways to see it, both
on chat streams, with `Shape.fits` replaced for the whole process (only the engine calls it):

- lockstep (default): the raw SDK, a second raw client (the A/A control) and the engine in
  lockstep rounds (`_lockstep.py`), one process per variant: what the variant makes the engine
  add per chunk, paired against the raw SDK.
- `--probe`: one process reads engine streams with every variant installed at once, taking
  turns read by read; each call is timed alone with `perf_counter_ns` where it runs, and again
  in a tight loop on one content read. `zero` is the probe's own floor (the two clock reads,
  no call). Seconds instead of minutes, and the variants' costs to tens of nanoseconds.

Variants, with their costs:

    engine   the engine's own test
    floor    its first test only (the read starts like the stream's content frames)
    busy     the floor, then an empty loop of 20 steps: work of a known cost in a tight loop
    none     no test (every read passes; enough for these well-formed streams)

and other exact tests for a padded chat Shape (they answer as `Shape.fits` does; for any other
Shape they are `Shape.fits`), to compare with the engine's:

    quote    partition at the text's closing quote, then remove the tail as a prefix
    regex    one compiled regular expression (`fullmatch`)
    backward from the end: partition at the padding's quotes, remove the tail as a suffix

    python benchmarks/lane_in_situ.py                        # 4 variants x 100 rounds, ~3 min
    python benchmarks/lane_in_situ.py --variants engine,none --rounds 40
    python benchmarks/lane_in_situ.py --probe --variants zero,none,engine,quote,regex,backward
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from streamtap._dialect import Shape

VARIANTS = ("engine", "floor", "busy", "none")
EXACT = ("quote", "regex", "backward")
ZERO = "zero"  # --probe only: the clock reads alone
# The engine's own test, kept before any variant replaces it: the exact variants' answer for
# the Shapes they do not cover.
ENGINE_FITS = Shape.fits
_STEPS = range(20)


# Each exact variant is one flat function, as the engine's test is one method: a helper shared
# by them (the prefix, the fallback) would add a Python call to the variants alone.
def quote_fits(shape: Shape, read: bytes) -> bool:
    """Shape.fits, partitioning at the first quote and removing the tail as a prefix."""
    if not shape.padded:
        return ENGINE_FITS(shape, read)
    rest = read.removeprefix(shape.prefix)
    if len(rest) == len(read):
        return False
    text, _, after = rest.partition(b'"')  # the text's closing quote starts the tail
    padding = after.removeprefix(shape.tail[1:])  # type: ignore[index]  # padded: a tail
    if not text or len(padding) == len(after):
        return False
    _, _, end = padding.partition(b'"')
    return end == b"}\n\n"


def backward_fits(shape: Shape, read: bytes) -> bool:
    """Shape.fits, from the end: the padding's quotes by rpartition, the tail as a suffix."""
    if not shape.padded:
        return ENGINE_FITS(shape, read)
    rest = read.removeprefix(shape.prefix)
    if len(rest) == len(read):
        return False
    body, _, end = rest.rpartition(b'"')
    if end != b"}\n\n":
        return False
    head, _, _ = body.rpartition(b'"')  # the padding holds no quote: its opening one
    text = head.removesuffix(shape.tail[:-1])  # type: ignore[index]  # padded: a tail
    return 0 < len(text) < len(head) and 34 not in text


_compiled: list[Any] = [None, None]  # the last Shape and its pattern's fullmatch


def regex_fits(shape: Shape, read: bytes) -> bool:
    """Shape.fits as one compiled regular expression."""
    if not shape.padded:
        return ENGINE_FITS(shape, read)
    if _compiled[0] is not shape:
        tail = shape.tail
        assert tail is not None, "a padded Shape has a tail"
        pattern = re.escape(shape.prefix) + b'[^"]+' + re.escape(tail) + b'[^"]*"}\n\n'
        _compiled[:] = [shape, re.compile(pattern, re.DOTALL).fullmatch]
    return _compiled[1](read) is not None


def variant(name: str) -> Callable[[Any, bytes], bool]:
    """The test `name` stands for (see the module's docstring)."""
    from _contenders import prefix_only

    if name == "engine":
        return ENGINE_FITS
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
    exact = {"quote": quote_fits, "regex": regex_fits, "backward": backward_fits}.get(name)
    if exact is not None:
        return exact
    raise ValueError(f"variant must be one of {', '.join(VARIANTS + EXACT)}, got {name!r}")


def content_reads(api: str) -> tuple[bytes, set[bytes]]:
    """One content read of the benchmark's `api` stream that teaches a Shape, and all of them."""
    from _streams import CHUNKS, chat_events, responses_events

    if api == "chat":
        return chat_events(3)[2], set(chat_events(CHUNKS)[1:-3])  # role first; finish, usage, [DONE] last
    events = responses_events(CHUNKS)
    contents = [e for e in events if e.startswith(b"event: response.output_text.delta\n")]
    return contents[1], set(contents)


def tight_ns(test: Callable[[Any, bytes], bool]) -> float:
    """ns per call of `test` on one content read of the benchmark's chat stream, in a loop."""
    from streamtap._chat import CHAT

    read, _ = content_reads("chat")
    shape = CHAT.shape(read)
    assert shape is not None and test(shape, read)
    runs = timeit.repeat(lambda: test(shape, read), number=100_000, repeat=7)
    return statistics.median(runs) / 100_000 * 1e9


def probe(
    names: Sequence[str], streams: int, warmup: int, api: str = "chat", tight_calls: int = 20_000
) -> list[dict[str, Any]]:
    """Each variant's own time per call, in ns: where the engine calls it, and in a tight loop.

    The variants take turns read by read in one process (`api`, sync), in an order drawn at
    random (seeded) for every round of turns, so none always runs after the same one. Whatever
    a variant answers, the engine is told whether the read is one of the stream's content
    frames (a set lookup outside the timed region), so every stream is read alike and no
    variant's code runs more often than another's.
    """
    import random

    from _contenders import build, consume_sync
    from _streams import CHUNKS, MemoryUpstream

    from streamtap._dialect import dialect_for

    clock = time.perf_counter_ns
    fits = Shape.fits
    tests = [None if name == ZERO else variant(name) for name in names]
    samples: list[list[int]] = [[] for _ in names]
    read, contents = content_reads(api)
    rng = random.Random(20261121)

    def rounds() -> Iterator[int]:
        while True:
            ring = list(range(len(tests)))
            rng.shuffle(ring)
            yield from ring

    turns = rounds()

    def timed(shape: Shape, read: bytes) -> bool:
        i = next(turns)
        test = tests[i]
        if test is None:
            start = clock()
            end = clock()
        else:
            start = clock()
            test(shape, read)
            end = clock()
        samples[i].append(end - start)
        return read in contents

    shape = dialect_for("responses" if api == "responses" else "chat_completions").shape(read)
    assert shape is not None
    # In blocks of 1,000 calls of one variant, the variants' blocks taking turns: each is timed
    # in a loop of its own, and the host's drifts hit them alike.
    tight: list[list[int]] = [[] for _ in names]
    for _ in range(max(tight_calls // 1000, 1)):
        for test, times in zip(tests, tight, strict=True):
            for _ in range(1000):
                start = clock()
                if test is not None:
                    test(shape, read)
                end = clock()
                times.append(end - start)
    contender = build("engine", MemoryUpstream(CHUNKS), "sync")
    Shape.fits = timed  # type: ignore[method-assign,assignment]
    try:
        for i in range(warmup + streams):
            if i == warmup:
                for kept in samples:
                    kept.clear()
            consume_sync(contender.client, api)
    finally:
        Shape.fits = fits  # type: ignore[method-assign]
    floor = {"situ": 0.0, "tight": 0.0}
    if ZERO in names:
        at = list(names).index(ZERO)
        floor = {"situ": statistics.median(samples[at]), "tight": statistics.median(tight[at])}
    results = []
    for name, situ, loop in zip(names, samples, tight, strict=True):
        quartiles = statistics.quantiles(situ, n=4)
        results.append(
            {
                "variant": name,
                "calls": len(situ),
                "in_situ_ns": statistics.median(situ),
                "in_situ_p25_p75_ns": [quartiles[0], quartiles[2]],
                "tight_ns": statistics.median(loop),
                "in_situ_over_zero_ns": statistics.median(situ) - floor["situ"],
                "tight_over_zero_ns": statistics.median(loop) - floor["tight"],
            }
        )
    return results


def probe_markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | in situ, ns per call (median) | p25–p75 | over `zero` | in a tight loop | over `zero` "
        "| in situ / tight (over `zero`) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        low, high = r["in_situ_p25_p75_ns"]
        situ, loop = r["in_situ_over_zero_ns"], r["tight_over_zero_ns"]
        ratio = f"{situ / loop:.1f}" if loop > 0 and r["variant"] != ZERO else "—"
        lines.append(
            f"| {r['variant']} | {r['in_situ_ns']:,.0f} | {low:,.0f}–{high:,.0f} | {situ:+,.0f} "
            f"| {r['tight_ns']:,.0f} | {loop:+,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def one(name: str, rounds: int, warmup: int, mode: str) -> dict[str, Any]:
    """Run variant `name` in this process: its tight cost and the lockstep paired figures."""
    import asyncio

    import _lockstep
    from _contenders import build
    from _stats import against
    from _streams import CHUNKS, MemoryUpstream

    test = variant(name)
    tight = tight_ns(test)
    Shape.fits = test  # type: ignore[method-assign,assignment]
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
        "--variants",
        help=f"comma-separated, of {', '.join(VARIANTS + EXACT)} (and {ZERO} with --probe); "
        f"default {','.join(VARIANTS)}, with --probe {','.join((ZERO, *VARIANTS, *EXACT))}",
    )
    parser.add_argument("--probe", action="store_true", help="time each call where it runs (see above)")
    parser.add_argument("--streams", type=int, default=40, help="--probe: timed streams (500 reads each)")
    parser.add_argument("--api", choices=("chat", "responses"), default="chat", help="--probe: which stream")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--mode", choices=("sync", "async"), default="sync")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single variant, in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.rounds, args.warmup, args.mode)))
        return 0
    accepted = (ZERO, *VARIANTS, *EXACT) if args.probe else VARIANTS + EXACT
    default = accepted if args.probe else VARIANTS
    names = [n.strip() for n in (args.variants or ",".join(default)).split(",") if n.strip()]
    for name in names:
        if name not in accepted:
            parser.error(f"--variants: {name!r} is not one of {', '.join(accepted)}")
    if args.rounds < 1 or args.warmup < 0 or args.streams < 1:
        parser.error("--rounds and --streams must be at least 1, --warmup at least 0")
    if args.probe:
        print(f"probing {len(names)} variants over {args.streams} streams ...", file=sys.stderr)
        found = probe(names, args.streams, min(args.warmup, 2), args.api)
        print(json.dumps(found, indent=1) if args.json else probe_markdown(found))
        return 0
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

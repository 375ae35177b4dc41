"""How much time streamtap adds to a streamed OpenAI call, measured against the raw SDK.

Every contender creates and fully reads one 500-chunk stream from the same in-memory upstream
(no sockets), in interleaved rounds: each round times every contender once, in an order that
rotates from round to round, so drifts of a noisy machine hit all of them alike.

    python benchmarks/overhead.py                 # the full run behind docs/benchmarks.md
    python benchmarks/overhead.py --quick         # a fast look (fewer rounds)
    python benchmarks/overhead.py --json          # machine-readable results on stdout
    python benchmarks/overhead.py --lockstep      # all streams of a round read item by item in turn
    python benchmarks/overhead.py --lockstep --chunks 1 --contenders \
        control,engine,prometheus,otel-traces,otel-metrics,telemetry    # telemetry's cost per call, by recorder

`--lockstep` (see `_lockstep.py`) shares each round's stretch of time between the contenders
item by item, so the host's drifts hit them alike: the A/A control's paired interval is
about ±0.5 µs per chunk here, against ±3–4 µs in sequential rounds. It runs the contenders that
change nothing in the process (raw, control, engine, verified, telemetry, and the one-recorder
ones when named); the others, which patch the SDK or the engine for their repetitions, need
the sequential rounds.

Progress goes to stderr, one line as each scenario starts and ends.

Per-chunk figures are (contender - raw) / chunks, from the medians of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import _lockstep
from _contenders import (
    BY_NAME_ONLY,
    DEFAULT_NAMES,
    NAMES,
    OFFICIAL_PACKAGE,
    Contender,
    build,
    consume_async,
    consume_sync,
    official_missing,
    patches_process,
)
from _stats import against, summary
from _streams import CHUNKS, MemoryUpstream
from opentelemetry.sdk.metrics.export import HistogramDataPoint

APIS = ("chat", "responses")
MODES = ("sync", "async")
# Items the SDK yields per stream besides the content chunks: chat has the role, finish and
# usage chunks; responses has created, in_progress, item/part added, text/part/item done, completed.
_EXTRA_ITEMS = {"chat": 3, "responses": 8}
# The goals of issues 3 and 4: added time per chunk and ratio to the raw SDK.
GOAL_US_PER_CHUNK = 2.0
GOAL_RATIO = 1.03


def _order(contenders: list[Contender], round_: int) -> list[Contender]:
    k = round_ % len(contenders)
    return contenders[k:] + contenders[:k]


def _record(
    contender: Contender, started: int, ended: int, items: int, timed: bool, out: dict[str, Any]
) -> None:
    if timed:
        out[contender.name]["times"].append((ended - started) / 1000)
        out[contender.name]["items"].add(items)


def _run_sync(contenders: list[Contender], api: str, rounds: int, warmup: int) -> dict[str, Any]:
    out: dict[str, Any] = {c.name: {"times": [], "items": set()} for c in contenders}
    for round_ in range(warmup + rounds):
        for contender in _order(contenders, round_):
            contender.before()
            try:
                started = time.perf_counter_ns()
                items = consume_sync(contender.client, api)
                ended = time.perf_counter_ns()
            finally:
                contender.finish_repetition()
            _record(contender, started, ended, items, round_ >= warmup, out)
    return out


async def _run_async(
    names: Sequence[str], api: str, rounds: int, warmup: int, chunks: int, lockstep: bool
) -> Any:
    # Async clients belong to the event loop they first run in: build them inside it.
    contenders, upstreams = _build(names, "async", chunks)
    if lockstep:
        out = await _lockstep.run_async(contenders, api, rounds, warmup)
        for contender in contenders:
            await contender.client.close()
        return contenders, upstreams, out
    out = {c.name: {"times": [], "items": set()} for c in contenders}
    for round_ in range(warmup + rounds):
        for contender in _order(contenders, round_):
            contender.before()
            try:
                started = time.perf_counter_ns()
                items = await consume_async(contender.client, api)
                ended = time.perf_counter_ns()
            finally:
                contender.finish_repetition()
            _record(contender, started, ended, items, round_ >= warmup, out)
    for contender in contenders:
        await contender.client.close()
    return contenders, upstreams, out


def _build(names: Sequence[str], mode: str, chunks: int) -> tuple[list[Contender], dict[str, MemoryUpstream]]:
    upstreams = {name: MemoryUpstream(chunks) for name in names}
    return [build(name, upstreams[name], mode) for name in names], upstreams


def _ok_calls(contender: Contender) -> float | None:
    if contender.registry is None:
        return None
    return sum(
        sample.value
        for metric in contender.registry.collect()
        for sample in metric.samples
        if sample.name == "streamtap_requests_total" and sample.labels.get("outcome") == "ok"
    )


def _otel_calls(contender: Contender) -> int | None:
    """How many calls the contender's OTel duration histogram counted, if it has a reader."""
    if contender.metrics is None:
        return None
    data = contender.metrics.get_metrics_data()
    return sum(
        point.count
        for resource in (data.resource_metrics if data is not None else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "gen_ai.client.operation.duration"
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint)
    )


def run_scenario(
    api: str,
    mode: str,
    names: Sequence[str],
    rounds: int,
    warmup: int,
    chunks: int,
    lockstep: bool = False,
) -> dict[str, Any]:
    """Time `names` on one api and mode; the summaries, the comparisons and the sanity checks.

    `lockstep` reads the contenders' streams item by item in turn (`_lockstep`) instead of
    one whole stream after another.
    """
    gc.collect()
    gc.freeze()  # setup garbage stays out of the timed collections
    if mode == "sync":
        contenders, upstreams = _build(names, mode, chunks)
        run = _lockstep.run_sync if lockstep else _run_sync
        out = run(contenders, api, rounds, warmup)
        for contender in contenders:
            contender.client.close()
    else:
        contenders, upstreams, out = asyncio.run(_run_async(names, api, rounds, warmup, chunks, lockstep))
    gc.unfreeze()
    raw = out["raw"]["times"]
    result: dict[str, Any] = {"api": api, "mode": mode, "contenders": {}}
    for contender in contenders:
        times = out[contender.name]["times"]
        entry: dict[str, Any] = {
            "us_per_stream": summary(times),
            "us_per_chunk": summary([t / chunks for t in times]),
            "items": sorted(out[contender.name]["items"]),
            "expected_items": chunks + _EXTRA_ITEMS[api],
            "requests": upstreams[contender.name].requests,
            "expected_requests": rounds + warmup,
            "spans_per_call": sorted(set(contender.span_counts)) or None,
            "events_per_call": sorted(set(contender.event_counts)) or None,
            "ok_calls": _ok_calls(contender),
            "otel_calls": _otel_calls(contender),
            "times_us": [round(t, 1) for t in times],
        }
        if contender.name != "raw":
            entry["vs_raw"] = against(times, raw, chunks)
        result["contenders"][contender.name] = entry
    result["goals"] = _goals(result["contenders"])
    return result


def _goals(contenders: dict[str, Any]) -> dict[str, Any]:
    """Each issue's goal judged on the paired difference (the steadier figure) and its interval.

    `met` when the whole 95% interval is under both limits, `not met` when the paired median
    is over either, `unclear` when the median is under them and the interval reaches over.
    """
    goals: dict[str, Any] = {}
    raw_per_chunk = contenders["raw"]["us_per_chunk"]["median"]
    for issue, name in (("issue3_engine", "engine"), ("issue4_telemetry", "telemetry")):
        if name not in contenders:
            continue
        vs = contenders[name]["vs_raw"]
        added = vs["paired_us_per_chunk"]
        upper = vs["paired_ci95_us_per_chunk"][1]
        limit = min(GOAL_US_PER_CHUNK, (GOAL_RATIO - 1) * raw_per_chunk)
        goals[issue] = {
            "added_us_per_chunk": added,
            "upper_us_per_chunk": upper,
            "ratio": 1 + added / raw_per_chunk,
            "limit_us_per_chunk": limit,
            "verdict": "met" if upper < limit else "not met" if added >= limit else "unclear",
        }
    return goals


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in (
        "streamtap",
        "openai",
        "httpx2",
        "opentelemetry-sdk",
        "prometheus-client",
        OFFICIAL_PACKAGE,
    ):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
    }


def _progress(line: str) -> None:
    """A line of progress on stderr (stdout holds the tables or the JSON)."""
    print(line, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 rounds, 3 warm-up (default 200 and 10)")
    parser.add_argument("--rounds", type=int, help="timed rounds per scenario")
    parser.add_argument("--warmup", type=int, help="untimed rounds before them")
    parser.add_argument("--chunks", type=int, default=CHUNKS, help=f"content chunks per stream ({CHUNKS})")
    parser.add_argument("--api", choices=(*APIS, "all"), default="all")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all")
    parser.add_argument(
        "--contenders",
        help=f"comma-separated, raw always included ({','.join(NAMES)}); default all but "
        f"{', '.join(BY_NAME_ONLY)} (with --lockstep, those that do not patch the process)",
    )
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="read every contender's stream at once, one item each in turn (see _lockstep.py)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")
    parser.add_argument(
        "--from-json", metavar="FILE", help="print the tables of a saved --json run; time nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        from _report import markdown

        with open(args.from_json, encoding="utf-8") as saved:
            print(markdown(json.load(saved)))
        return 0
    rounds = args.rounds if args.rounds is not None else (20 if args.quick else 200)
    warmup = args.warmup if args.warmup is not None else (3 if args.quick else 10)
    chosen = args.contenders.split(",") if args.contenders is not None else DEFAULT_NAMES
    names = ["raw", *(n.strip() for n in chosen if n.strip() and n.strip() != "raw")]
    for name in names:
        if name not in NAMES:
            _parser().error(f"--contenders: {name!r} is not one of {', '.join(NAMES)}")
    if rounds < 1 or warmup < 0 or args.chunks < 1:
        _parser().error("--rounds and --chunks must be at least 1, --warmup at least 0")
    skipped: dict[str, str] = {}
    missing = official_missing()
    if "official" in names and missing is not None:
        names.remove("official")
        skipped["official"] = missing
    if args.lockstep:
        patching = [name for name in names if patches_process(name)]
        if args.contenders is not None and patching:
            _parser().error(
                f"--lockstep: {', '.join(patching)} patch the process for their repetitions and "
                "cannot share a round item by item; choose among "
                + ", ".join(name for name in NAMES if name != "official" and not patches_process(name))
            )
        names = [name for name in names if name not in patching]
    started = time.perf_counter()
    scenarios = []
    runs = [
        (api, mode)
        for api in (APIS if args.api == "all" else (args.api,))
        for mode in (MODES if args.mode == "all" else (args.mode,))
    ]
    for done, (api, mode) in enumerate(runs):
        _progress(f"[{done + 1}/{len(runs)}] {api} {mode}: {warmup} + {rounds} rounds of {', '.join(names)}")
        scenario = run_scenario(api, mode, names, rounds, warmup, args.chunks, args.lockstep)
        scenario["skipped"] = skipped
        scenarios.append(scenario)
        elapsed = time.perf_counter() - started
        left = elapsed / (done + 1) * (len(runs) - done - 1)
        _progress(f"[{done + 1}/{len(runs)}] done, {elapsed:.0f} s in all, about {left:.0f} s left")
    results = {
        "environment": environment(),
        "settings": {
            "rounds": rounds,
            "warmup": warmup,
            "chunks": args.chunks,
            "lockstep": args.lockstep,
            "seconds": time.perf_counter() - started,
            "argv": list(sys.argv[1:] if argv is None else argv),
        },
        "scenarios": scenarios,
    }
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        from _report import markdown

        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

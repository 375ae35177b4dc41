"""Load benchmark of the sidecar proxy: many concurrent streams through it vs straight to the upstream.

Every target serves the same streaming chat completions from one fake upstream process:

- ``direct``: the fake upstream itself (the baseline of each round),
- ``streamtap-otel``: ``streamtap proxy`` as shipped, with its default telemetry and no exporter
  configured: the Prometheus recorder, and OpenTelemetry SDK tracer and meter providers built by
  ``setup_telemetry()`` with ``OTEL_TRACES_EXPORTER=none`` and ``OTEL_METRICS_EXPORTER=none``
  (every span and OTel metric is recorded, then dropped),
- ``streamtap``: the same with ``OTEL_SDK_DISABLED=true``: Prometheus only, OTel API no-ops,
- ``baseline``: the Prometheus-only proxy run from another source tree (``--baseline-src``, e.g. a
  ``git worktree`` of an earlier commit), to compare two versions in the same run,
- ``relay``: a byte relay in front of the fake (``_byte_relay.py``), parsing nothing: what a
  second process in the path adds before any work of its own,
- ``litellm``: LiteLLM's proxy (``litellm --config``) with the fake as an OpenAI upstream, if a
  ``litellm`` executable is given (it needs openai<3, so it lives in a virtualenv of its own).

Each target, the fake upstream and the load generator run as separate processes; the load
generator, a new process each round, runs with its garbage collector paused. Rounds
interleave the targets (rotating their order); each round keeps ``--streams`` keep-alive
connections streaming back to back for ``--duration`` seconds. Reported per target, as the
median over rounds: client-side time to first token p50/p99; the same minus the TTFT of
``--control-streams`` streams the same client sends straight to the fake at the same time
(added, against the same moment: the host's drifts between rounds cancel, and the ``direct``
target's figure is an A/A check of the method); the same minus the ``direct`` target's TTFT in
the same round (added, against the same load sent directly); content events per second over the
steady phase, and the target's CPU µs per relayed content event. Loopback only; every child has a deadline and the whole run is
bounded by ``--max-seconds``.

Usage::

    python benchmarks/proxy_load.py --litellm /path/to/venv/bin/litellm --markdown
    git worktree add ../before <commit>
    python benchmarks/proxy_load.py --targets direct,streamtap,baseline --baseline-src ../before/src
    python benchmarks/proxy_load.py --streams 5 --duration 1 --rounds 1 --json   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _load_procs as procs
from _load_client import LoadResult, run_load
from _load_host import environment, pinning
from _load_report import markdown
from _load_summary import gc_report, summarise
from _stats import quantile

_SETTINGS = ("streams", "chunks", "gap", "ttft", "duration", "ramp", "rounds", "warmup", "control_streams")


def _client_main(args: argparse.Namespace) -> None:
    """The load generator process: run the load, print one JSON line."""
    # Its own garbage collections would land in the times to first token it measures; it
    # lives for one round, whose garbage it can hold.
    gc.collect()
    gc.disable()
    started = time.process_time()
    limit = args.duration + args.stream_budget + 30

    async def bounded() -> tuple[LoadResult, LoadResult | None]:
        def load(url: str, streams: int, api_key: str) -> Awaitable[LoadResult]:
            return run_load(
                url,
                streams=streams,
                duration_s=args.duration,
                ramp_s=args.ramp,
                chunks=args.chunks,
                stream_s=args.ttft + args.chunks * args.gap,
                api_key=api_key,
            )

        if not args.control_streams:
            return await asyncio.wait_for(load(args.url, args.streams, args.api_key), limit), None
        both = asyncio.gather(
            load(args.url, args.streams, args.api_key),
            load(args.control_url, args.control_streams, "sk-fake"),
        )
        target, control = await asyncio.wait_for(both, limit)
        return target, control

    with asyncio.Runner(loop_factory=procs.uvloop_factory()) as runner:
        result, control = runner.run(bounded())
    steady = result.events_per_s(args.ramp, args.duration) if args.duration > args.ramp else 0.0
    out = {
        "ttft_s": result.ttft_s,
        "streams": result.streams,
        "bad_streams": result.bad_streams,
        "first_error": result.first_error,
        "events": result.events,
        "events_per_s": steady,
        "control_ttft_s": control.ttft_s if control else [],
        "control_events": control.events if control else 0,
        "control_bad_streams": control.bad_streams if control else 0,
        "client_cpu_s": time.process_time() - started,
    }
    print(json.dumps(out))


def _run_client(
    args: argparse.Namespace,
    target: dict[str, Any],
    duration: float,
    cpus: set[int] | None,
    control_url: str,
    control_streams: int,
) -> dict[str, Any]:
    url = target["url"]
    command = [
        sys.executable, __file__, "--role=client", f"--url={url}/chat/completions",
        f"--streams={args.streams}", f"--duration={duration}", f"--ramp={min(args.ramp, duration)}",
        f"--chunks={args.chunks}", f"--stream-budget={args.stream_budget}", f"--api-key={target['key']}",
        f"--control-url={control_url}/chat/completions", f"--control-streams={control_streams}",
    ]  # fmt: skip
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, preexec_fn=preexec,
        timeout=duration + args.stream_budget + 60,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _measure(
    args: argparse.Namespace, target: dict[str, Any], fake: tuple[int, str], cpus: set[int] | None
) -> dict[str, Any]:
    fake_pid, fake_url = fake
    pid = target["process"].pid if target["process"] is not None else None
    before = (procs.cpu_seconds(fake_pid), procs.cpu_seconds(pid) if pid else 0.0)
    started = time.monotonic()
    load = _run_client(args, target, args.duration, cpus, fake_url, args.control_streams)
    window = (started + args.ramp, time.monotonic())  # the steady phase, give or take start-up
    after = (procs.cpu_seconds(fake_pid), procs.cpu_seconds(pid) if pid else 0.0)
    events = max(load["events"], 1)
    ttft_ms = [t * 1000 for t in load.pop("ttft_s")]
    control_ms = [t * 1000 for t in load.pop("control_ttft_s")]
    quantiles = {
        f"{name}_{q}_ms": quantile(values, share) if values else None
        for name, values in (("ttft", ttft_ms), ("control", control_ms))
        for q, share in (("p50", 0.5), ("p99", 0.99))
    }
    return {
        **load,
        "samples": len(ttft_ms),
        "control_samples": len(control_ms),
        "window": window,
        **quantiles,
        # The fake serves the control streams too: its CPU is shared over all it sent.
        "fake_cpu_us_per_event": (after[0] - before[0]) / max(events + load["control_events"], 1) * 1e6,
        "target_cpu_us_per_event": (after[1] - before[1]) / events * 1e6 if pid else None,
        "client_cpu_us_per_event": load["client_cpu_s"] / max(events + load["control_events"], 1) * 1e6,
    }


def main_orchestrator(args: argparse.Namespace) -> dict[str, Any]:
    optional = {"litellm": args.litellm, "baseline": args.baseline_src}
    names = [n for n in args.targets.split(",") if optional.get(n, True)]
    pins = pinning(args)
    report: dict[str, Any] = {
        "settings": {k: getattr(args, k) for k in _SETTINGS},
        "pinning": {k: sorted(v) if v else "any" for k, v in pins.items()},
        "environment": environment(args.litellm),
        "targets": names,
        "errors": {},
    }
    running: list[subprocess.Popen[str]] = []
    with procs.workdir() as tmp:
        work = Path(tmp)
        try:
            fake, fake_url = procs.start_fake(args.chunks, args.ttft, args.gap, pins["fake"], work)
            running.append(fake)
            targets: dict[str, dict[str, Any]] = {
                "direct": {"process": None, "url": fake_url, "key": "sk-fake"}
            }
            for name in names[1:] if names[0] == "direct" else names:
                key = "sk-fake"
                try:
                    if name == "relay":
                        process, url = procs.start_relay(fake_url, pins["target"], work)
                    elif name == "litellm":
                        key = "sk-" + secrets.token_hex(32)  # a throwaway master key for this run
                        process, url = procs.start_litellm(args.litellm, fake_url, pins["target"], work, key)
                    else:
                        process, url = procs.start_streamtap(
                            fake_url, pins["target"], work, name, source=args.baseline_src
                        )
                except Exception as error:
                    report["errors"][name] = str(error)[-2000:]
                    continue
                running.append(process)
                targets[name] = {"process": process, "url": url, "key": key}
            names = [n for n in names if n in targets]
            for name in names:  # warm up: connections, imports, JITs of caches
                _run_client(args, targets[name], args.warmup, pins["client"], fake_url, 0)
            rounds = []
            for index in range(args.rounds):
                order = names[index % len(names) :] + names[: index % len(names)]
                rounds.append(
                    {n: _measure(args, targets[n], (fake.pid, fake_url), pins["client"]) for n in order}
                )
            report["rounds"] = rounds
            report["targets"] = names
            report["summary"] = summarise(rounds, names)
            report["environment"]["loadavg_after"] = os.getloadavg()[0]
        finally:
            for process in reversed(running):
                procs.stop(process)
        if "rounds" in report:  # each process wrote its GC pauses as it exited
            pids = {"fake": fake.pid} | {n: t["process"].pid for n, t in targets.items() if t["process"]}
            report["gc"] = gc_report(work, pids, report["rounds"])
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams (default 200)")
    parser.add_argument("--chunks", type=int, default=30, help="content chunks per stream (default 30)")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between chunks (default 0.02)")
    parser.add_argument(
        "--ttft", type=float, default=0.05, help="the fake's time to first token (default 0.05)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per round (default 10)")
    parser.add_argument(
        "--ramp", type=float, default=2.0, help="seconds left out of the statistics (default 2)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of warm-up load per target (default 3)"
    )
    parser.add_argument("--targets", default="direct,relay,streamtap-otel,streamtap,baseline,litellm")
    parser.add_argument("--litellm", default=None, help="path of a `litellm` executable (its own virtualenv)")
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="the `src` directory of another streamtap checkout (target baseline)",
    )
    parser.add_argument(
        "--control-streams",
        type=int,
        default=40,
        help="streams sent straight to the fake beside every target's load, as the same moment's "
        "baseline (default 40; 0 for none)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the processes to CPUs")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="hard limit of the whole run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md tables")
    parser.add_argument(
        "--role", default="orchestrator", choices=["orchestrator", "client"], help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--control-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", default="sk-fake", help=argparse.SUPPRESS)
    parser.add_argument("--stream-budget", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.stream_budget is None:  # the longest a stream may take once started, with slack for load
        args.stream_budget = 3 * (args.ttft + args.chunks * args.gap) + 5
    if args.role == "client":
        _client_main(args)
        return
    if args.control_streams < 0:
        raise SystemExit(f"--control-streams must be 0 or more, got {args.control_streams}")
    if args.targets.split(",")[0] != "direct":
        raise SystemExit("--targets must start with direct: it is every round's baseline")

    def expire(*_: object) -> None:
        raise TimeoutError(f"the benchmark exceeded --max-seconds={args.max_seconds}")

    signal.signal(signal.SIGALRM, expire)  # the finally clauses still stop every child
    signal.alarm(max(int(args.max_seconds), 1))
    report = main_orchestrator(args)
    signal.alarm(0)
    if args.json:
        print(json.dumps(report, indent=2))
    if args.markdown or not args.json:
        print(markdown(report))


if __name__ == "__main__":
    main()

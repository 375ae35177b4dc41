"""proxy_load.py's rounds summed up: per target, the median over rounds of each figure (its
added time to first token against the direct target and against the same moment's control
streams among them), and the garbage-collection pauses of each process in its measured windows.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import _load_procs as procs


def gc_report(work: Path, pids: dict[str, int], rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """GC pauses of the fake upstream (over every window) and of each proxy (over its own)."""
    report: dict[str, Any] = {}
    for name, pid in pids.items():
        pauses = procs.gc_pauses(work, pid)
        if not pauses:
            continue  # not a Python process, or it did not exit cleanly
        windows = [(r[n]["window"][0], r[n]["window"][1]) for r in rounds for n in r if name in ("fake", n)]
        report[name] = procs.gc_summary(pauses, windows)
    return report


def summarise(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    """Per target of `names`, the median of each figure over `rounds`, its streams and bad streams summed."""

    def med(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return statistics.median(kept) if kept else None

    summary: dict[str, Any] = {}
    for name in names:
        runs = [r[name] for r in rounds]
        added = {
            q: med(
                [
                    r[name][f"ttft_{q}_ms"] - r["direct"][f"ttft_{q}_ms"]
                    if r[name][f"ttft_{q}_ms"] is not None and r["direct"][f"ttft_{q}_ms"] is not None
                    else None
                    for r in rounds
                ]
            )
            for q in ("p50", "p99")
        }
        concurrent = {
            q: med(
                [
                    r[f"ttft_{q}_ms"] - r[f"control_{q}_ms"]
                    if r[f"ttft_{q}_ms"] is not None and r[f"control_{q}_ms"] is not None
                    else None
                    for r in runs
                ]
            )
            for q in ("p50", "p99")
        }
        summary[name] = {
            "ttft_p50_ms": med([r["ttft_p50_ms"] for r in runs]),
            "ttft_p99_ms": med([r["ttft_p99_ms"] for r in runs]),
            "added_p50_ms": added["p50"],
            "added_p99_ms": added["p99"],
            "concurrent_added_p50_ms": concurrent["p50"],
            "concurrent_added_p99_ms": concurrent["p99"],
            "control_bad_streams": sum(r["control_bad_streams"] for r in runs),
            "events_per_s": med([r["events_per_s"] for r in runs]),
            "target_cpu_us_per_event": med([r["target_cpu_us_per_event"] for r in runs]),
            "fake_cpu_us_per_event": med([r["fake_cpu_us_per_event"] for r in runs]),
            "client_cpu_us_per_event": med([r["client_cpu_us_per_event"] for r in runs]),
            "streams": sum(r["streams"] for r in runs),
            "bad_streams": sum(r["bad_streams"] for r in runs),
            "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
        }
    return summary

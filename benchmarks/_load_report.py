"""proxy_load.py's results as the Markdown of docs/benchmarks.md's "Sidecar proxy under load"."""

from __future__ import annotations

from typing import Any

_LABELS = {
    "direct": "direct to the fake upstream",
    "streamtap-otel": "streamtap proxy: Prometheus + OTel SDK, no exporter",
    "streamtap": "streamtap proxy: Prometheus only (OTEL_SDK_DISABLED)",
    "baseline": "baseline: the same from --baseline-src",
    "relay": "byte relay (a second process, no HTTP)",
    "litellm": "LiteLLM proxy",
}


def _f(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"


def summary_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| target | TTFT p50 ms | TTFT p99 ms | added p50 ms, same moment | added p99 ms, same moment "
        "| added p50 ms, direct round | added p99 ms, direct round | content events/s "
        "| target CPU µs/event | fake CPU µs/event | streams ok / bad |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in report["targets"]:
        s = report["summary"][name]
        direct = name == "direct"
        lines.append(
            f"| {_LABELS.get(name, name)} | {_f(s['ttft_p50_ms'])} | {_f(s['ttft_p99_ms'])} "
            f"| {_f(s['concurrent_added_p50_ms'], signed=True)} "
            f"| {_f(s['concurrent_added_p99_ms'], signed=True)} "
            f"| {'–' if direct else _f(s['added_p50_ms'], signed=True)} "
            f"| {'–' if direct else _f(s['added_p99_ms'], signed=True)} | {_f(s['events_per_s'], 0)} "
            f"| {_f(s['target_cpu_us_per_event'], 1)} | {_f(s['fake_cpu_us_per_event'], 1)} "
            f"| {s['streams']:,} / {s['bad_streams']:,} |"
        )
    return lines


def rounds_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| round | target | TTFT p50 ms | TTFT p99 ms | same moment, direct: TTFT p50 ms | p99 ms "
        "| events/s | target CPU µs/event | client CPU µs/event |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for index, round_ in enumerate(report["rounds"], 1):
        for name, r in round_.items():
            lines.append(
                f"| {index} | {name} | {_f(r['ttft_p50_ms'])} | {_f(r['ttft_p99_ms'])} "
                f"| {_f(r['control_p50_ms'])} | {_f(r['control_p99_ms'])} "
                f"| {_f(r['events_per_s'], 0)} | {_f(r['target_cpu_us_per_event'], 1)} "
                f"| {_f(r['client_cpu_us_per_event'], 1)} |"
            )
    return lines


def gc_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| process | gen 0: collections / longest ms | gen 1 | gen 2 | paused ms per s |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, gc in report.get("gc", {}).items():
        gens = gc["generations"]
        cells = " | ".join(f"{gens[g]['count']:,} / {gens[g]['longest_ms']:.1f}" for g in ("0", "1", "2"))
        label = "fake upstream (every window)" if name == "fake" else _LABELS.get(name, name)
        lines.append(f"| {label} | {cells} | {_f(gc['ms_per_s'], 1)} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    s, env = report["settings"], report["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    lines = [
        f"Machine: {env['cpu']}, {env['cpus']} CPUs; Python {env['python']}; {packages}.",
        f"Load: {s['streams']} concurrent streams, {s['chunks']} content chunks each, {s['gap'] * 1000:g} ms "
        f"apart, fake TTFT {s['ttft'] * 1000:g} ms; {s['rounds']} rounds × {s['duration']:g} s per target "
        f"(first {s['ramp']:g} s left out), {s['warmup']:g} s warm-up each; beside every target's load, "
        f'{s["control_streams"]} streams straight to the fake from the same client ("same moment").',
        "Pinning: " + "; ".join(f"{k} on CPU {v}" for k, v in report["pinning"].items()) + ".",
        f"1-minute load average {env['loadavg_before']:.2f} before the run, "
        f"{env.get('loadavg_after', float('nan')):.2f} after: other work on this shared machine competes for the same cores.",
        "",
        *summary_table(report),
    ]
    for name, error in report.get("errors", {}).items():
        lines += ["", f"{name} could not run: `{error.strip().splitlines()[-1] if error.strip() else error}`"]
    if report.get("gc"):
        lines += ["", "Garbage-collection pauses in the measured windows:", "", *gc_table(report)]
    lines += ["", "<details><summary>Every round</summary>", "", *rounds_table(report), "", "</details>"]
    return "\n".join(lines)

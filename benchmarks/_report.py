"""The overhead benchmark's results as Markdown tables (what docs/benchmarks.md shows)."""

from __future__ import annotations

from typing import Any

from _stats import against

_LABELS = {
    "raw": "raw SDK",
    "control": "raw SDK again (A/A control)",
    "glance": "engine without the Shape lane (glance)",
    "layered": "engine read through httpx2's layers (layered)",
    "positional": "engine with the positional Shape.fits (positional)",
    "engine": "streamtap, engine only",
    "floor": "engine, hot path with its first test only (floor)",
    "unkept": "engine keeping no delivered chunk (unkept)",
    "verified": "engine checking what it passes on, as the proxy does (verified)",
    "telemetry": "streamtap, all telemetry",
    "official": "official OTel instrumentation",
    "prometheus": "engine + Prometheus recorder alone (prometheus)",
    "otel-traces": "engine + OTel trace recorder alone (otel-traces)",
    "otel-metrics": "engine + OTel metrics recorder alone (otel-metrics)",
    "events": "all telemetry + inference events (events)",
}

_VERDICTS = {
    "met": "met (the whole interval is under it)",
    "not met": "NOT met",
    "unclear": "unclear (the median is under it, the interval reaches over)",
}

# What the engine has that a contender lacks: the gain each pairing shows.
_CHANGES = (
    ("glance", "The Shape lane"),
    ("layered", "Reading the caller's body directly"),
    ("positional", "Shape.fits without positional arguments"),
)


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def scenario_table(scenario: dict[str, Any], chunks: int) -> list[str]:
    lines = [
        f"#### {scenario['api']}, {scenario['mode']}",
        "",
        "| contender | median µs/stream | min µs/stream | p25–p75 µs/stream | median µs/chunk "
        "| added µs/chunk | paired µs/chunk [95% CI] | ratio vs raw | min ratio |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, entry in scenario["contenders"].items():
        s = entry["us_per_stream"]
        row = [
            _LABELS.get(name, name),
            _f(s["median"]),
            _f(s["min"]),
            f"{_f(s['p25'])}–{_f(s['p75'])}",
            _f(s["median"] / chunks, 2),
        ]
        vs = entry.get("vs_raw")
        if vs is None:
            row += ["—", "—", "1.000", "1.000"]
        else:
            low, high = vs["paired_ci95_us_per_chunk"]
            row += [
                _signed(vs["added_us_per_chunk"]),
                f"{_signed(vs['paired_us_per_chunk'])} [{_signed(low)}, {_signed(high)}]",
                f"{vs['ratio']:.3f}",
                f"{vs['min_ratio']:.3f}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for key, text in (("issue3_engine", "issue 3 (engine)"), ("issue4_telemetry", "issue 4 (all telemetry)")):
        goal = scenario["goals"].get(key)
        if goal is not None:
            lines.append(
                f"- Goal of {text}: < 2 µs/chunk and < 3% (here < {goal['limit_us_per_chunk']:.2f} µs), "
                f"judged on the paired difference — {_VERDICTS[goal['verdict']]}: "
                f"{_signed(goal['added_us_per_chunk'])} µs/chunk (95% interval up to "
                f"{_signed(goal['upper_us_per_chunk'])}), ratio {goal['ratio']:.3f}."
            )
    control = scenario["contenders"].get("control", {}).get("vs_raw")
    if control is not None:
        low, high = control["paired_ci95_us_per_chunk"]
        lines.append(
            f"- What no difference measures in this run (a second raw client against raw, paired): "
            f"{_signed(control['paired_us_per_chunk'])} µs/chunk [{_signed(low)}, {_signed(high)}]."
        )
    official = scenario["contenders"].get("official", {}).get("vs_raw")
    telemetry = scenario["contenders"].get("telemetry", {}).get("vs_raw")
    if official is not None and telemetry is not None:
        lines.append(
            f"- Official instrumentation adds {_signed(official['added_us_per_chunk'])} µs/chunk "
            f"(ratio {official['ratio']:.3f}); streamtap with all telemetry adds "
            f"{_signed(telemetry['added_us_per_chunk'])} µs/chunk (ratio {telemetry['ratio']:.3f})."
        )
    contenders = scenario["contenders"]
    for before, what in _CHANGES:
        if "engine" in contenders and before in contenders:
            change = against(contenders["engine"]["times_us"], contenders[before]["times_us"], chunks)
            low, high = change["paired_ci95_us_per_chunk"]
            lines.append(
                f"- {what} (engine against {before}, paired over the same rounds): "
                f"{_signed(change['paired_us_per_chunk'])} µs/chunk [{_signed(low)}, {_signed(high)}]."
            )
    for name, reason in scenario.get("skipped", {}).items():
        lines.append(f"- {_LABELS.get(name, name)} skipped: {reason}")
    lines.append("")
    return lines


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    settings = results["settings"]
    packages = ", ".join(f"{name} {version}" for name, version in env["packages"].items() if version)
    lines = [
        f"CPU: {env['cpu']} ({env['cpus']} CPUs); Python {env['python']} ({env['implementation']}); "
        f"{env['platform']}",
        f"Packages: {packages}",
        f"Rounds: {settings['rounds']} timed (+{settings['warmup']} warm-up) per scenario, "
        f"{settings['chunks']} content chunks per stream, "
        + (
            "contenders' streams read in lockstep, one item each in turn round a ring drawn per round; "
            if settings.get("lockstep")
            else "contenders interleaved in rotating order; "
        )
        + f"{settings['seconds']:.0f} s in all.",
        "",
    ]
    for scenario in results["scenarios"]:
        lines += scenario_table(scenario, settings["chunks"])
    return "\n".join(lines)

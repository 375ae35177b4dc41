"""proxy_hops.py runs end to end in a tiny mode: every hop is timed, in order, for both ways.

Timings are never asserted beyond their order and the fake's configured time to first token;
the figures behind docs/benchmarks.md come from the full run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _bench import run_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _hops_report import DIRECT, INTO_PROXY, PROXIED, PROXY_CPU, markdown  # noqa: E402


def _run(*extra: str) -> dict[str, Any]:
    parsed: dict[str, Any] = run_json(
        "proxy_hops.py",
        "--streams=4",
        "--control-streams=2",
        "--chunks=3",
        "--gap=0.01",
        "--ttft=0.03",
        "--duration=1.5",
        "--ramp=0.3",
        "--rounds=2",
        "--warmup=0.5",
        *extra,
        timeout=120,
    )
    return parsed


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return _run()


def test_through_a_byte_relay_every_request_is_timed_at_the_rigs_points() -> None:
    relayed = _run("--relay")
    assert relayed["settings"]["relay"] is True
    assert all(r["proxied"] > 0 and r["direct"] > 0 for r in relayed["rounds"])
    names = [name for name, _, _ in DIRECT]
    assert list(relayed["proxied"]) == names
    assert relayed["proxied"]["fake: time to first token"]["p50"] >= 30.0
    assert relayed["proxy_own"] == {}
    lines = markdown(relayed).splitlines()
    assert lines[0].startswith("4 streams through a byte relay (no HTTP) and 2 straight to the fake")
    assert not any("proxy's own" in line or "CPU time" in line for line in lines)


@pytest.mark.parametrize(
    ("flag", "protocol", "named"),
    [("--otlp", "http/protobuf", "OTLP/HTTP"), ("--otlp=grpc", "grpc", "OTLP/gRPC")],
)
def test_exporting_over_otlp_every_span_reaches_the_sink_in_batches_of_64_at_most(
    flag: str, protocol: str, named: str
) -> None:
    exporting = _run(flag)
    assert exporting["settings"]["otlp"] == protocol
    assert all(r["proxied"] > 0 and r["direct"] > 0 for r in exporting["rounds"])
    exported = exporting["exported"]
    batches = exported["span_batches"]
    # Two spans a call (the call's and its attempt's), every call of the run, warm-up included.
    assert sum(batches) >= 2 * exporting["requests"]["proxied"]
    assert sum(batches) % 2 == 0
    assert 0 < max(batches) <= 64
    assert exported["requests"]["/v1/metrics"] >= 1  # the stop flushes the metrics too
    lines = markdown(exporting).splitlines()
    assert f"the proxy (Prometheus and the OTel SDK, exporting over {named})" in lines[0]
    assert lines[-1].startswith(
        f"Exported to the sink, the stop's flush included: {sum(batches):,} spans in "
    )


def test_a_scraped_proxy_serving_several_models() -> None:
    scraped = _run("--models=3", "--scrape=0.4")
    assert (scraped["settings"]["models"], scraped["settings"]["scrape"]) == (3, 0.4)
    assert all(r["proxied"] > 0 and r["direct"] > 0 for r in scraped["rounds"])
    scrapes = scraped["scrapes_ms"]
    assert scrapes["count"] >= 5  # about 4.5 s of load
    assert 0 < scrapes["p50"] <= scrapes["max"]
    lines = markdown(scraped).splitlines()
    assert "the proxied streams ask for 3 models; the proxy's /metrics scraped every 0.4 s." in lines[0]
    assert lines[-1].startswith(f"Scrapes of /metrics: {scrapes['count']}, each answered whole in ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--otel", "--otlp"],
            "--relay, --otel and --otlp each name what runs in the proxy's place: pick one",
        ),
        (["--relay", "--scrape=5"], "--scrape needs the proxy: a byte relay has no /metrics"),
    ],
)
def test_settings_that_do_not_go_together_are_refused(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "proxy_hops.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_both_ways_were_sampled_in_every_round(report: dict[str, Any]) -> None:
    assert len(report["rounds"]) == 2
    for round_ in report["rounds"]:
        assert round_["proxied"] > 0
        assert round_["direct"] > 0
        assert set(round_) == {"proxied", "direct", "added_p50_ms", "added_p99_ms"}
    assert report["requests"]["proxied"] == sum(r["proxied"] for r in report["rounds"])
    assert report["requests"]["direct"] == sum(r["direct"] for r in report["rounds"])
    assert set(report["added"]) == {"p50", "p99"}


def test_every_hop_is_timed_and_none_runs_backwards(report: dict[str, Any]) -> None:
    for way, spans in (("proxied", PROXIED), ("direct", DIRECT)):
        assert list(report[way]) == [name for name, _, _ in spans]
        for name, row in report[way].items():
            assert set(row) == {"p50", "p90", "p99"}, (way, name)
            assert 0 <= row["p50"] <= row["p90"] <= row["p99"], (way, name, row)


def test_the_fake_waits_its_time_to_first_token_either_way(report: dict[str, Any]) -> None:
    for way in ("proxied", "direct"):
        assert report[way]["fake: time to first token"]["p50"] >= 30.0
        assert (
            report[way]["whole: time to first token"]["p50"] > report[way]["fake: time to first token"]["p50"]
        )
    assert report["proxy_own"]["p50"] > 0


def test_the_hop_into_the_proxy_is_split_in_order(report: dict[str, Any]) -> None:
    assert list(report["into_proxy"]) == [name for name, _, _ in INTO_PROXY]
    for name, row in report["into_proxy"].items():
        assert 0 <= row["p50"] <= row["p90"] <= row["p99"], (name, row)
    # Each part of a request's hop is at most its whole hop, so at every quantile too.
    whole = report["proxied"]["client to proxy"]
    for name, row in report["into_proxy"].items():
        for q in ("p50", "p90", "p99"):
            assert row[q] <= whole[q] + 1e-9, (name, q, row, whole)


def test_the_proxys_steps_take_no_more_cpu_time_than_wall_time(report: dict[str, Any]) -> None:
    # One thread: a step's CPU time can be as long as its wall time, never longer; but at each
    # point the CPU clock is read just after the wall clock, so the step's CPU time runs a
    # clock read longer at its end (a failed run here was over by more than 1 µs): 10 µs.
    assert list(report["proxy_cpu"]) == [name for name, _, _ in PROXY_CPU]
    walls = ("proxy: request to upstream write", "proxy: first content to relayed")
    for (name, _, _), wall in zip(PROXY_CPU, walls, strict=True):
        cpu = report["proxy_cpu"][name]
        for q in ("p50", "p90", "p99"):
            assert 0 < cpu[q] <= report["proxied"][wall][q] + 0.01, (name, q, cpu)


def test_the_markdown_has_a_row_per_hop() -> None:
    row = {"p50": 1.0, "p90": 2.0, "p99": 3.0}
    report = {
        "settings": {
            "streams": 2, "control_streams": 1, "chunks": 3, "gap": 0.01, "ttft": 0.03,
            "warmup": 0.5, "duration": 1.0, "ramp": 0.2, "rounds": 2, "otel": False, "otlp": None,
            "relay": False,
        },
        "requests": {"proxied": 5, "direct": 2},
        "rounds": [
            {"proxied": 3, "direct": 1, "added_p50_ms": 1.5, "added_p99_ms": 4.0},
            {"proxied": 2, "direct": 1, "added_p50_ms": 0.5, "added_p99_ms": -1.0},
        ],
        "added": {"p50": 1.0, "p99": 1.5},
        "proxied": {name: row for name, _, _ in PROXIED},
        "direct": {name: row for name, _, _ in DIRECT},
        "proxy_own": row,
        "into_proxy": {name: row for name, _, _ in INTO_PROXY},
        "proxy_cpu": {name: row for name, _, _ in PROXY_CPU},
        "proxy_gc": {
            "generations": {
                "0": {"count": 3, "longest_ms": 2.5}, "1": {"count": 1, "longest_ms": 24.0},
                "2": {"count": 0, "longest_ms": 0.0},
            },
            "ms_per_s": 1.25,
        },
    }  # fmt: skip
    lines = markdown(report).splitlines()
    assert "0.5 s of warm-up, then 2 rounds of 1 s, the first 0.2 s of each left out" in lines[0]
    assert (
        "Added time to first token (proxied minus direct, the same moment), ms: "
        "p50 +1.00 (rounds: +1.50, +0.50); p99 +1.50 (rounds: +4.00, -1.00)." in lines
    )
    assert "| client to proxy | 1.00 | 2.00 | 3.00 | 1.00 | 2.00 | 3.00 |" in lines
    assert "| proxy to fake | 1.00 | 2.00 | 3.00 | – | – | – |" in lines
    assert (
        "| proxy: first content to relayed, its thread's CPU time | 1.00 | 2.00 | 3.00 | – | – | – |" in lines
    )
    assert len([line for line in lines if line.startswith("| ") and "---" not in line]) == 1 + 8 + 1 + 3 + 2
    assert lines[-1] == (
        "The proxy's garbage collections in the measured windows: gen 0 3 (longest 2.5 ms), "
        "gen 1 1 (longest 24.0 ms), gen 2 0 (longest 0.0 ms); 1.2 ms paused per second of load."
    )


def test_the_proxys_garbage_collections_are_summed(report: dict[str, Any]) -> None:
    gc = report["proxy_gc"]
    assert set(gc["generations"]) == {"0", "1", "2"}
    assert gc["ms_per_s"] >= 0

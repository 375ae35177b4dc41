"""The proxy load benchmark runs end to end in a tiny mode and reports well-formed results.

Five streams, one short round, no LiteLLM: only the shape and the sanity of the output are
asserted (every stream complete, CPU accounted); the latency goals are read from the full run
in docs/benchmarks.md, never asserted here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from _bench import run_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _load_procs as procs  # noqa: E402
from _load_client import is_content  # noqa: E402

SUMMARY_KEYS = {
    "ttft_p50_ms",
    "ttft_p99_ms",
    "added_p50_ms",
    "added_p99_ms",
    "concurrent_added_p50_ms",
    "concurrent_added_p99_ms",
    "control_bad_streams",
    "events_per_s",
    "target_cpu_us_per_event",
    "fake_cpu_us_per_event",
    "client_cpu_us_per_event",
    "streams",
    "bad_streams",
    "first_error",
}


def _run(*extra: str) -> dict[str, Any]:
    parsed: dict[str, Any] = run_json(
        "proxy_load.py",
        "--streams=5",
        "--chunks=5",
        "--gap=0.01",
        "--ttft=0.01",
        "--duration=1",
        "--ramp=0.3",
        "--rounds=2",
        "--warmup=0.5",
        "--control-streams=3",
        "--max-seconds=120",
        *extra,
        timeout=180,
    )
    return parsed


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return _run("--targets=direct,streamtap")


def test_settings_targets_and_rounds_are_reported(report: dict[str, Any]) -> None:
    assert report["settings"] == {
        "streams": 5,
        "chunks": 5,
        "gap": 0.01,
        "ttft": 0.01,
        "duration": 1.0,
        "ramp": 0.3,
        "rounds": 2,
        "warmup": 0.5,
        "control_streams": 3,
    }
    assert report["targets"] == ["direct", "streamtap"]
    assert report["errors"] == {}
    # Rounds rotate the order, so neither target always runs first.
    assert [list(r) for r in report["rounds"]] == [["direct", "streamtap"], ["streamtap", "direct"]]
    assert report["environment"]["packages"]["streamtap"] is not None


def test_every_stream_completes_and_every_figure_is_present(report: dict[str, Any]) -> None:
    for name in ("direct", "streamtap"):
        summary = report["summary"][name]
        assert set(summary) == SUMMARY_KEYS
        assert summary["bad_streams"] == 0, summary["first_error"]
        assert summary["control_bad_streams"] == 0
        assert summary["concurrent_added_p50_ms"] is not None
        assert summary["streams"] > 0
        assert summary["ttft_p50_ms"] > 0
        assert summary["ttft_p99_ms"] >= summary["ttft_p50_ms"]
        assert summary["events_per_s"] > 0
    assert report["summary"]["direct"]["target_cpu_us_per_event"] is None  # no proxy in the path
    assert report["summary"]["direct"]["added_p50_ms"] == 0
    assert report["summary"]["streamtap"]["target_cpu_us_per_event"] > 0
    for round_ in report["rounds"]:
        for measured in round_.values():  # the control streams ran beside every target
            assert measured["control_samples"] > 0
            assert measured["control_events"] > 0


def test_gc_pauses_are_reported_for_the_fake_and_the_proxy(report: dict[str, Any]) -> None:
    assert set(report["gc"]) == {"fake", "streamtap"}  # both wrote their pauses as they exited
    for gc in report["gc"].values():
        assert set(gc["generations"]) == {"0", "1", "2"}
        assert gc["ms_per_s"] >= 0


def test_a_baseline_from_another_source_tree_runs_beside_the_others() -> None:
    ran = _run("--targets=direct,baseline", f"--baseline-src={ROOT / 'src'}", "--rounds=1")
    assert ran["errors"] == {}
    assert ran["targets"] == ["direct", "baseline"]
    assert ran["summary"]["baseline"]["bad_streams"] == 0
    assert ran["summary"]["baseline"]["target_cpu_us_per_event"] > 0


def test_a_byte_relay_runs_as_a_target_and_passes_every_stream_whole() -> None:
    ran = _run("--targets=direct,relay", "--rounds=1")
    assert ran["errors"] == {}
    assert ran["targets"] == ["direct", "relay"]
    relay = ran["summary"]["relay"]
    assert relay["bad_streams"] == 0, relay["first_error"]
    assert relay["streams"] > 0
    assert relay["target_cpu_us_per_event"] > 0
    assert set(ran["gc"]) == {"fake", "relay"}


def test_a_baseline_source_without_the_package_is_reported_not_run(tmp_path: Path) -> None:
    ran = _run("--targets=direct,baseline", f"--baseline-src={tmp_path}", "--rounds=1")
    assert ran["targets"] == ["direct"]
    assert "--baseline-src must be a directory holding the streamtap package" in ran["errors"]["baseline"]


def test_gc_summary_keeps_only_collections_that_start_inside_the_windows() -> None:
    pauses = [(0.5, 0, 0.001), (1.5, 0, 0.002), (1.9, 2, 0.030), (2.5, 1, 0.5), (3.2, 0, 0.004)]
    summary = procs.gc_summary(pauses, [(1.0, 2.0), (3.0, 4.0)])
    assert summary["generations"] == {
        "0": {"count": 2, "longest_ms": pytest.approx(4.0)},
        "1": {"count": 0, "longest_ms": 0.0},
        "2": {"count": 1, "longest_ms": pytest.approx(30.0)},
    }
    assert summary["ms_per_s"] == pytest.approx(36.0 / 2)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b'data: {"choices":[{"delta":{"content":"Hi"}}]}', True, id="content"),
        pytest.param(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}', False, id="empty"),
        pytest.param(b'data: {"choices":[{"delta":{"content":null}}]}', False, id="null"),
        pytest.param(b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}', False, id="finish"),
        pytest.param(b"data: [DONE]", False, id="done"),
    ],
)
def test_content_events_are_told_apart(data: bytes, expected: bool) -> None:
    assert is_content(data) is expected

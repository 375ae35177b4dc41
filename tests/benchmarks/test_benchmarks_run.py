"""The overhead benchmark runs and reports well-formed results for every contender.

Only the shape and the sanity checks are asserted here; the timing goals are read from the
benchmark's output (docs/benchmarks.md), never asserted by a unit test.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from _bench import run_json

ROOT = Path(__file__).resolve().parents[2]
ROUNDS, WARMUP, CHUNKS = 2, 1, 20
_OFFICIAL = "opentelemetry.instrumentation.genai.openai"


def _official_installed() -> bool:
    try:
        return importlib.util.find_spec(_OFFICIAL) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    parsed: dict[str, Any] = run_json(
        "overhead.py",
        "--quick",
        f"--rounds={ROUNDS}",
        f"--warmup={WARMUP}",
        f"--chunks={CHUNKS}",
        timeout=300,
    )
    return parsed


def test_settings_and_environment_are_reported(results: dict[str, Any]) -> None:
    assert {k: results["settings"][k] for k in ("rounds", "warmup", "chunks")} == {
        "rounds": ROUNDS,
        "warmup": WARMUP,
        "chunks": CHUNKS,
    }
    env = results["environment"]
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["packages"]["openai"] is not None
    assert env["packages"]["streamtap"] is not None
    assert [(s["api"], s["mode"]) for s in results["scenarios"]] == [
        ("chat", "sync"),
        ("chat", "async"),
        ("responses", "sync"),
        ("responses", "async"),
    ]


def _expected_contenders() -> list[str]:
    names = ["raw", "control", "glance", "layered", "positional", "engine", "floor", "unkept", "verified"]
    names.append("telemetry")
    return [*names, "official"] if _official_installed() else names


@pytest.mark.parametrize(
    "index", range(4), ids=["chat-sync", "chat-async", "responses-sync", "responses-async"]
)
def test_every_contender_read_every_stream_whole(results: dict[str, Any], index: int) -> None:
    scenario = results["scenarios"][index]
    assert list(scenario["contenders"]) == _expected_contenders()
    extra = {"chat": 3, "responses": 8}[scenario["api"]]
    for name, entry in scenario["contenders"].items():
        assert entry["items"] == [CHUNKS + extra], name
        assert entry["requests"] == ROUNDS + WARMUP, name  # one request per stream: no retries
        assert len(entry["times_us"]) == ROUNDS, name
        assert all(t > 0 for t in entry["times_us"]), name
        stats = entry["us_per_stream"]
        assert stats["min"] <= stats["p25"] <= stats["median"] <= stats["p75"] <= stats["max"], name
    contenders = scenario["contenders"]
    # The telemetry is really recorded: a call span and an attempt span per call, every call ok.
    assert contenders["telemetry"]["spans_per_call"] == [2]
    assert contenders["telemetry"]["ok_calls"] == ROUNDS + WARMUP
    assert contenders["engine"]["spans_per_call"] is None
    assert contenders["floor"]["spans_per_call"] is None
    assert contenders["glance"]["spans_per_call"] is None
    assert contenders["layered"]["spans_per_call"] is None
    assert contenders["positional"]["spans_per_call"] is None
    assert contenders["verified"]["spans_per_call"] is None
    assert contenders["unkept"]["spans_per_call"] is None
    if "official" in contenders:
        assert contenders["official"]["spans_per_call"] == [1]


def test_comparisons_and_goals_are_computed(results: dict[str, Any]) -> None:
    for scenario in results["scenarios"]:
        for name, entry in scenario["contenders"].items():
            if name == "raw":
                assert "vs_raw" not in entry
                continue
            vs = entry["vs_raw"]
            raw = scenario["contenders"]["raw"]["us_per_stream"]["median"]
            assert vs["added_us_per_chunk"] == pytest.approx(
                (entry["us_per_stream"]["median"] - raw) / CHUNKS
            )
            assert vs["ratio"] == pytest.approx(entry["us_per_stream"]["median"] / raw)
            low, high = vs["paired_ci95_us_per_chunk"]
            assert low <= high
        assert set(scenario["goals"]) == {"issue3_engine", "issue4_telemetry"}
        raw_chunk = scenario["contenders"]["raw"]["us_per_chunk"]["median"]
        for issue, name in (("issue3_engine", "engine"), ("issue4_telemetry", "telemetry")):
            goal, vs = scenario["goals"][issue], scenario["contenders"][name]["vs_raw"]
            limit = min(2.0, 0.03 * raw_chunk)
            assert goal["limit_us_per_chunk"] == pytest.approx(limit)
            assert goal["added_us_per_chunk"] == vs["paired_us_per_chunk"]
            assert goal["upper_us_per_chunk"] == vs["paired_ci95_us_per_chunk"][1]
            assert goal["ratio"] == pytest.approx(1 + vs["paired_us_per_chunk"] / raw_chunk)
            expected = (
                "met"
                if goal["upper_us_per_chunk"] < limit
                else "not met"
                if goal["added_us_per_chunk"] >= limit
                else "unclear"
            )
            assert goal["verdict"] == expected


def test_a_goal_is_met_only_when_the_whole_interval_is_under_it() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from overhead import _goals

    def goal(paired: float, low: float, high: float, raw: float = 100.0) -> str:
        vs = {"paired_us_per_chunk": paired, "paired_ci95_us_per_chunk": [low, high]}
        contenders = {"raw": {"us_per_chunk": {"median": raw}}, "engine": {"vs_raw": vs}}
        verdict: str = _goals(contenders)["issue3_engine"]["verdict"]
        return verdict

    # At 100 µs per chunk the limit is 2 µs (3% would be 3 µs); at 50 µs it is 3%, 1.5 µs.
    assert [goal(1.0, 0.5, 1.9), goal(1.0, 0.5, 2.0), goal(2.0, 1.5, 2.5), goal(3.0, 2.5, 3.5)] == [
        "met",
        "unclear",
        "not met",
        "not met",
    ]
    assert [goal(1.0, 0.5, 1.4, raw=50), goal(1.0, 0.5, 1.6, raw=50), goal(1.6, 1.0, 1.9, raw=50)] == [
        "met",
        "unclear",
        "not met",
    ]


def test_the_report_shows_the_a_a_control(results: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import scenario_table

    scenario = results["scenarios"][1]
    vs = scenario["contenders"]["control"]["vs_raw"]
    low, high = vs["paired_ci95_us_per_chunk"]
    line = (
        "- What no difference measures in this run (a second raw client against raw, paired): "
        f"{vs['paired_us_per_chunk']:+.2f} µs/chunk [{low:+.2f}, {high:+.2f}]."
    )
    assert line in scenario_table(scenario, CHUNKS)
    assert scenario["contenders"]["control"]["spans_per_call"] is None


@pytest.mark.parametrize(
    ("before", "what"),
    [
        ("glance", "The Shape lane"),
        ("layered", "Reading the caller's body directly"),
        ("positional", "Shape.fits without positional arguments"),
    ],
)
def test_the_report_pairs_the_engine_with_what_it_changed(
    results: dict[str, Any], before: str, what: str
) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import scenario_table
    from _stats import against

    scenario = results["scenarios"][0]
    change = against(
        scenario["contenders"]["engine"]["times_us"], scenario["contenders"][before]["times_us"], CHUNKS
    )
    low, high = change["paired_ci95_us_per_chunk"]
    line = (
        f"- {what} (engine against {before}, paired over the same rounds): "
        f"{change['paired_us_per_chunk']:+.2f} µs/chunk [{low:+.2f}, {high:+.2f}]."
    )
    assert line in scenario_table(scenario, CHUNKS)


def test_a_missing_official_instrumentation_is_skipped_with_its_reason(results: dict[str, Any]) -> None:
    skipped = results["scenarios"][0]["skipped"]
    if _official_installed():
        assert skipped == {}
    else:
        assert skipped == {
            "official": "opentelemetry-instrumentation-genai-openai is not installed (pip install -e '.[bench]')"
        }


def test_the_floor_cuts_the_hot_path_test_only_during_its_own_repetitions() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _contenders import build, consume_sync, prefix_only
    from _streams import MemoryUpstream

    from streamtap._dialect import Shape

    original = Shape.fits
    floor = build("floor", MemoryUpstream(5), "sync")
    floor.before()
    try:
        assert Shape.fits is prefix_only
        assert consume_sync(floor.client, "chat") == 5 + 3  # every chunk, the stream complete
        assert consume_sync(floor.client, "responses") == 5 + 8
    finally:
        floor.finish_repetition()
    assert Shape.fits is original


def test_the_glance_contender_learns_no_shape_only_during_its_own_repetitions() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _contenders import build, consume_sync
    from _streams import MemoryUpstream, chat_events

    from streamtap._chat import CHAT

    learnt = chat_events(3)[2]
    assert CHAT.shape(learnt) is not None
    glance = build("glance", MemoryUpstream(5), "sync")
    glance.before()
    try:
        assert CHAT.shape(learnt) is None
        assert consume_sync(glance.client, "chat") == 5 + 3
        assert consume_sync(glance.client, "responses") == 5 + 8
    finally:
        glance.finish_repetition()
    assert CHAT.shape(learnt) is not None


def test_the_layered_contender_reads_through_httpx2_only_during_its_own_repetitions() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _contenders import build, consume_sync
    from _streams import MemoryUpstream

    from streamtap._stream_response import StreamResponse

    direct = StreamResponse.iter_bytes, StreamResponse.aiter_bytes
    layered = build("layered", MemoryUpstream(5), "sync")
    layered.before()
    try:
        assert StreamResponse.iter_bytes is httpx2.Response.iter_bytes
        assert StreamResponse.aiter_bytes is httpx2.Response.aiter_bytes
        assert consume_sync(layered.client, "chat") == 5 + 3
        assert consume_sync(layered.client, "responses") == 5 + 8
    finally:
        layered.finish_repetition()
    assert (StreamResponse.iter_bytes, StreamResponse.aiter_bytes) == direct


def test_the_positional_contender_tests_reads_as_before_only_during_its_own_repetitions() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _contenders import build, consume_sync, positional_fits
    from _streams import MemoryUpstream, chat_events, responses_events

    from streamtap._chat import CHAT
    from streamtap._dialect import CONTENT, Shape
    from streamtap._responses import RESPONSES

    # The former test answers as the current one on the benchmark's reads and their cuts.
    for dialect, events in ((CHAT, chat_events(5)), (RESPONSES, responses_events(5))):
        shape = dialect.shape(next(e for e in events if dialect.glance(e) == CONTENT))
        assert shape is not None
        reads = [*events, events[-3] + events[-2], *(event[:cut] for event in events for cut in (9, -1, -3))]
        assert [positional_fits(shape, read) for read in reads] == [shape.fits(read) for read in reads]
        assert sum(map(shape.fits, reads)) >= 5
    original = Shape.fits
    contender = build("positional", MemoryUpstream(5), "sync")
    contender.before()
    try:
        assert Shape.fits is positional_fits
        assert consume_sync(contender.client, "chat") == 5 + 3
        assert consume_sync(contender.client, "responses") == 5 + 8
    finally:
        contender.finish_repetition()
    assert Shape.fits is original


@pytest.mark.parametrize(
    "contender", ["engine", "glance", "layered", "positional", "floor", "unkept", "verified"]
)
def test_instructions_script_runs(contender: str) -> None:
    script = ROOT / "benchmarks" / "instructions.py"
    for api, mode in itertools.product(("chat", "responses"), ("sync", "async")):
        done = subprocess.run(
            [sys.executable, str(script), api, contender, "1", "--chunks", "5", "--mode", mode],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr


# Stands in for valgrind (not installed by the test setup; a real count takes minutes): reports
# a count that follows from the arguments, as callgrind's summary line does.
FAKE_VALGRIND = """#!/usr/bin/env python3
import os, sys
args = sys.argv[sys.argv.index("--callgrind-out-file=/dev/null") + 2:]
api, contender, streams, mode = args[1], args[2], int(args[3]), args[5]
assert os.environ["PYTHONHASHSEED"] == "0"
per_chunk = {"raw": 831_000, "engine": 840_000, "layered": 845_200}[contender]
if os.environ.get("PYTHONPATH", "").endswith("old-src"):
    per_chunk += 5_000
per_chunk += 12_000 if mode == "async" else 0
layout = len(os.environ["STREAMTAP_BENCH_LAYOUT"]) // 40
per_chunk += layout * (1_500 if contender == "engine" else 1_000)
print(f"==7== Collected : {3_000_000_000 + (2 + streams) * 500 * per_chunk}", file=sys.stderr)
"""


def _with_fake_valgrind(
    tmp_path: Path, fake: str, script: str, *args: str
) -> subprocess.CompletedProcess[str]:
    valgrind = tmp_path / "valgrind"
    valgrind.write_text(fake)
    valgrind.chmod(0o755)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    return done


def test_instruction_counts_reports_each_row_per_chunk_and_over_raw(tmp_path: Path) -> None:
    done = _with_fake_valgrind(
        tmp_path,
        FAKE_VALGRIND,
        "instruction_counts.py",
        "--contenders=layered,engine",
        "--modes=sync,async",
        f"--before-src={tmp_path / 'old-src'}",
    )
    assert done.stdout.splitlines() == [
        "Instructions per chunk, chat, 4 streams of 500 chunks minus 0, median over 3 layouts "
        "(range of the difference):",
        "",
        "| contender | sync per chunk | sync over raw | async per chunk | async over raw |",
        "|---|--:|--:|--:|--:|",
        "| raw | 832.0 k | — | 844.0 k | — |",
        "| layered | 846.2 k | +14.2 k (+14.2 to +14.2) | 858.2 k | +14.2 k (+14.2 to +14.2) |",
        "| engine | 841.5 k | +9.5 k (+9.0 to +10.0) | 853.5 k | +9.5 k (+9.0 to +10.0) |",
        "| engine (before) | 846.5 k | +14.5 k (+14.0 to +15.0) | 858.5 k | +14.5 k (+14.0 to +15.0) |",
    ]
    assert "[48/48]" in done.stderr


# Stands in for valgrind's cachegrind: totals that follow from the arguments, in its summary's
# format (the I1 line of the engine at 0 streams is the same as raw's, so a share of 0%).
FAKE_CACHEGRIND = """#!/usr/bin/env python3
import sys
args = sys.argv[sys.argv.index("--cachegrind-out-file=/dev/null") + 2:]
contender, streams = args[2], int(args[3])
assert "--cache-sim=yes" in sys.argv and "--branch-sim=yes" in sys.argv
engine = contender == "engine"
chunks = (2 + streams) * 500
lines = {
    "I   refs": 3_000_000 + chunks * (840_000 if engine else 835_000),
    "I1  misses": chunks * 13_000,
    "D1  misses": chunks * (11_100 if engine else 11_200),
    "LL misses": 700_000,
    "Mispredicts": chunks * (19_190 if engine else 19_000),
}
for name, total in lines.items():
    print(f"==7== {name}: {total:,}  (1 rd + 2 wr)", file=sys.stderr)
"""


def test_cache_counts_reports_each_event_per_chunk_and_over_raw(tmp_path: Path) -> None:
    done = _with_fake_valgrind(tmp_path, FAKE_CACHEGRIND, "cache_counts.py", "--contenders=engine")
    assert done.stdout.splitlines() == [
        "Per chunk, chat, 2 streams of 500 chunks minus 0, valgrind's cache and branch simulation "
        "(over raw: the difference, and its share of raw's):",
        "",
        "| contender | mode | instructions | I1 misses | D1 misses | LL misses | mispredicts |",
        "|---|---|--:|--:|--:|--:|--:|",
        "| raw | sync | 835,000 | 13,000 | 11,200 | 0 | 19,000 |",
        "| engine | sync | +5,000 (+0.6%) | +0 (+0.0%) | -100 (-0.9%) | +0 (—) | +190 (+1.0%) |",
    ]
    assert "[4/4]" in done.stderr


@pytest.mark.anyio
async def test_the_in_memory_body_reads_once_like_a_socket() -> None:
    # The async SDK drains a chat body after [DONE] by iterating its stream again; a body that
    # replays its events made the raw SDK read every stream twice (the benchmark's baseline).
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _streams import MemoryUpstream, chat_events

    upstream = MemoryUpstream(3)
    request = httpx2.Request("POST", "http://bench.local/v1/chat/completions", content=b"{}")
    sync_body = upstream.handle_request(request).stream
    assert isinstance(sync_body, httpx2.SyncByteStream)
    assert list(sync_body) == chat_events(3)
    assert list(sync_body) == []
    async_body = (await upstream.handle_async_request(request)).stream
    assert isinstance(async_body, httpx2.AsyncByteStream)
    assert [chunk async for chunk in async_body] == chat_events(3)
    assert [chunk async for chunk in async_body] == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_verified_contender_checks_what_its_engine_passes_on(mode: str) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _contenders import build
    from _streams import MemoryUpstream

    client = build("verified", MemoryUpstream(5), mode).client
    assert client._client._transport.engine.verify_events is True
    assert client.max_retries == 0
    assert build("engine", MemoryUpstream(5), mode).client._client._transport.engine.verify_events is False


def test_the_unkept_contender_keeps_only_the_last_chunk_during_its_own_repetitions() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _contenders import build, consume_sync
    from _streams import MemoryUpstream

    from streamtap._engine import Engine

    original = Engine.start_call
    contender = build("unkept", MemoryUpstream(5), "sync")
    engine = contender.client._client._transport.engine
    contender.before()
    try:
        call = engine.start_call("chat_completions", "/chat/completions", "http://x/v1", {"model": "m"})
        assert call.delivered.maxlen == 1
        assert consume_sync(contender.client, "chat") == 5 + 3
    finally:
        contender.finish_repetition()
    assert Engine.start_call is original
    call = engine.start_call("chat_completions", "/chat/completions", "http://x/v1", {"model": "m"})
    assert call.delivered == []


def test_one_recorder_contenders_run_only_when_named_and_record_what_they_name() -> None:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "overhead.py"),
        "--lockstep",
        "--api=chat",
        f"--rounds={ROUNDS}",
        f"--warmup={WARMUP}",
        f"--chunks={CHUNKS}",
        "--contenders=prometheus,otel-traces,otel-metrics,events",
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    calls = ROUNDS + WARMUP
    for scenario in json.loads(done.stdout)["scenarios"]:
        contenders = scenario["contenders"]
        assert list(contenders) == ["raw", "prometheus", "otel-traces", "otel-metrics", "events"]
        recorded = {
            name: (entry["ok_calls"], entry["spans_per_call"], entry["otel_calls"], entry["events_per_call"])
            for name, entry in contenders.items()
        }
        assert recorded == {
            "raw": (None, None, None, None),
            "prometheus": (calls, None, None, None),
            "otel-traces": (None, [2], None, None),
            "otel-metrics": (None, None, calls, None),
            "events": (calls, [2], None, [1]),  # all telemetry (no reader kept), one event a call
        }
    # Progress on stderr: a line as each of the two scenarios starts and one as it ends.
    progress = done.stderr.splitlines()
    assert [line.split(":")[0].split(",")[0] for line in progress] == [
        "[1/2] chat sync",
        "[1/2] done",
        "[2/2] chat async",
        "[2/2] done",
    ]

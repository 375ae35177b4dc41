"""benchmarks/lane_in_situ.py runs every variant and reports well-formed figures (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lane_in_situ import VARIANTS, markdown, variant  # noqa: E402


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "lane_in_situ.py"),
        "--rounds=2",
        "--warmup=0",
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    parsed: list[dict[str, Any]] = json.loads(done.stdout)
    return parsed


def test_every_variant_reads_every_stream_whole(results: list[dict[str, Any]]) -> None:
    assert [r["variant"] for r in results] == list(VARIANTS)
    for r in results:
        # 500 contents + role, finish and usage chunks, for every client and round
        assert r["items"] == {"raw": [503], "control": [503], "engine": [503]}, r["variant"]
        assert r["tight_ns"] > 0
        low, high = r["engine"]["paired_ci95_us_per_chunk"]
        assert low <= r["engine"]["paired_us_per_chunk"] <= high


def test_the_report_has_a_row_per_variant(results: list[dict[str, Any]]) -> None:
    rows = markdown(results).splitlines()[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(VARIANTS)


def test_the_variants_answer_as_described() -> None:
    from _streams import chat_events

    from streamtap._chat import CHAT

    read = chat_events(3)[2]
    shape = CHAT.shape(read)
    assert shape is not None
    two_frames = read + read
    assert variant("engine")(shape, two_frames) is False  # exactly one frame, or the full path
    assert variant("floor")(shape, two_frames) is True  # the first test only
    assert variant("busy")(shape, two_frames) is True
    assert variant("none")(shape, b"anything") is True
    with pytest.raises(ValueError, match="variant must be one of engine, floor, busy, none, got 'x'"):
        variant("x")

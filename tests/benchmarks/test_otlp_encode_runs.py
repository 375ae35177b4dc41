"""otlp_encode.py runs and reports, per batch size, both encoders' positive times and the size, and
both gRPC exporters' CPU per export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _bench import run_json

ROOT = Path(__file__).resolve().parents[2]


def test_every_batch_is_encoded_and_timed() -> None:
    report = run_json(
        "otlp_encode.py", "--calls=3", "--chunks=2", "--batches=1,4,10", "--repeats=2", timeout=120
    )
    assert report["recorded_spans"] == 6  # a call's span and its attempt's
    assert [row["spans"] for row in report["batches"]] == [1, 4, 10]
    for row in report["batches"]:
        for encoder in ("sdk", "streamtap"):
            assert row[f"{encoder}_ms"] > 0
            assert row[f"{encoder}_us_per_span"] == pytest.approx(row[f"{encoder}_ms"] * 1000 / row["spans"])
    sizes = [row["bytes"] for row in report["batches"]]
    assert sizes == sorted(sizes) and sizes[0] > 0
    # The same batches exported over gRPC by both exporters, which sent the same bytes.
    assert [(row["spans"], row["bytes"]) for row in report["grpc_exports"]] == [
        (1, sizes[0]),
        (4, sizes[1]),
        (10, sizes[2]),
    ]
    for row in report["grpc_exports"]:
        assert row["sdk_cpu_ms"] > 0 and row["streamtap_cpu_ms"] > 0


def test_a_batch_of_none_is_refused_by_name() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "otlp_encode.py"), "--batches=64,0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--batches must be at least 1, got 0" in done.stderr

"""overhead.py --lockstep: every contender's stream read item by item in turn, in one round."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _bench import run_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _contenders import Contender  # noqa: E402
from _lockstep import run_async, run_sync  # noqa: E402

ROUNDS, WARMUP, CHUNKS = 2, 1, 20


def _client(name: str, items: int, log: list[str]) -> Any:
    """A stand-in client whose chat streams yield `items` items, logging each open and read."""

    def stream() -> Iterator[int]:
        for i in range(items):
            log.append(f"{name}{i}")
            yield i

    async def astream() -> AsyncIterator[int]:
        for i in range(items):
            log.append(f"{name}{i}")
            yield i

    def create(**_: Any) -> Iterator[int]:
        log.append(f"{name} opens")
        return stream()

    async def acreate(**_: Any) -> AsyncIterator[int]:
        log.append(f"{name} opens")
        return astream()

    return SimpleNamespace(
        sync=SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create))),
        async_=SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=acreate))),
    )


class Keep:
    """Draws the ring a, b every round."""

    def shuffle(self, x: list[int]) -> None:
        pass


class Swap:
    """Draws the ring b, a every round."""

    def shuffle(self, x: list[int]) -> None:
        x.reverse()


# On the ring a, b, round 0 opens a then b and reads from a first; each step rotates the ring
# by one; a stream that has ended drops out (b, with one item fewer, ends at its third read).
_ROUND_0 = ["a opens", "b opens", "a0", "b0", "b1", "a1", "a2", "a3"]
# Round 1 starts the rotation one further: b opens and reads first.
_ROUND_1 = ["b opens", "a opens", "b0", "a0", "a1", "b1", "a2", "a3"]


def test_sync_rounds_read_one_item_of_each_stream_in_rotating_turns() -> None:
    log: list[str] = []
    a, b = _client("a", 4, log), _client("b", 2, log)
    contenders = [Contender("a", a.sync), Contender("b", b.sync)]
    out = run_sync(contenders, "chat", rounds=1, warmup=1, rng=Keep())
    assert log == _ROUND_0 + _ROUND_1
    assert {name: entry["items"] for name, entry in out.items()} == {"a": {4}, "b": {2}}
    assert [len(entry["times"]) for entry in out.values()] == [1, 1]  # the warm-up round untimed
    assert all(t > 0 for entry in out.values() for t in entry["times"])


def test_the_ring_drawn_for_a_round_sets_its_turns() -> None:
    log: list[str] = []
    a, b = _client("a", 4, log), _client("b", 2, log)
    run_sync([Contender("a", a.sync), Contender("b", b.sync)], "chat", rounds=1, warmup=0, rng=Swap())
    assert log == _ROUND_1  # the ring b, a at round 0 turns as a, b does at round 1


def test_async_rounds_read_in_the_same_turns() -> None:
    log: list[str] = []
    a, b = _client("a", 4, log), _client("b", 2, log)
    contenders = [Contender("a", a.async_), Contender("b", b.async_)]
    out = asyncio.run(run_async(contenders, "chat", rounds=1, warmup=1, rng=Keep()))
    assert log == _ROUND_0 + _ROUND_1
    assert {name: entry["items"] for name, entry in out.items()} == {"a": {4}, "b": {2}}


def _successions(rng: Any) -> set[tuple[str, str]]:
    """Which contender read right after which, within a step, over 12 rounds of 3 one-item streams."""
    log: list[str] = []
    contenders = [Contender(name, _client(name, 1, log).sync) for name in "abc"]
    run_sync(contenders, "chat", rounds=12, warmup=0, rng=rng)
    reads = [entry[0] for entry in log if not entry.endswith("opens")]
    steps = [reads[i : i + 3] for i in range(0, len(reads), 3)]  # one step of 3 reads per round
    return {pair for step in steps for pair in itertools.pairwise(step)}


def test_by_default_every_contender_reads_right_after_every_other_in_some_round() -> None:
    # One ring for every round gives each contender the same predecessor; a ring per round does not.
    assert _successions(Keep()) == {("a", "b"), ("b", "c"), ("c", "a")}
    assert _successions(None) == {(x, y) for x in "abc" for y in "abc" if x != y}


def test_a_contender_that_patches_the_process_is_refused() -> None:
    log: list[str] = []
    patching = Contender("floor", _client("f", 1, log).sync, before=lambda: None)
    with pytest.raises(ValueError, match="cannot run contenders that patch the process: floor"):
        run_sync([Contender("a", _client("a", 1, log).sync), patching], "chat", rounds=1, warmup=0)
    assert log == []


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    parsed: dict[str, Any] = run_json(
        "overhead.py",
        "--lockstep",
        f"--rounds={ROUNDS}",
        f"--warmup={WARMUP}",
        f"--chunks={CHUNKS}",
        timeout=300,
    )
    return parsed


def test_a_lockstep_run_reads_every_stream_whole_with_the_contenders_that_can_share_a_round(
    results: dict[str, Any],
) -> None:
    assert results["settings"]["lockstep"] is True
    for scenario in results["scenarios"]:
        contenders = scenario["contenders"]
        assert list(contenders) == ["raw", "control", "engine", "verified", "telemetry"]
        extra = {"chat": 3, "responses": 8}[scenario["api"]]
        for name, entry in contenders.items():
            assert entry["items"] == [CHUNKS + extra], name
            assert entry["requests"] == ROUNDS + WARMUP, name
            assert len(entry["times_us"]) == ROUNDS, name
        assert contenders["telemetry"]["spans_per_call"] == [2]
        assert contenders["telemetry"]["ok_calls"] == ROUNDS + WARMUP
        assert set(scenario["goals"]) == {"issue3_engine", "issue4_telemetry"}


def test_the_report_names_the_lockstep_rounds(results: dict[str, Any]) -> None:
    from _report import markdown

    assert (
        "contenders' streams read in lockstep, one item each in turn round a ring drawn per round"
        in markdown(results)
    )


def test_lockstep_refuses_a_chosen_contender_that_patches_the_process() -> None:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "overhead.py"),
        "--lockstep",
        "--contenders=engine,floor",
        "--rounds=1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert done.returncode == 2
    assert (
        "--lockstep: floor patch the process for their repetitions and cannot share a round item by "
        "item; choose among raw, control, engine, verified, telemetry"
    ) in done.stderr

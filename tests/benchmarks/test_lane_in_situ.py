"""benchmarks/lane_in_situ.py runs every variant and reports well-formed figures (never timings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _bench import run_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lane_in_situ import EXACT, VARIANTS, ZERO, markdown, probe_markdown, variant  # noqa: E402


def _run(*args: str) -> list[dict[str, Any]]:
    """lane_in_situ.py's JSON output for `args`."""
    parsed: list[dict[str, Any]] = run_json("lane_in_situ.py", *args, "--warmup=0", timeout=300)
    return parsed


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return _run("--rounds=2")


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
    message = "variant must be one of engine, floor, busy, none, quote, regex, backward, got 'x'"
    with pytest.raises(ValueError, match=message):
        variant("x")


def _reads() -> tuple[Any, list[bytes]]:
    """A padded chat Shape and reads around its content frames: near misses and random edits."""
    import random

    from _streams import chat_events

    from streamtap._chat import CHAT

    events = chat_events(3)
    read = events[2]
    shape = CHAT.shape(read)
    assert shape is not None and shape.padded
    text = b'"content":"'
    at = read.index(text) + len(text)
    word_end = read.index(b'"', at)
    pad = read.rindex(b'"', 0, len(read) - 4)
    reads = [
        *events,
        read + read,
        read + events[-1],
        read[:-1],
        read[:-2] + b"\r\n\r\n",
        read[:at] + read[word_end:],  # an empty text
        read[:at] + b'say \\"hi\\"' + read[word_end:],  # an escaped quote in the text
        read[:at] + b"\xc3\xa9t\xc3\xa9 \\n" + read[word_end:],
        read[: pad + 1] + b"a much longer padding than before" + read[-4:],
        read[: pad + 1] + read[-4:],  # an empty padding
        read[: pad + 1] + b'x"y' + read[-4:],  # a quote in the padding
        read[:at] + shape.tail + read[word_end:],  # the tail inside the text
        read.replace(b'"finish_reason":null', b'"finish_reason":"stop"'),
        read[:-4] + b'"},"usage":{}}\n\n',
    ]
    rng = random.Random(7)
    for n in range(3000):
        edited = bytearray(read)
        for _ in range(rng.randint(1, 3)):
            # Half of the reads are edited anywhere; the others in the text or the padding,
            # where most edits still fit.
            region = rng.choice(((at, word_end), (pad + 1, len(read) - 4)))
            where = rng.randrange(len(edited)) if n % 2 else rng.randrange(*region)
            byte = rng.choice(b'"}\\\n\rax,:')
            edit = rng.randrange(3)
            if edit == 0:
                edited[where] = byte
            elif edit == 1:
                edited.insert(where, byte)
            else:
                del edited[where]
        reads.append(bytes(edited))
    return shape, reads


@pytest.mark.parametrize("name", EXACT)
def test_the_exact_variants_answer_as_the_engine_does(name: str) -> None:
    from streamtap._dialect import Shape

    shape, reads = _reads()
    test = variant(name)
    answers = [Shape.fits(shape, read) for read in reads]
    assert 500 < sum(answers) < len(reads) - 500  # both answers are well represented
    assert [test(shape, read) for read in reads] == answers


# The lane opens at the third content read (the first commits, the second teaches the Shape):
# 498 content reads, then those after them: finish, usage and [DONE] (chat), or the four
# closing events (responses), shared in turns.
@pytest.mark.parametrize(("api", "reads"), [("chat", 498 + 3), ("responses", 498 + 4)])
def test_the_probe_times_every_variant_where_it_runs(api: str, reads: int) -> None:
    found = _run("--probe", f"--api={api}", "--streams=1")
    assert [r["variant"] for r in found] == [ZERO, *VARIANTS, *EXACT]
    assert sum(r["calls"] for r in found) == reads
    assert all(r["calls"] >= reads // len(found) - 1 for r in found)
    assert found[0]["in_situ_over_zero_ns"] == 0 == found[0]["tight_over_zero_ns"]
    rows = probe_markdown(found).splitlines()[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == [r["variant"] for r in found]


def test_the_cli_names_the_accepted_variants() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "lane_in_situ.py"), "--variants=zero"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 2
    assert "'zero' is not one of engine, floor, busy, none, quote, regex, backward" in done.stderr

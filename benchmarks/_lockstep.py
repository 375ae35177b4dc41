"""Rounds in lockstep: every contender's stream open at once, read one item each in turn.

The sequential rounds of overhead.py read one contender's whole stream (about 100 ms here),
then the next one's. The host's drifts (other tenants, the CPU's clock) move whole streams,
and so widen every paired interval: the A/A control's to ±3–4 µs per chunk, wider than the
goal it judges. In lockstep a round opens every contender's stream, then reads one item from
each in turn, and adds up each contender's time over its own calls only (the create, every
`next`, the one that ends the stream). Two contenders' sums then cover interleaved stretches
of the same ~100 ms, so a drift hits them alike.

The turns go round a ring, rotated by one at every step. Each round draws its ring at random
(seeded): with one fixed ring every contender would read right after the same one in every
step of every round, and a read costs less after the same code ran (the A/A control, always
right after the raw SDK, ran 0.4–0.9 µs per chunk faster than it) and more after different
code. A ring drawn per round spreads every predecessor over every contender.

What it changes: between two reads of one stream the other contenders' reads run, as in an
app that serves several streams at once, so each read finds the caches holding the others'
state. A contender that changes the process for its repetition (`patches_process`) cannot
run this way: its change would apply to the others too.

Both runners return what overhead.py's sequential ones do: per contender the µs of each
timed stream and the set of item counts its streams yielded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from _contenders import Contender, open_async, open_sync


class Shuffler(Protocol):
    """What draws each round's ring: `random.Random`, or a test's stand-in."""

    def shuffle(self, x: list[int]) -> None: ...


def _ring(count: int, rng: Shuffler) -> list[int]:
    ring = list(range(count))
    rng.shuffle(ring)
    return ring


def _rotated(items: list[int], step: int) -> list[int]:
    k = step % len(items)
    return items[k:] + items[:k]


def _check(contenders: Sequence[Contender]) -> None:
    patching = [c.name for c in contenders if c.patches_process]
    if patching:
        raise ValueError(
            f"lockstep rounds cannot run contenders that patch the process: {', '.join(patching)}"
        )


def _turns(ring: list[int], first_step: int, ended: set[int]) -> Iterator[int]:
    """Whose read is next: round `ring`, rotated by one each step, without those in `ended`.

    The caller adds a contender to `ended` when its stream ends; it leaves after that step.
    """
    live = ring
    step = first_step
    while live:
        yield from _rotated(live, step)
        live = [i for i in live if i not in ended]
        step += 1


def _finish(
    out: dict[str, Any], contenders: Sequence[Contender], spent: list[int], items: list[int], timed: bool
) -> None:
    for contender in contenders:
        contender.finish_repetition()
    if timed:
        for contender, ns, count in zip(contenders, spent, items, strict=True):
            out[contender.name]["times"].append(ns / 1000)
            out[contender.name]["items"].add(count)


def run_sync(
    contenders: Sequence[Contender], api: str, rounds: int, warmup: int, rng: Shuffler | None = None
) -> dict[str, Any]:
    """Time `rounds` lockstep rounds (after `warmup` untimed ones) of sync streams of `api`.

    `rng` draws each round's ring (default: `random.Random(0)`, so runs are repeatable).
    """
    _check(contenders)
    clock = time.perf_counter_ns
    out: dict[str, Any] = {c.name: {"times": [], "items": set()} for c in contenders}
    rng = rng if rng is not None else random.Random(0)
    for round_ in range(warmup + rounds):
        ring = _ring(len(contenders), rng)
        spent = [0] * len(contenders)
        items = [0] * len(contenders)
        readers: list[Any] = [None] * len(contenders)
        for i in _rotated(ring, round_):
            started = clock()
            readers[i] = iter(open_sync(contenders[i].client, api))
            spent[i] += clock() - started
        ended: set[int] = set()
        for i in _turns(ring, round_, ended):
            reader = readers[i]
            started = clock()
            try:
                next(reader)
            except StopIteration:
                ended.add(i)
            else:
                items[i] += 1
            spent[i] += clock() - started
        _finish(out, contenders, spent, items, round_ >= warmup)
    return out


async def run_async(
    contenders: Sequence[Contender], api: str, rounds: int, warmup: int, rng: Shuffler | None = None
) -> dict[str, Any]:
    """The async twin of run_sync (the contenders' clients built in the running loop)."""
    _check(contenders)
    clock = time.perf_counter_ns
    out: dict[str, Any] = {c.name: {"times": [], "items": set()} for c in contenders}
    rng = rng if rng is not None else random.Random(0)
    for round_ in range(warmup + rounds):
        ring = _ring(len(contenders), rng)
        spent = [0] * len(contenders)
        items = [0] * len(contenders)
        readers: list[Any] = [None] * len(contenders)
        for i in _rotated(ring, round_):
            started = clock()
            readers[i] = (await open_async(contenders[i].client, api)).__aiter__()
            spent[i] += clock() - started
        ended: set[int] = set()
        for i in _turns(ring, round_, ended):
            reader = readers[i]
            started = clock()
            try:
                await reader.__anext__()
            except StopAsyncIteration:
                ended.add(i)
            else:
                items[i] += 1
            spent[i] += clock() - started
        _finish(out, contenders, spent, items, round_ >= warmup)
    return out

"""Rounds in lockstep: every contender's stream open at once, read one item each in turn.

The sequential rounds of overhead.py read one contender's whole stream (about 100 ms here),
then the next one's. The host's drifts (other tenants, the CPU's clock) move whole streams,
and so widen every paired interval: the A/A control's to ±3–4 µs per chunk, wider than the
goal it judges. In lockstep a round opens every contender's stream, then reads one item from
each in turn, in an order that rotates item by item, and adds up each contender's time over
its own calls only (the create, every `next`, the one that ends the stream). Two contenders'
sums then cover interleaved stretches of the same ~100 ms, so a drift hits them alike.

What it changes: between two reads of one stream the other contenders' reads run, as in an
app that serves several streams at once, so each read finds the caches holding the others'
state. A contender that changes the process for its repetition (`patches_process`) cannot
run this way: its change would apply to the others too.

Both runners return what overhead.py's sequential ones do: per contender the µs of each
timed stream and the set of item counts its streams yielded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from _contenders import Contender, open_async, open_sync


def _rotated(items: list[int], step: int) -> list[int]:
    k = step % len(items)
    return items[k:] + items[:k]


def _check(contenders: Sequence[Contender]) -> None:
    patching = [c.name for c in contenders if c.patches_process]
    if patching:
        raise ValueError(
            f"lockstep rounds cannot run contenders that patch the process: {', '.join(patching)}"
        )


def _record(out: dict[str, Any], contenders: Sequence[Contender], spent: list[int], items: list[int]) -> None:
    for contender, ns, count in zip(contenders, spent, items, strict=True):
        out[contender.name]["times"].append(ns / 1000)
        out[contender.name]["items"].add(count)


def run_sync(contenders: Sequence[Contender], api: str, rounds: int, warmup: int) -> dict[str, Any]:
    """Time `rounds` lockstep rounds (after `warmup` untimed ones) of sync streams of `api`."""
    _check(contenders)
    clock = time.perf_counter_ns
    out: dict[str, Any] = {c.name: {"times": [], "items": set()} for c in contenders}
    everyone = list(range(len(contenders)))
    for round_ in range(warmup + rounds):
        spent = [0] * len(contenders)
        items = [0] * len(contenders)
        readers: list[Any] = [None] * len(contenders)
        for i in _rotated(everyone, round_):
            started = clock()
            readers[i] = iter(open_sync(contenders[i].client, api))
            spent[i] += clock() - started
        live = list(everyone)
        step = round_
        while live:
            ended = []
            for i in _rotated(live, step):
                reader = readers[i]
                started = clock()
                try:
                    next(reader)
                except StopIteration:
                    ended.append(i)
                else:
                    items[i] += 1
                spent[i] += clock() - started
            live = [i for i in live if i not in ended]
            step += 1
        for contender in contenders:
            contender.finish_repetition()
        if round_ >= warmup:
            _record(out, contenders, spent, items)
    return out


async def run_async(contenders: Sequence[Contender], api: str, rounds: int, warmup: int) -> dict[str, Any]:
    """The async twin of run_sync (the contenders' clients built in the running loop)."""
    _check(contenders)
    clock = time.perf_counter_ns
    out: dict[str, Any] = {c.name: {"times": [], "items": set()} for c in contenders}
    everyone = list(range(len(contenders)))
    for round_ in range(warmup + rounds):
        spent = [0] * len(contenders)
        items = [0] * len(contenders)
        readers: list[Any] = [None] * len(contenders)
        for i in _rotated(everyone, round_):
            started = clock()
            readers[i] = (await open_async(contenders[i].client, api)).__aiter__()
            spent[i] += clock() - started
        live = list(everyone)
        step = round_
        while live:
            ended = []
            for i in _rotated(live, step):
                reader = readers[i]
                started = clock()
                try:
                    await reader.__anext__()
                except StopAsyncIteration:
                    ended.append(i)
                else:
                    items[i] += 1
                spent[i] += clock() - started
            live = [i for i in live if i not in ended]
            step += 1
        for contender in contenders:
            contender.finish_repetition()
        if round_ >= warmup:
            _record(out, contenders, spent, items)
    return out

"""Summaries of interleaved timings: medians, minimums, spread, and paired differences."""

from __future__ import annotations

import random
import statistics
from typing import Any


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(times_us: list[float]) -> dict[str, float]:
    """Median, minimum, quartiles and maximum of one contender's µs-per-stream times."""
    return {
        "median": statistics.median(times_us),
        "min": min(times_us),
        "p25": quantile(times_us, 0.25),
        "p75": quantile(times_us, 0.75),
        "max": max(times_us),
    }


def median_ci(values: list[float], seed: int = 1, resamples: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval for the median of `values` (seeded, so reruns agree)."""
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def against(times: list[float], raw: list[float], chunks: int) -> dict[str, Any]:
    """How `times` compare with `raw`, timed in the same rounds (times[i] beside raw[i]).

    `added_us_per_chunk` and `ratio` compare the two medians; `paired_*` is the median of the
    per-round differences, which cancels the slow drifts of a noisy machine, with a 95%
    bootstrap interval; `min_ratio` compares the best runs.
    """
    paired = [t - r for t, r in zip(times, raw, strict=True)]
    low, high = median_ci(paired)
    median, median_raw = statistics.median(times), statistics.median(raw)
    return {
        "added_us_per_stream": median - median_raw,
        "added_us_per_chunk": (median - median_raw) / chunks,
        "ratio": median / median_raw,
        "min_ratio": min(times) / min(raw),
        "paired_us_per_chunk": statistics.median(paired) / chunks,
        "paired_ci95_us_per_chunk": [low / chunks, high / chunks],
    }

"""The demo's story: which faults the fake upstream injects when, as a pure function of duration.

The story is written in fractions of the run, so `--duration 60` tells the same story as the
default four minutes, only faster. Each phase lists (probability, fault spec) pairs; the fake
upstream draws them in order (first match wins) on top of a little steady noise that streamtap's
retries hide.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..fake import Incident

DEFAULT_DURATION = 240.0
MIN_DURATION = 20.0
PRIMARY_MODEL = "gpt-4o"
FALLBACK_MODEL = "gpt-4o-mini"

# Background noise during the whole run: rare enough that the retries hide all of it.
NOISE: tuple[tuple[float, str], ...] = (
    (0.01, "status=429;retry_after_ms=50"),
    (0.01, "drop_after=0"),
)


@dataclass(frozen=True)
class StoryPhase:
    """One chapter of the story.

    Args:
        key: a short identifier, e.g. "error_spike".
        title: what happens, for the live view and the log.
        watch: what the user should watch while it happens.
        start_s: seconds after the fake upstream started (inclusive).
        end_s: end of the phase (exclusive).
        faults: (probability, fault spec) pairs injected during the phase, in draw order.
    """

    key: str
    title: str
    watch: str
    start_s: float
    end_s: float
    faults: tuple[tuple[float, str], ...] = ()


# (key, title, watch, start fraction, end fraction, faults)
_CHAPTERS: tuple[tuple[str, str, str, float, float, tuple[tuple[float, str], ...]], ...] = (
    (
        "steady",
        "Steady traffic",
        "the baseline: ~1% of attempts fail and the retries hide every one of them",
        0.0,
        0.2,
        (),
    ),
    (
        "error_spike",
        "Error-rate spike: 60% of requests get 503",
        "retries, the retry budget running out, the breaker, the model fallback; "
        "StreamtapErrorRateSpike pages",
        0.2,
        0.4,
        ((0.6, "status=503"),),
    ),
    (
        "calm_1",
        "Calm again",
        "the error ratio falls back; the spike alerts keep firing a while (keep_firing_for), then resolve",
        0.4,
        0.45,
        (),
    ),
    (
        "rate_limit_storm",
        "Rate-limit storm: 40% of requests get 429 with retry-after",
        "retries by reason rate_limited, the waits they add to time to first token",
        0.45,
        0.62,
        ((0.4, "status=429;retry_after=1"),),
    ),
    ("calm_2", "Calm again", "rate-limit retries stop", 0.62, 0.67, ()),
    (
        "stalls_and_drops",
        "Stalls and mid-stream drops",
        "slow first tokens, first-token timeouts retried invisibly, stalls and drops after the "
        "first token raised to callers as typed errors",
        0.67,
        0.85,
        (
            (0.25, "stall_first=1.2"),
            (0.08, "stall_first=5"),
            (0.06, "stall_after=3;stall=5"),
            (0.06, "drop_after=4"),
            (0.04, "truncate_after=3"),
            (0.04, "drop_after=0"),
        ),
    ),
    ("recovery", "Recovery", "every ratio back to baseline; the last alerts resolve", 0.85, 1.0, ()),
)


def check_duration(duration: float) -> float:
    """Validate a story duration in seconds.

    Args:
        duration: seconds; at least MIN_DURATION.
    """
    if not duration >= MIN_DURATION or duration == float("inf"):
        raise ValueError(f"duration must be a finite number of seconds >= {MIN_DURATION:g}, got {duration!r}")
    return float(duration)


def story(duration: float = DEFAULT_DURATION) -> tuple[StoryPhase, ...]:
    """The phases of a run of `duration` seconds, back to back from 0 to `duration`.

    Args:
        duration: seconds (>= MIN_DURATION); the default tells the story in four minutes.
    """
    duration = check_duration(duration)
    return tuple(
        StoryPhase(key, title, watch, round(start * duration, 3), round(end * duration, 3), faults)
        for key, title, watch, start, end, faults in _CHAPTERS
    )


def steady_story(duration: float) -> tuple[StoryPhase, ...]:
    """The single phase of a run against an external upstream, where nothing is injected.

    Args:
        duration: seconds (>= MIN_DURATION).
    """
    duration = check_duration(duration)
    watch = "the live numbers of your upstream; no faults are injected"
    return (StoryPhase("steady", "Steady traffic to an external upstream", watch, 0.0, duration),)


def incidents(
    phases: tuple[StoryPhase, ...], noise: tuple[tuple[float, str], ...] = NOISE
) -> tuple[Incident, ...]:
    """The fake upstream's incident windows for `phases`, phase faults before the noise.

    Args:
        phases: the story, e.g. `story(240)`.
        noise: always-on (probability, spec) pairs drawn after the phase faults.
    """
    windows = [Incident(p.start_s, p.end_s, prob, spec) for p in phases for prob, spec in p.faults]
    return (*windows, *(Incident.always(prob, spec) for prob, spec in noise))


def phase_at(phases: tuple[StoryPhase, ...], elapsed_s: float) -> StoryPhase:
    """The phase covering `elapsed_s`; the first before the start, the last after the end.

    Args:
        phases: the story.
        elapsed_s: seconds since the fake upstream started.
    """
    for phase in phases:
        if elapsed_s < phase.end_s:
            return phase
    return phases[-1]


def compression_for(duration: float) -> float:
    """How much to compress the alert rules' time so they fire within a run of `duration`.

    60× (1h -> 1m; a 5 s spike window, a 1 s evaluation interval) for the default four minutes
    and anything shorter: Prometheus scrapes every second, and shorter windows would hold too
    few samples for a rate. Longer runs compress less, so windows keep their share of a phase.

    Args:
        duration: the run's seconds.
    """
    return round(min(60.0, 60.0 * DEFAULT_DURATION / check_duration(duration)), 3)

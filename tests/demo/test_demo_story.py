"""The demo's story: phase boundaries scale with the duration, incidents follow the phases."""

from __future__ import annotations

import pytest

from streamtap.demo._story import (
    NOISE,
    StoryPhase,
    compression_for,
    incidents,
    phase_at,
    steady_story,
    story,
)
from streamtap.fake import Incident


def test_default_story_takes_four_minutes() -> None:
    phases = story()
    assert [(p.key, p.start_s, p.end_s) for p in phases] == [
        ("steady", 0.0, 48.0),
        ("error_spike", 48.0, 96.0),
        ("calm_1", 96.0, 108.0),
        ("rate_limit_storm", 108.0, 148.8),
        ("calm_2", 148.8, 160.8),
        ("stalls_and_drops", 160.8, 204.0),
        ("recovery", 204.0, 240.0),
    ]


def test_duration_compresses_the_story_proportionally() -> None:
    short = story(20)
    assert [(p.start_s, p.end_s) for p in short] == [
        (0.0, 4.0),
        (4.0, 8.0),
        (8.0, 9.0),
        (9.0, 12.4),
        (12.4, 13.4),
        (13.4, 17.0),
        (17.0, 20.0),
    ]
    assert [p.faults for p in short] == [p.faults for p in story(240)]


def test_phase_faults() -> None:
    faults = {p.key: p.faults for p in story(100)}
    assert faults["steady"] == ()
    assert faults["error_spike"] == ((0.6, "status=503"),)
    assert faults["rate_limit_storm"] == ((0.4, "status=429;retry_after=1"),)
    assert faults["stalls_and_drops"] == (
        (0.25, "stall_first=1.2"),
        (0.08, "stall_first=5"),
        (0.06, "stall_after=3;stall=5"),
        (0.06, "drop_after=4"),
        (0.04, "truncate_after=3"),
        (0.04, "drop_after=0"),
    )
    assert faults["recovery"] == ()


@pytest.mark.parametrize("duration", [19.9, 0, -5, float("nan"), float("inf")])
def test_too_short_or_bad_durations_are_refused(duration: float) -> None:
    with pytest.raises(ValueError, match=r"duration must be a finite number of seconds >= 20, got "):
        story(duration)


def test_incidents_put_phase_faults_before_the_noise() -> None:
    phases = (
        StoryPhase("a", "A", "", 0.0, 10.0),
        StoryPhase("b", "B", "", 10.0, 30.0, ((0.5, "status=503"), (0.1, "reset"))),
    )
    assert incidents(phases) == (
        Incident(10.0, 30.0, 0.5, "status=503"),
        Incident(10.0, 30.0, 0.1, "reset"),
        Incident(0.0, None, 0.01, "status=429;retry_after_ms=50"),
        Incident(0.0, None, 0.01, "drop_after=0"),
    )
    assert incidents(phases, noise=()) == incidents(phases)[:2]
    assert len(NOISE) == 2


def test_every_story_fault_is_a_valid_incident() -> None:
    made = incidents(story(240))
    assert len(made) == 1 + 1 + 6 + len(NOISE)
    assert made[0] == Incident(48.0, 96.0, 0.6, "status=503")


def test_phase_at_boundaries() -> None:
    phases = story(20)
    assert phase_at(phases, -1).key == "steady"
    assert phase_at(phases, 0).key == "steady"
    assert phase_at(phases, 3.999).key == "steady"
    assert phase_at(phases, 4.0).key == "error_spike"
    assert phase_at(phases, 19.99).key == "recovery"
    assert phase_at(phases, 25).key == "recovery"


def test_steady_story_is_one_phase_without_faults() -> None:
    (phase,) = steady_story(30)
    assert (phase.key, phase.start_s, phase.end_s, phase.faults) == ("steady", 0.0, 30.0, ())


@pytest.mark.parametrize(
    ("duration", "factor"), [(20, 60.0), (60, 60.0), (240, 60.0), (480, 30.0), (600, 24.0), (700, 20.571)]
)
def test_compression_follows_the_duration(duration: float, factor: float) -> None:
    assert compression_for(duration) == factor

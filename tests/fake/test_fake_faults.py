"""Fault spec grammar, incidents and selection order (pure: injected clock, seeded RNG)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streamtap.fake import FaultSpec, Incident, parse_fault, parse_incident
from streamtap.fake._faults import CLEAN, DEFAULT_STALL_S
from streamtap.fake._select import FaultSelector


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("", CLEAN, id="empty"),
        pytest.param(" ; ", CLEAN, id="blank-items"),
        pytest.param(
            "status=429;retry_after=2;retry_after_ms=1500;retry_after_date=30",
            FaultSpec(status=429, retry_after=2.0, retry_after_ms=1500, retry_after_date=30.0),
            id="429-retry-after",
        ),
        pytest.param(
            "status=503;should_retry=false", FaultSpec(status=503, should_retry=False), id="503-no-retry"
        ),
        pytest.param("reset", FaultSpec(reset=True), id="reset"),
        pytest.param("drop_after=3", FaultSpec(drop_after=3), id="drop"),
        pytest.param("truncate_after=0", FaultSpec(truncate_after=0), id="truncate"),
        pytest.param("stall_first", FaultSpec(stall_first=DEFAULT_STALL_S), id="stall-first-default"),
        pytest.param("stall_first=0.5", FaultSpec(stall_first=0.5), id="stall-first"),
        pytest.param(
            "stall_after=2", FaultSpec(stall_after=2, stall=DEFAULT_STALL_S), id="stall-after-default"
        ),
        pytest.param("stall_after=2;stall=0.1", FaultSpec(stall_after=2, stall=0.1), id="stall-after"),
        pytest.param(
            "error_after=1;error_kind=failed;error_code=rate_limit_exceeded",
            FaultSpec(error_after=1, error_kind="failed", error_code="rate_limit_exceeded"),
            id="error-failed",
        ),
        pytest.param(
            "malformed_after=4;keepalive=3", FaultSpec(malformed_after=4, keepalive=3), id="malformed+ka"
        ),
        pytest.param("garbled_after=2", FaultSpec(garbled_after=2), id="garbled"),
        pytest.param(
            "status=500;times=2;model=gpt-4o", FaultSpec(status=500, times=2, model="gpt-4o"), id="filters"
        ),
        pytest.param(" STATUS = 502 ", FaultSpec(status=502), id="case-and-blanks"),
    ],
)
def test_parse_fault_values(spec: str, expected: FaultSpec) -> None:
    # `text` is checked separately; the key set does not take part in equality.
    assert replace(parse_fault(spec), text="") == expected


def test_parse_fault_normalises_text() -> None:
    assert parse_fault(" status=429 ; retry_after=1 ").text == "status=429;retry_after=1"
    assert parse_fault("stall_first").text == "stall_first"
    assert parse_fault("").text == ""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("bogus=1", "unknown key 'bogus'; accepted keys: status, retry_after", id="unknown-key"),
        pytest.param(
            "status=418",
            "invalid status='418'; accepted: 400|401|403|404|409|422|429|500|502|503|504",
            id="418",
        ),
        pytest.param("status", "key 'status' needs a value", id="bare-status"),
        pytest.param("drop_after=-1", "invalid drop_after='-1'; accepted: an integer >= 0", id="negative"),
        pytest.param("drop_after=x", "invalid drop_after='x'; accepted: an integer >= 0", id="not-int"),
        pytest.param(
            "stall_first=nan",
            "invalid stall_first='nan'; accepted: a finite number of seconds >= 0",
            id="nan",
        ),
        pytest.param(
            "stall_first=inf",
            "invalid stall_first='inf'; accepted: a finite number of seconds >= 0",
            id="inf",
        ),
        pytest.param(
            "status=abc",
            "invalid status='abc'; accepted: 400|401|403|404|409|422|429|500|502|503|504",
            id="status-not-a-number",
        ),
        pytest.param("times=0", "invalid times='0'; accepted: an integer >= 1", id="times-zero"),
        pytest.param(
            "status=500;should_retry=maybe", "invalid should_retry='maybe'; accepted: true|false", id="bool"
        ),
        pytest.param(
            "error_after=1;error_kind=boom",
            "invalid error_kind='boom'; accepted: event|failed|bare",
            id="kind",
        ),
        pytest.param("status=500;reset", "status and reset cannot be combined", id="two-terminal"),
        pytest.param(
            "drop_after=1;error_after=2", "drop_after and error_after cannot be combined", id="drop+error"
        ),
        pytest.param("retry_after=1", "retry_after needs status in the same spec", id="orphan-retry-after"),
        pytest.param("stall=1", "stall needs stall_after in the same spec", id="orphan-stall"),
        pytest.param("error_kind=failed", "error_kind needs error_after in the same spec", id="orphan-kind"),
        pytest.param("reset;reset", "key 'reset' given twice", id="duplicate"),
        pytest.param("model=", "invalid model=''; accepted: a non-empty name", id="empty-model"),
    ],
)
def test_parse_fault_errors_name_key_and_accepted_values(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="fault spec") as excinfo:
        parse_fault(spec)
    assert message in str(excinfo.value)


def test_is_clean_and_model_filter() -> None:
    assert parse_fault("").is_clean
    assert parse_fault("times=3;model=m").is_clean
    assert not parse_fault("keepalive=1").is_clean
    assert parse_fault("reset;model=a").applies_to("a")
    assert not parse_fault("reset;model=a").applies_to("b")
    assert parse_fault("reset").applies_to(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("120-240:0.4:status=503", Incident(120.0, 240.0, 0.4, "status=503"), id="window"),
        pytest.param("60-:25%:reset", Incident(60.0, None, 0.25, "reset"), id="open-end-percent"),
        pytest.param("*:0.02:drop_after=3", Incident(0.0, None, 0.02, "drop_after=3"), id="always"),
    ],
)
def test_parse_incident(text: str, expected: Incident) -> None:
    assert parse_incident(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("120-240", "expected WINDOW:PROBABILITY:SPEC", id="missing-parts"),
        pytest.param("a-b:1:reset", "window 'a-b'; accepted: START-END, START- or *", id="window"),
        pytest.param("10:1:reset", "window '10'; accepted: START-END, START- or *", id="no-dash"),
        pytest.param("0-1:x:reset", "probability 'x'; accepted: 0..1 or 0%..100%", id="probability"),
        pytest.param(
            "0-1:1.5:reset", "probability=1.5; accepted: 0..1 (or 0%..100%)", id="probability-range"
        ),
        pytest.param(
            "5-1:1:reset", "window '5-1' ends before it starts; END must be over START", id="end-before-start"
        ),
        pytest.param("0-10:0.5:", "an empty SPEC; expected WINDOW:PROBABILITY:SPEC", id="empty-spec"),
        pytest.param("0-1:1:nope", "unknown key 'nope'", id="spec"),
        pytest.param("0-1:1:reset;times=2", "times is only accepted in headers and queues", id="times"),
    ],
)
def test_parse_incident_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"incident|fault spec") as excinfo:
        parse_incident(text)
    assert message in str(excinfo.value)


def test_header_beats_queue_beats_incident() -> None:
    selector = FaultSelector([Incident.always(1.0, "status=503")], clock=FakeClock())
    selector.enqueue("status=429", "")
    header = selector.select("reset", "m")
    assert (header.fault.text, header.source) == ("reset", "header")
    assert selector.queued == 2  # a header match does not consume the queue
    assert [(s.fault.text, s.source) for s in (selector.select(None, "m") for _ in range(3))] == [
        ("status=429", "queue"),
        ("", "queue"),
        ("status=503", "incident"),
    ]


def test_times_counts_per_exact_header_value() -> None:
    selector = FaultSelector()
    spec = "status=429;times=2"
    got = [selector.select(spec, "m").fault.status for _ in range(3)]
    assert got == [429, 429, None]
    # A different header value has its own budget.
    assert selector.select("status=429;times=1", "m").fault.status == 429
    selector.clear()
    assert selector.select(spec, "m").fault.status == 429


def test_queued_times_serves_n_requests() -> None:
    selector = FaultSelector()
    selector.enqueue("status=503;times=2", "reset")
    got = [selector.select(None, "m").fault.text for _ in range(4)]
    assert got == ["status=503;times=2", "status=503;times=2", "reset", ""]


def test_model_filter_falls_through() -> None:
    selector = FaultSelector()
    selector.enqueue("status=503;model=big")
    assert selector.select("reset;model=big", "small") == selector.select(None, "small")
    assert selector.queued == 1  # the head only serves its model
    assert selector.select(None, "big").fault.status == 503
    assert selector.queued == 0


def test_enqueue_validates_everything_first() -> None:
    selector = FaultSelector()
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        selector.enqueue("reset", "nope=1")
    assert selector.queued == 0


def test_non_generation_requests_only_take_header_faults() -> None:
    selector = FaultSelector([Incident.always(1.0, "status=503")])
    selector.enqueue("reset")
    assert selector.select(None, None, generation=False).fault == CLEAN
    assert selector.select("status=404", None, generation=False).fault.status == 404
    assert selector.queued == 1


def test_incident_windows_follow_the_clock() -> None:
    clock = FakeClock()
    selector = FaultSelector([Incident(10.0, 20.0, 1.0, "status=503")], clock=clock)
    statuses = []
    for elapsed in (0.0, 9.99, 10.0, 19.99, 20.0):
        clock.now = 100.0 + elapsed
        statuses.append(selector.select(None, "m").fault.status)
    assert statuses == [None, None, 503, 503, None]


def test_incidents_are_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[int | None]:
        selector = FaultSelector([Incident.always(0.5, "status=503")], seed=seed, clock=FakeClock())
        return [selector.select(None, "m").fault.status for _ in range(40)]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert 5 < first.count(503) < 35

"""Backoff with full jitter, Retry-After / retry-after-ms, x-should-retry."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import pytest

from streamtap._backoff import (
    backoff_delay,
    exceeds_max_retry_after,
    retry_delay,
    server_delay,
    should_retry_override,
)
from streamtap._policy import Policy

# 2015-10-21T07:28:00Z, the RFC 7231 example date.
DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
DATE_EPOCH = 1445412480.0


def scripted(*values: float) -> Callable[[], float]:
    """An rng that returns `values` in order and fails loudly if asked once too often."""
    it: Iterator[float] = iter(values)
    return lambda: next(it)


def test_backoff_sequence_near_top_of_jitter() -> None:
    policy = Policy()  # base 0.5, cap 8
    delays = [backoff_delay(policy, i, lambda: 0.999) for i in range(7)]
    assert delays == pytest.approx([0.4995, 0.999, 1.998, 3.996, 7.992, 7.992, 7.992], abs=1e-12)


def test_backoff_ceiling_is_exact_with_rng_one() -> None:
    policy = Policy(backoff_base=0.25, backoff_cap=3.0)
    assert [backoff_delay(policy, i, lambda: 1.0) for i in range(6)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_zero_rng_gives_zero() -> None:
    assert backoff_delay(Policy(), 3, lambda: 0.0) == 0.0


def test_backoff_scales_rng() -> None:
    rng = scripted(0.5, 0.25, 0.75)
    policy = Policy(backoff_base=1.0, backoff_cap=100.0)
    assert [backoff_delay(policy, i, rng) for i in range(3)] == [0.5, 0.5, 3.0]


def test_backoff_huge_index_stays_at_cap() -> None:
    assert backoff_delay(Policy(), 10_000, lambda: 0.5) == 4.0


@pytest.mark.parametrize("index", [-1, 1.0, True])
def test_backoff_rejects_bad_index(index: object) -> None:
    with pytest.raises(ValueError, match=r"^retry_index must be an integer >= 0, got "):
        backoff_delay(Policy(), index, lambda: 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan])
def test_backoff_rejects_bad_rng(value: float) -> None:
    with pytest.raises(ValueError, match=r"^rng\(\) must return a number in \[0, 1\], got "):
        backoff_delay(Policy(), 0, lambda: value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "5"}, 5.0, id="seconds"),
        pytest.param({"retry-after": " 2 "}, 2.0, id="seconds-spaces"),
        pytest.param({"retry-after": "1.5"}, 1.5, id="fractional"),
        pytest.param({"retry-after": ".25"}, 0.25, id="leading-dot"),
        pytest.param({"retry-after": "0"}, 0.0, id="zero"),
        pytest.param({"retry-after": "2e0"}, 2.0, id="exponent"),  # as float() and so the SDK read it
        pytest.param({"retry-after-ms": "1.5E3"}, 1.5, id="ms-exponent"),
        pytest.param({"retry-after": "-3"}, 0.0, id="negative"),
        pytest.param({"Retry-After": "7"}, 7.0, id="mixed-case-name"),
        pytest.param({"RETRY-AFTER": "7"}, 7.0, id="upper-case-name"),
        pytest.param({"retry-after-ms": "250"}, 0.25, id="ms"),
        pytest.param({"retry-after-ms": "1500.5"}, 1.5005, id="ms-fractional"),
        pytest.param({"Retry-After-Ms": "-10"}, 0.0, id="ms-negative"),
        pytest.param({"retry-after-ms": "100", "retry-after": "9"}, 0.1, id="ms-wins"),
        pytest.param({"retry-after-ms": "soon", "retry-after": "9"}, 9.0, id="bad-ms-falls-back"),
        pytest.param({"retry-after": DATE}, 30.0, id="date-future"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0, id="date-past"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 09:28:10 +0200"}, 40.0, id="date-offset"),
        pytest.param({"retry-after": "Wednesday, 21-Oct-15 07:28:05 GMT"}, 35.0, id="date-rfc850"),
        pytest.param({"retry-after": "Wed Oct 21 07:28:20 2015"}, 50.0, id="date-asctime"),
        pytest.param({"retry-after": "soon"}, None, id="garbage"),
        pytest.param({"retry-after": ""}, None, id="empty"),
        pytest.param({"retry-after": "nan"}, None, id="nan"),
        pytest.param({"retry-after": "inf"}, None, id="inf-word"),
        pytest.param({"retry-after": "1_000"}, None, id="underscore"),
        pytest.param({"retry-after": "5s"}, None, id="unit-suffix"),
        pytest.param({"retry-after": "5, 5"}, None, id="repeated-header"),
        pytest.param({"retry-after-ms": "x"}, None, id="only-bad-ms"),
        pytest.param({}, None, id="absent"),
        pytest.param({"x-other": "1"}, None, id="other-headers"),
    ],
)
def test_server_delay(headers: Mapping[str, str], expected: float | None) -> None:
    now = DATE_EPOCH - 30.0
    if expected is None:
        assert server_delay(headers, now) is None
    else:
        assert server_delay(headers, now) == pytest.approx(expected, abs=1e-9)


def test_server_delay_absurd_number_is_inf() -> None:
    assert server_delay({"retry-after": "9" * 400}, 0.0) == math.inf


def test_server_delay_with_httpx2_headers() -> None:
    httpx2 = pytest.importorskip("httpx2")
    headers = httpx2.Headers([("Retry-After-Ms", "1200")])
    assert server_delay(headers, 0.0) == 1.2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"x-should-retry": "true"}, True, id="true"),
        pytest.param({"x-should-retry": "false"}, False, id="false"),
        pytest.param({"X-Should-Retry": " TRUE "}, True, id="case-and-spaces"),
        pytest.param({"x-should-retry": "yes"}, None, id="other-value"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_should_retry_override(headers: Mapping[str, str], expected: bool | None) -> None:
    assert should_retry_override(headers) is expected


def test_retry_delay_takes_the_larger() -> None:
    policy = Policy()  # index 2: ceiling 2.0
    assert retry_delay(policy, 2, {}, 0.0, lambda: 0.5) == 1.0
    assert retry_delay(policy, 2, {"retry-after": "0.5"}, 0.0, lambda: 0.5) == 1.0
    assert retry_delay(policy, 2, {"retry-after": "3"}, 0.0, lambda: 0.5) == 3.0
    assert retry_delay(policy, 2, {"retry-after": "garbage"}, 0.0, lambda: 0.5) == 1.0
    assert retry_delay(policy, 0, {"retry-after": DATE}, DATE_EPOCH - 12.0, lambda: 0.999) == 12.0


def test_retry_delay_calls_rng_exactly_once() -> None:
    calls: list[int] = []

    def rng() -> float:
        calls.append(1)
        return 0.5

    retry_delay(Policy(), 0, {"retry-after": "10"}, 0.0, rng)
    assert calls == [1]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, False, id="absent"),
        pytest.param({"retry-after": "60"}, False, id="equal"),
        pytest.param({"retry-after": "60.5"}, True, id="longer"),
        pytest.param({"retry-after-ms": "61000"}, True, id="ms-longer"),
        pytest.param({"retry-after": "9" * 400}, True, id="inf"),
        pytest.param({"retry-after": "1e5"}, True, id="exponent"),
        pytest.param({"retry-after-ms": "1e309"}, True, id="ms-exponent-inf"),
        pytest.param({"retry-after": "garbage"}, False, id="garbage"),
    ],
)
def test_exceeds_max_retry_after(headers: Mapping[str, str], expected: bool) -> None:
    assert exceeds_max_retry_after(Policy(max_retry_after=60), headers, 0.0) is expected

"""Policy settings: defaults, strict validation with clear messages, from_mapping."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from streamtap._policy import BreakerSettings, BudgetSettings, Policy

NAN = math.nan
INF = math.inf


def test_defaults() -> None:
    policy = Policy()
    assert dataclasses.asdict(policy) == {
        "max_attempts": 4,
        "backoff_base": 0.5,
        "backoff_cap": 8.0,
        "max_retry_wait": 30.0,
        "max_retry_after": 60.0,
        "first_token_timeout": 30.0,
        "idle_timeout": 60.0,
        "connect_timeout": 10.0,
        "total_timeout": None,
        "budget": {"ratio": 0.2, "min_per_second": 1.0, "ttl": 10.0, "enabled": True},
        "breaker": {
            "window": 30.0,
            "min_requests": 20,
            "failure_ratio": 0.5,
            "open_for": 15.0,
            "half_open_probes": 1,
            "enabled": True,
        },
    }


def test_ints_are_normalised_to_float() -> None:
    policy = Policy(backoff_base=1, backoff_cap=2, total_timeout=5)
    assert (type(policy.backoff_base), policy.backoff_base) == (float, 1.0)
    assert (type(policy.backoff_cap), policy.backoff_cap) == (float, 2.0)
    assert (type(policy.total_timeout), policy.total_timeout) == (float, 5.0)


def test_accepted_edge_values() -> None:
    policy = Policy(
        max_attempts=1,
        backoff_base=2.0,
        backoff_cap=2.0,
        max_retry_wait=0,
        max_retry_after=INF,
        first_token_timeout=None,
        idle_timeout=None,
    )
    assert (policy.max_attempts, policy.backoff_cap, policy.max_retry_wait) == (1, 2.0, 0.0)
    assert policy.max_retry_after == INF
    assert Policy(max_retry_wait=INF).max_retry_wait == INF
    assert BudgetSettings(ratio=0, min_per_second=0).ratio == 0.0
    assert BreakerSettings(failure_ratio=1, min_requests=1).failure_ratio == 1.0


POLICY_ERRORS = [
    ("max_attempts", 0, "Policy.max_attempts must be an integer >= 1, got 0"),
    ("max_attempts", True, "Policy.max_attempts must be an integer >= 1, got True"),
    ("max_attempts", 2.0, "Policy.max_attempts must be an integer >= 1, got 2.0"),
    ("max_attempts", "3", "Policy.max_attempts must be an integer >= 1, got '3'"),
    ("backoff_base", 0, "Policy.backoff_base must be a number > 0 and finite, got 0"),
    ("backoff_base", -1.0, "Policy.backoff_base must be a number > 0 and finite, got -1.0"),
    ("backoff_base", NAN, "Policy.backoff_base must be a number > 0 and finite, got nan"),
    ("backoff_base", INF, "Policy.backoff_base must be a number > 0 and finite, got inf"),
    ("backoff_base", False, "Policy.backoff_base must be a number > 0 and finite, got False"),
    ("backoff_cap", 0.25, "Policy.backoff_cap must be a number >= 0.5 (backoff_base) and finite, got 0.25"),
    ("backoff_cap", INF, "Policy.backoff_cap must be a number >= 0.5 (backoff_base) and finite, got inf"),
    ("max_retry_wait", -0.1, "Policy.max_retry_wait must be a number >= 0 (inf allowed), got -0.1"),
    ("max_retry_wait", NAN, "Policy.max_retry_wait must be a number >= 0 (inf allowed), got nan"),
    ("max_retry_wait", None, "Policy.max_retry_wait must be a number >= 0 (inf allowed), got None"),
    ("max_retry_after", 0, "Policy.max_retry_after must be a number > 0 (inf allowed), got 0"),
    ("max_retry_after", "60", "Policy.max_retry_after must be a number > 0 (inf allowed), got '60'"),
    (
        "first_token_timeout",
        0,
        "Policy.first_token_timeout must be a number > 0 and finite, or None for off, got 0",
    ),
    (
        "first_token_timeout",
        INF,
        "Policy.first_token_timeout must be a number > 0 and finite, or None for off, got inf",
    ),
    ("idle_timeout", -5, "Policy.idle_timeout must be a number > 0 and finite, or None for off, got -5"),
    ("idle_timeout", NAN, "Policy.idle_timeout must be a number > 0 and finite, or None for off, got nan"),
    ("connect_timeout", 0.0, "Policy.connect_timeout must be a number > 0 and finite, got 0.0"),
    ("connect_timeout", None, "Policy.connect_timeout must be a number > 0 and finite, got None"),
    ("total_timeout", -1, "Policy.total_timeout must be a number > 0 and finite, or None for off, got -1"),
    ("budget", {}, "Policy.budget must be a BudgetSettings, got {}"),
    ("breaker", None, "Policy.breaker must be a BreakerSettings, got None"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), POLICY_ERRORS, ids=[f"{f}={v!r}" for f, v, _ in POLICY_ERRORS]
)
def test_policy_rejects(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Policy(**{field: value})  # type: ignore[arg-type]


BUDGET_ERRORS = [
    ("ratio", -0.1, "BudgetSettings.ratio must be a number >= 0 and finite, got -0.1"),
    ("ratio", INF, "BudgetSettings.ratio must be a number >= 0 and finite, got inf"),
    ("min_per_second", NAN, "BudgetSettings.min_per_second must be a number >= 0 and finite, got nan"),
    ("ttl", 0, "BudgetSettings.ttl must be a number > 0 and finite, got 0"),
    ("enabled", 1, "BudgetSettings.enabled must be True or False, got 1"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), BUDGET_ERRORS, ids=[f"{f}={v!r}" for f, v, _ in BUDGET_ERRORS]
)
def test_budget_settings_reject(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        BudgetSettings(**{field: value})  # type: ignore[arg-type]


BREAKER_ERRORS = [
    ("window", 0, "BreakerSettings.window must be a number > 0 and finite, got 0"),
    ("window", INF, "BreakerSettings.window must be a number > 0 and finite, got inf"),
    ("min_requests", 0, "BreakerSettings.min_requests must be an integer >= 1, got 0"),
    ("failure_ratio", 0, "BreakerSettings.failure_ratio must be a number > 0 and <= 1, got 0"),
    ("failure_ratio", 1.5, "BreakerSettings.failure_ratio must be a number > 0 and <= 1, got 1.5"),
    ("failure_ratio", NAN, "BreakerSettings.failure_ratio must be a number > 0 and <= 1, got nan"),
    ("open_for", -1, "BreakerSettings.open_for must be a number > 0 and finite, got -1"),
    ("half_open_probes", 0, "BreakerSettings.half_open_probes must be an integer >= 1, got 0"),
    ("enabled", "yes", "BreakerSettings.enabled must be True or False, got 'yes'"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), BREAKER_ERRORS, ids=[f"{f}={v!r}" for f, v, _ in BREAKER_ERRORS]
)
def test_breaker_settings_reject(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        BreakerSettings(**{field: value})  # type: ignore[arg-type]


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Policy().max_attempts = 2  # type: ignore[misc]


def test_from_mapping_typed_and_nested() -> None:
    policy = Policy.from_mapping(
        {"max_attempts": 2, "backoff_cap": 4, "budget": {"ratio": 0.1}, "breaker": {"min_requests": 5}}
    )
    assert policy == Policy(
        max_attempts=2,
        backoff_cap=4.0,
        budget=BudgetSettings(ratio=0.1),
        breaker=BreakerSettings(min_requests=5),
    )


def test_from_mapping_strings_from_env() -> None:
    policy = Policy.from_mapping(
        {
            "max_attempts": " 3 ",
            "backoff_base": "0.25",
            "total_timeout": "12.5",
            "idle_timeout": "none",
            "first_token_timeout": "",
            "budget": {"enabled": "false", "ttl": "5"},
            "breaker": {"enabled": "On", "half_open_probes": "2"},
        }
    )
    assert policy == Policy(
        max_attempts=3,
        backoff_base=0.25,
        total_timeout=12.5,
        idle_timeout=None,
        first_token_timeout=None,
        budget=BudgetSettings(enabled=False, ttl=5.0),
        breaker=BreakerSettings(half_open_probes=2),
    )


def test_from_mapping_empty_is_default() -> None:
    assert Policy.from_mapping({}) == Policy()


def test_from_mapping_accepts_built_settings() -> None:
    budget = BudgetSettings(ratio=0.5)
    assert Policy.from_mapping({"budget": budget}).budget is budget


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            {"max_attempt": 3},
            "policy: unknown key 'max_attempt'; accepted keys: backoff_base, backoff_cap, breaker, "
            "budget, connect_timeout, first_token_timeout, idle_timeout, max_attempts, "
            "max_retry_after, max_retry_wait, total_timeout",
            id="unknown-top",
        ),
        pytest.param(
            {"budget": {"percent": 20}},
            "policy.budget: unknown key 'percent'; accepted keys: enabled, min_per_second, ratio, ttl",
            id="unknown-budget",
        ),
        pytest.param(
            {"breaker": {"windows": 1}},
            "policy.breaker: unknown key 'windows'; accepted keys: enabled, failure_ratio, "
            "half_open_probes, min_requests, open_for, window",
            id="unknown-breaker",
        ),
        # A string that is not of the field's type: the accepted range too, as for any bad value.
        pytest.param(
            {"max_attempts": "three"}, "policy.max_attempts must be an integer >= 1, got 'three'", id="int"
        ),
        pytest.param(
            {"max_attempts": "3.0"}, "policy.max_attempts must be an integer >= 1, got '3.0'", id="int-frac"
        ),
        pytest.param(
            {"backoff_base": "fast"},
            "policy.backoff_base must be a number > 0 and finite, got 'fast'",
            id="float",
        ),
        pytest.param(
            {"connect_timeout": "none"},
            "policy.connect_timeout must be a number > 0 and finite, got 'none'",
            id="not-optional",
        ),
        pytest.param(
            {"breaker": {"half_open_probes": "1.5"}},
            "policy.breaker.half_open_probes must be an integer >= 1, got '1.5'",
            id="nested-int",
        ),
        pytest.param(
            {"budget": {"enabled": "maybe"}},
            "policy.budget.enabled must be true or false, got 'maybe'",
            id="bool",
        ),
        pytest.param({"budget": 5}, "policy.budget must be a mapping, got 5", id="nested-type"),
        pytest.param(
            {"max_attempts": "0"},
            "policy.max_attempts must be an integer >= 1, got '0'",
            id="range-after-coerce",
        ),
        pytest.param(
            {"breaker": {"failure_ratio": "2"}},
            "policy.breaker.failure_ratio must be a number > 0 and <= 1, got '2'",
            id="nested-range",
        ),
        # As a config file writes them: its key's path, "none" and true, not Python's names.
        pytest.param(
            {"breaker": {"failure_ratio": 2}},
            "policy.breaker.failure_ratio must be a number > 0 and <= 1, got 2",
            id="nested-range-typed",
        ),
        pytest.param(
            {"budget": {"enabled": 1}},
            "policy.budget.enabled must be true or false, got 1",
            id="nested-bool-typed",
        ),
        pytest.param(
            {"first_token_timeout": 0},
            'policy.first_token_timeout must be a number > 0 and finite, or "none" for off, got 0',
            id="optional-says-none",
        ),
        pytest.param(
            {"idle_timeout": "never"},
            "policy.idle_timeout must be a number > 0 and finite, or \"none\" for off, got 'never'",
            id="optional-text-says-none",
        ),
        pytest.param(
            {"backoff_base": 10},
            "policy.backoff_cap must be a number >= 10 (backoff_base) and finite, got 8.0 (the default)",
            id="a-default-at-fault-says-so",
        ),
        pytest.param(
            {"backoff_base": 10, "backoff_cap": "5"},
            "policy.backoff_cap must be a number >= 10 (backoff_base) and finite, got '5'",
            id="a-value-given-at-fault",
        ),
    ],
)
def test_from_mapping_rejects(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Policy.from_mapping(data)


def test_from_mapping_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match=r"^policy must be a mapping, got \[1\]$"):
        Policy.from_mapping([1])  # type: ignore[arg-type]


def test_a_refused_setting_pickles_as_a_value_error() -> None:
    """Raised in a process pool's worker, it must cross back: it broke the pool, or hung it."""
    import pickle

    with pytest.raises(ValueError, match="max_attempts") as refused:
        Policy(max_attempts=0)
    again = pickle.loads(pickle.dumps(refused.value))
    assert type(again) is ValueError and str(again) == str(refused.value)

"""parse_retry_config: the TOML `[retry]` table, checked at start-up."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatch_client import (
    BreakerConfig,
    BudgetConfig,
    PolicyError,
    RetryConfig,
    RetryPolicy,
    parse_retry_config,
)

TOOLS = frozenset({"tech.complete", "ticket.get", "ticket.create"})


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_retry_config(raw, TOOLS)
    return str(caught.value)


@pytest.mark.parametrize("raw", [None, {}])
def test_an_absent_or_empty_table_gives_the_defaults(raw: dict[str, Any] | None) -> None:
    config = parse_retry_config(raw, TOOLS)

    assert config == RetryConfig()
    assert config.default == RetryPolicy()
    assert config.budget == BudgetConfig()
    assert config.breaker == BreakerConfig()
    assert config.for_tool("tech.complete") == RetryPolicy()
    assert config.for_tool(None) == RetryPolicy()


def test_the_default_values_are_the_documented_ones() -> None:
    policy = RetryPolicy()

    assert policy.max_attempts == 3
    assert policy.per_try_timeout_s == 2.0
    assert policy.deadline_s == 10.0
    assert policy.base_backoff_s == 0.05
    assert policy.max_backoff_s == 1.0
    assert policy.retry_after_cap_s == 2.0


def test_top_level_values_set_the_default_policy_budget_and_breaker() -> None:
    config = parse_retry_config(
        {
            "max_attempts": 5,
            "deadline_s": 20,
            "budget": {"ratio": 0.1, "min_retries_per_s": 0, "max_tokens": 4},
            "breaker": {"failure_threshold": 7, "open_s": 30},
        },
        TOOLS,
    )

    assert config.default == RetryPolicy(max_attempts=5, deadline_s=20.0)
    assert config.budget == BudgetConfig(ratio=0.1, min_retries_per_s=0.0, max_tokens=4.0)
    assert config.breaker == BreakerConfig(failure_threshold=7, open_s=30.0)


def test_a_per_tool_override_inherits_unspecified_values_from_the_default() -> None:
    config = parse_retry_config(
        {
            "max_attempts": 4,
            "base_backoff_s": 0.1,
            "tools": {"tech.complete": {"deadline_s": 20, "max_attempts": 2}},
        },
        TOOLS,
    )

    assert config.for_tool("tech.complete") == RetryPolicy(
        max_attempts=2, deadline_s=20.0, base_backoff_s=0.1
    )
    assert config.for_tool("ticket.get") == RetryPolicy(max_attempts=4, base_backoff_s=0.1)
    assert config.default == RetryPolicy(max_attempts=4, base_backoff_s=0.1)


def test_numbers_are_normalised_to_the_field_type() -> None:
    config = parse_retry_config({"max_attempts": 4.0, "deadline_s": 12}, TOOLS)

    assert config.default.max_attempts == 4
    assert type(config.default.max_attempts) is int
    assert config.default.deadline_s == 12.0
    assert type(config.default.deadline_s) is float


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (
            {"tools": {"tech.complete": {"max_atempts": 3}}},
            'retry.tools."tech.complete".max_atempts',
        ),
        ({"max_atempts": 3}, "retry.max_atempts"),
        ({"budget": {"ratoi": 0.1}}, "retry.budget.ratoi"),
        ({"breaker": {"open_secs": 3}}, "retry.breaker.open_secs"),
    ],
)
def test_an_unknown_key_is_refused_naming_the_full_key(raw: dict[str, Any], key: str) -> None:
    message = _error(raw)

    assert message.startswith(f"{key}: unknown setting")


def test_an_unknown_tool_is_refused_naming_it() -> None:
    message = _error({"tools": {"tech.teleport": {"max_attempts": 2}}})

    assert message.startswith('retry.tools."tech.teleport": unknown tool')
    assert "tech.complete" in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"max_attempts": "3"}, "retry.max_attempts"),
        ({"max_attempts": True}, "retry.max_attempts"),
        ({"deadline_s": False}, "retry.deadline_s"),
        ({"deadline_s": "10s"}, "retry.deadline_s"),
        ({"max_attempts": 2.5}, "retry.max_attempts"),
        ({"max_attempts": None}, "retry.max_attempts"),
        ({"budget": {"ratio": "20%"}}, "retry.budget.ratio"),
        ({"breaker": {"failure_threshold": True}}, "retry.breaker.failure_threshold"),
        (
            {"tools": {"ticket.get": {"per_try_timeout_s": "1"}}},
            'retry.tools."ticket.get".per_try_timeout_s',
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_its_key(raw: dict[str, Any], key: str) -> None:
    message = _error(raw)

    assert message.startswith(f"{key}: expected")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"max_attempts": 11}, "retry.max_attempts"),
        ({"per_try_timeout_s": 0}, "retry.per_try_timeout_s"),
        ({"deadline_s": 1, "per_try_timeout_s": 2}, "retry.deadline_s"),
        ({"base_backoff_s": -0.1}, "retry.base_backoff_s"),
        ({"base_backoff_s": 2, "max_backoff_s": 1}, "retry.max_backoff_s"),
        ({"retry_after_cap_s": -1}, "retry.retry_after_cap_s"),
        ({"budget": {"ratio": 1.5}}, "retry.budget.ratio"),
        ({"budget": {"ratio": -0.1}}, "retry.budget.ratio"),
        ({"budget": {"min_retries_per_s": -1}}, "retry.budget.min_retries_per_s"),
        ({"budget": {"max_tokens": 0.5}}, "retry.budget.max_tokens"),
        ({"breaker": {"failure_threshold": 0}}, "retry.breaker.failure_threshold"),
        ({"breaker": {"open_s": 0}}, "retry.breaker.open_s"),
        ({"breaker": {"window_s": 0}}, "retry.breaker.window_s"),
        ({"breaker": {"min_callers": 0}}, "retry.breaker.min_callers"),
        ({"breaker": {"heavy_body_bytes": 0}}, "retry.breaker.heavy_body_bytes"),
        (
            {"tools": {"tech.complete": {"max_attempts": 0}}},
            'retry.tools."tech.complete".max_attempts',
        ),
        # The override is checked as merged: 20 s per try does not fit the default 10 s deadline.
        (
            {"tools": {"ticket.get": {"per_try_timeout_s": 20}}},
            'retry.tools."ticket.get".deadline_s',
        ),
    ],
)
def test_an_invalid_value_is_refused_naming_its_key(raw: dict[str, Any], key: str) -> None:
    message = _error(raw)

    assert message.startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"budget": 3}, "retry.budget"),
        ({"breaker": [1]}, "retry.breaker"),
        ({"tools": ["tech.complete"]}, "retry.tools"),
        ({"tools": {"tech.complete": 3}}, 'retry.tools."tech.complete"'),
    ],
)
def test_a_non_table_where_a_table_belongs_is_refused(raw: dict[str, Any], key: str) -> None:
    assert _error(raw).startswith(f"{key}: expected a table")


def test_a_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


def test_parsing_does_not_modify_the_input_table() -> None:
    raw: dict[str, Any] = {"max_attempts": 4, "tools": {"ticket.get": {"max_attempts": 2}}}
    snapshot = json.loads(json.dumps(raw))

    parse_retry_config(raw, TOOLS)

    assert raw == snapshot


def test_describe_returns_plain_json_able_dicts() -> None:
    config = parse_retry_config(
        {
            "max_attempts": 4,
            "tools": {"ticket.get": {"max_attempts": 2}, "tech.complete": {"deadline_s": 30}},
            "budget": {"ratio": 0.1},
        },
        TOOLS,
    )

    described = config.describe()

    assert json.loads(json.dumps(described)) == described
    assert set(described) == {"default", "tools", "budget", "breaker"}
    assert described["default"] == {
        "max_attempts": 4,
        "per_try_timeout_s": 2.0,
        "deadline_s": 10.0,
        "base_backoff_s": 0.05,
        "max_backoff_s": 1.0,
        "retry_after_cap_s": 2.0,
    }
    assert list(described["tools"]) == ["tech.complete", "ticket.get"]
    assert described["tools"]["ticket.get"]["max_attempts"] == 2
    assert described["tools"]["tech.complete"]["deadline_s"] == 30.0
    assert described["budget"] == {"ratio": 0.1, "min_retries_per_s": 1.0, "max_tokens": 10.0}
    assert described["breaker"] == {
        "failure_threshold": 5,
        "open_s": 5.0,
        "window_s": 10.0,
        "min_callers": 2,
        "heavy_body_bytes": 262144,
    }
    assert all(type(v) is dict for v in described.values())

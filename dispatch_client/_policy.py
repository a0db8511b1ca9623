"""Retry configuration: per-call policy, retry budget, breaker; parsed from TOML `[retry]`.

Every value is checked at start-up; a bad one raises `PolicyError` naming its TOML key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


class PolicyError(ValueError):
    """A retry setting is invalid; the message starts with its TOML key."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one tool call may be retried."""

    max_attempts: int = 3
    per_try_timeout_s: float = 2.0
    deadline_s: float = 10.0
    base_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    retry_after_cap_s: float = 2.0

    def check(self, where: str) -> None:
        _require(self.max_attempts >= 1, f"{where}.max_attempts", "must be at least 1")
        _require(self.max_attempts <= 10, f"{where}.max_attempts", "must be at most 10")
        _require(self.per_try_timeout_s > 0, f"{where}.per_try_timeout_s", "must be positive")
        _require(self.deadline_s > 0, f"{where}.deadline_s", "must be positive")
        _require(
            self.deadline_s >= self.per_try_timeout_s,
            f"{where}.deadline_s",
            "must be at least per_try_timeout_s",
        )
        _require(self.base_backoff_s >= 0, f"{where}.base_backoff_s", "must not be negative")
        _require(
            self.max_backoff_s >= self.base_backoff_s,
            f"{where}.max_backoff_s",
            "must be at least base_backoff_s",
        )
        _require(self.retry_after_cap_s >= 0, f"{where}.retry_after_cap_s", "must not be negative")


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Retries may add at most `ratio` of the calls, plus `min_retries_per_s` (gRPC/Finagle)."""

    ratio: float = 0.2
    min_retries_per_s: float = 1.0
    max_tokens: float = 10.0

    def check(self) -> None:
        _require(0 <= self.ratio <= 1, "retry.budget.ratio", "must be between 0 and 1")
        _require(
            self.min_retries_per_s >= 0, "retry.budget.min_retries_per_s", "must not be negative"
        )
        _require(self.max_tokens >= 1, "retry.budget.max_tokens", "must be at least 1")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Open for `open_s` seconds after `failure_threshold` transient failures in a row from
    the callers failing within `window_s`, once at least `min_callers` distinct callers (or
    every caller seen in the window, when fewer called) are failing; see `_breaker.py`.

    A try that timed out sending more than `heavy_body_bytes` is the caller's own slow work,
    not evidence of a sick downstream: it does not count (unless it was the probe)."""

    failure_threshold: int = 5
    open_s: float = 5.0
    window_s: float = 10.0
    min_callers: int = 2
    heavy_body_bytes: int = 256 * 1024

    def check(self) -> None:
        _require(
            self.failure_threshold >= 1, "retry.breaker.failure_threshold", "must be at least 1"
        )
        _require(self.open_s > 0, "retry.breaker.open_s", "must be positive")
        _require(self.window_s > 0, "retry.breaker.window_s", "must be positive")
        _require(self.min_callers >= 1, "retry.breaker.min_callers", "must be at least 1")
        _require(self.heavy_body_bytes >= 1, "retry.breaker.heavy_body_bytes", "must be at least 1")


@dataclass(frozen=True, slots=True)
class RetryConfig:
    default: RetryPolicy = field(default_factory=RetryPolicy)
    tools: Mapping[str, RetryPolicy] = field(default_factory=dict)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    def for_tool(self, tool: str | None) -> RetryPolicy:
        return self.tools.get(tool or "", self.default)

    def describe(self) -> dict[str, Any]:
        """The effective configuration as JSON (nothing secret lives here)."""
        return {
            "default": asdict(self.default),
            "tools": {name: asdict(p) for name, p in sorted(self.tools.items())},
            "budget": asdict(self.budget),
            "breaker": asdict(self.breaker),
        }


def parse_retry_config(raw: Mapping[str, Any] | None, known_tools: frozenset[str]) -> RetryConfig:
    """Build and check a RetryConfig from the TOML table `[retry]`."""
    raw = dict(raw or {})
    tools_raw = raw.pop("tools", {})
    budget = _build(BudgetConfig, raw.pop("budget", {}), "retry.budget")
    breaker = _build(BreakerConfig, raw.pop("breaker", {}), "retry.breaker")
    default = _build(RetryPolicy, raw, "retry")
    default.check("retry")
    budget.check()
    breaker.check()
    if not isinstance(tools_raw, Mapping):
        raise PolicyError("retry.tools: expected a table of tool names")
    overrides: dict[str, RetryPolicy] = {}
    for tool, table in tools_raw.items():
        where = f'retry.tools."{tool}"'
        if tool not in known_tools:
            raise PolicyError(f"{where}: unknown tool; known tools are {sorted(known_tools)}")
        if not isinstance(table, Mapping):
            raise PolicyError(f"{where}: expected a table")
        policy = replace(default, **_values(RetryPolicy, table, where))
        policy.check(where)
        overrides[tool] = policy
    return RetryConfig(default, overrides, budget, breaker)


def _build(cls: Any, table: Any, where: str) -> Any:
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where}: expected a table")
    return cls(**_values(cls, table, where))


def _values(cls: Any, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in types:
            raise PolicyError(f"{where}.{key}: unknown setting; known: {sorted(types)}")
        want = types[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyError(f"{where}.{key}: expected a number, got {value!r}")
        if want == "int":
            if not float(value).is_integer():
                raise PolicyError(f"{where}.{key}: expected an integer, got {value!r}")
            value = int(value)
        values[key] = float(value) if want == "float" else value
    return values


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise PolicyError(f"{key}: {message}")

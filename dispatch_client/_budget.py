"""A retry budget (token bucket): retries add at most a fraction of the calls' load."""

from __future__ import annotations

from collections.abc import Callable

from ._policy import BudgetConfig


class RetryBudget:
    """Each call deposits `ratio` tokens, time deposits `min_retries_per_s`; a retry spends one.

    Under sustained failure the downstream therefore sees at most about
    (1 + ratio) x the calls, plus the small per-second floor.
    Not thread-safe; one event loop owns it.
    """

    def __init__(self, config: BudgetConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._tokens = config.max_tokens
        self._stamp = clock()
        self.exhausted_total = 0

    def record_call(self) -> None:
        self._refill()
        self._tokens = min(self._config.max_tokens, self._tokens + self._config.ratio)

    def try_spend(self) -> bool:
        """Take one token for a retry; False (and counted) when the budget is spent."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.exhausted_total += 1
        return False

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(
            self._config.max_tokens, self._tokens + elapsed * self._config.min_retries_per_s
        )

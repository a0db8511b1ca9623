"""The retry loop: tenacity, built afresh for every call, with our clock and sleep.

Rules (REFERENCE "Retries"): retry only on an allow-list of transient failures; capped
exponential backoff with full jitter; Retry-After honoured up to a cap; never sleep past the
deadline (stop-before-delay); every retry spends from the budget; cancellation is never
retried.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from ._budget import RetryBudget
from ._errors import DispatchError
from ._policy import RetryPolicy

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


def full_jitter(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """AWS 'full jitter': uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(policy.max_backoff_s, policy.base_backoff_s * 2 ** (attempt - 1))
    return rng.uniform(0.0, ceiling)


def _is_retryable(exc: BaseException) -> bool:
    # An allow-list: CancelledError, programming errors and 4xx answers are never retried.
    return isinstance(exc, DispatchError) and exc.retryable


async def run_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy,
    budget: RetryBudget,
    clock: Clock,
    sleep: Sleep,
    rng: random.Random,
    deadline: float,
) -> T:
    """Call `attempt(n)` for n = 1, 2, ... until it returns, a stop rule fires, or it raises
    something not retryable; the last error is re-raised as is."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, DispatchError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, policy.retry_after_cap_s)
        return full_jitter(policy, state.attempt_number, rng)

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        if clock() + state.upcoming_sleep >= deadline:
            return True  # sleeping would overshoot the deadline: give up now
        return not budget.try_spend()

    # Most calls succeed on the first try: make it outside tenacity (whose per-call set-up
    # costs as much as the rest of the retry logic), and hand a retryable first failure to
    # tenacity as its own first outcome, so the rules above see exactly the same history.
    try:
        return await attempt(1)
    except DispatchError as exc:
        if not _is_retryable(exc):
            raise
        first: DispatchError | None = exc

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        retry=retry_if_exception(_is_retryable),
        reraise=True,
    )
    tries = 0

    async def one_try() -> T:
        nonlocal tries, first
        tries += 1
        if first is not None:
            replayed, first = first, None
            raise replayed
        return await attempt(tries)

    result: T = await retrying(one_try)
    return result

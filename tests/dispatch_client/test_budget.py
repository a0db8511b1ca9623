"""The retry budget: retries add at most `ratio` of the calls (plus a per-second floor)."""

from __future__ import annotations

import pytest

from dispatch_client import (
    BreakerConfig,
    BudgetConfig,
    ProblemResponse,
    RetryBudget,
    RetryConfig,
    RetryPolicy,
)

from .fakes import TICKETS, FakeClock, Harness, context


async def test_under_sustained_503s_n_calls_make_at_most_n_times_1_2_plus_1_tries(
    harness: Harness,
) -> None:
    harness.mock.post(TICKETS, status=503, repeat=True)
    config = RetryConfig(
        default=RetryPolicy(max_attempts=3),
        budget=BudgetConfig(ratio=0.2, min_retries_per_s=0, max_tokens=1),
        breaker=BreakerConfig(failure_threshold=10_000),
    )
    client = harness.client(config)
    calls = 50

    for i in range(calls):
        with pytest.raises(ProblemResponse):
            await client.create_ticket(context(request_id=f"req-{i}"), {"summary": "x"})

    tries = harness.request_count()
    assert calls <= tries <= calls * 1.2 + 1
    assert tries < calls * config.default.max_attempts  # far below the unbudgeted 150
    assert client.budget.exhausted_total > 0


async def test_an_exhausted_budget_ends_a_call_after_its_first_try(harness: Harness) -> None:
    harness.mock.post(TICKETS, status=503, repeat=True)
    config = RetryConfig(
        default=RetryPolicy(max_attempts=5),
        budget=BudgetConfig(ratio=0.0, min_retries_per_s=0, max_tokens=1),
        breaker=BreakerConfig(failure_threshold=10_000),
    )
    client = harness.client(config)

    with pytest.raises(ProblemResponse):
        await client.create_ticket(context(request_id="first"), {})
    assert harness.request_count() == 2  # the one starting token paid for one retry
    assert client.budget.exhausted_total == 1

    with pytest.raises(ProblemResponse):
        await client.create_ticket(context(request_id="second"), {})
    assert harness.request_count() == 3
    assert client.budget.exhausted_total == 2


def test_a_new_budget_starts_full() -> None:
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_retries_per_s=0, max_tokens=3), FakeClock())

    assert budget.tokens == 3
    assert budget.exhausted_total == 0


def test_a_retry_spends_one_token_and_an_empty_budget_refuses_and_counts() -> None:
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_retries_per_s=0, max_tokens=2), FakeClock())

    assert budget.try_spend() is True
    assert budget.try_spend() is True
    assert budget.tokens == pytest.approx(0.0)
    assert budget.try_spend() is False
    assert budget.try_spend() is False
    assert budget.exhausted_total == 2


def test_each_call_deposits_ratio_tokens() -> None:
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_retries_per_s=0, max_tokens=1), FakeClock())
    assert budget.try_spend() is True

    for _ in range(4):
        budget.record_call()
    assert budget.tokens == pytest.approx(0.8)
    assert budget.try_spend() is False

    budget.record_call()
    assert budget.tokens == pytest.approx(1.0)
    assert budget.try_spend() is True


def test_time_refills_the_budget_at_min_retries_per_s() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetConfig(ratio=0.0, min_retries_per_s=2.0, max_tokens=5), clock)
    while budget.try_spend():
        pass
    assert budget.tokens == pytest.approx(0.0)

    clock.advance(0.25)
    assert budget.tokens == pytest.approx(0.5)
    assert budget.try_spend() is False

    clock.advance(0.25)
    assert budget.tokens == pytest.approx(1.0)
    assert budget.try_spend() is True


def test_tokens_never_exceed_max_tokens() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetConfig(ratio=0.5, min_retries_per_s=10.0, max_tokens=4), clock)
    budget.try_spend()

    clock.advance(3600)
    assert budget.tokens == 4
    for _ in range(10):
        budget.record_call()
    assert budget.tokens == 4


def test_a_clock_going_backwards_takes_no_tokens_away() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetConfig(ratio=0.0, min_retries_per_s=1.0, max_tokens=4), clock)
    budget.try_spend()

    clock.advance(-100)
    assert budget.tokens == pytest.approx(3.0)

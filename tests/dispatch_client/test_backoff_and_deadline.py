"""Backoff (capped exponential, full jitter), Retry-After, and the call's overall deadline."""

from __future__ import annotations

import random
import time
from email.utils import formatdate
from typing import Any

import pytest
from aioresponses import CallbackResult
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from dispatch_client import (
    AttemptTimedOut,
    DeadlineExceeded,
    ProblemResponse,
    RetryPolicy,
    full_jitter,
)

from .fakes import SEED, TICKET, Harness, context, roomy_config


def _ceiling(policy: RetryPolicy, n: int) -> float:
    return min(policy.max_backoff_s, policy.base_backoff_s * 2.0 ** (n - 1))


async def test_backoff_sleeps_lie_within_the_capped_exponential_full_jitter_range(
    harness: Harness,
) -> None:
    policy = RetryPolicy(
        max_attempts=10,
        per_try_timeout_s=1.0,
        deadline_s=100.0,
        base_backoff_s=0.1,
        max_backoff_s=0.5,
    )
    harness.mock.get(TICKET, status=503, repeat=True)
    client = harness.client(roomy_config(policy), seed=SEED)

    with pytest.raises(ProblemResponse):
        await client.get_ticket(context(), "T-1")

    delays = harness.sleep.delays
    assert len(delays) == 9
    for n, delay in enumerate(delays, start=1):
        assert 0.0 <= delay <= _ceiling(policy, n)
    # The cap is reached: later ceilings are max_backoff_s, not 0.1 * 2**8.
    assert _ceiling(policy, 9) == 0.5
    # Full jitter from the injected rng, nothing else: the same seed gives the same sleeps.
    rng = random.Random(SEED)
    assert delays == [rng.uniform(0.0, _ceiling(policy, n)) for n in range(1, 10)]


async def test_the_same_seed_gives_the_same_backoff_and_another_seed_another(
    harness: Harness,
) -> None:
    policy = RetryPolicy(max_attempts=4, base_backoff_s=0.2, max_backoff_s=1.0)
    harness.mock.get(TICKET, status=503, repeat=True)

    runs: list[list[float]] = []
    for seed in (1, 1, 2):
        harness.sleep.delays.clear()
        with pytest.raises(ProblemResponse):
            await harness.client(roomy_config(policy), seed=seed).get_ticket(context(), "T-1")
        runs.append(list(harness.sleep.delays))

    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@given(
    base=st.floats(min_value=0.0, max_value=10.0),
    headroom=st.floats(min_value=0.0, max_value=100.0),
    attempt=st.integers(min_value=1, max_value=10),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_full_jitter_is_between_zero_and_the_capped_exponential_ceiling(
    base: float, headroom: float, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(base_backoff_s=base, max_backoff_s=base + headroom)

    delay = full_jitter(policy, attempt, random.Random(seed))

    assert 0.0 <= delay <= min(policy.max_backoff_s, base * 2 ** (attempt - 1))


def test_full_jitter_spreads_over_the_whole_range_not_around_the_ceiling() -> None:
    policy = RetryPolicy(base_backoff_s=0.5, max_backoff_s=1.0)
    rng = random.Random(SEED)

    delays = [full_jitter(policy, 3, rng) for _ in range(2000)]

    assert max(delays) <= 1.0
    assert min(delays) < 0.05
    assert max(delays) > 0.95
    assert 0.45 < sum(delays) / len(delays) < 0.55


async def test_retry_after_1_makes_the_next_sleep_exactly_one_second(harness: Harness) -> None:
    harness.mock.get(TICKET, status=503, headers={"Retry-After": "1"})
    harness.mock.get(TICKET, payload={"id": "T-1"})
    policy = RetryPolicy(base_backoff_s=0.01, max_backoff_s=0.02, retry_after_cap_s=2.0)
    client = harness.client(roomy_config(policy))

    assert await client.get_ticket(context(), "T-1") == {"id": "T-1"}
    assert harness.sleep.delays == [1.0]


async def test_retry_after_on_a_429_is_honoured(harness: Harness) -> None:
    harness.mock.get(TICKET, status=429, headers={"Retry-After": "0.5"})
    harness.mock.get(TICKET, payload={"id": "T-1"})
    client = harness.client(roomy_config(RetryPolicy(max_backoff_s=0.01, base_backoff_s=0.01)))

    await client.get_ticket(context(), "T-1")

    assert harness.sleep.delays == [0.5]


async def test_retry_after_3600_is_capped_at_retry_after_cap_s(harness: Harness) -> None:
    harness.mock.get(TICKET, status=503, headers={"Retry-After": "3600"})
    harness.mock.get(TICKET, payload={"id": "T-1"})
    policy = RetryPolicy(deadline_s=10.0, retry_after_cap_s=2.5)
    client = harness.client(roomy_config(policy))

    await client.get_ticket(context(), "T-1")

    assert harness.sleep.delays == [2.5]


async def test_an_http_date_retry_after_is_understood(harness: Harness) -> None:
    # The HTTP-date form is measured against the wall clock (time.time()), not the fake one.
    harness.mock.get(TICKET, status=503, headers={"Retry-After": formatdate(time.time() + 30)})
    harness.mock.get(TICKET, payload={"id": "T-1"})
    policy = RetryPolicy(
        deadline_s=120.0, base_backoff_s=0.01, max_backoff_s=0.02, retry_after_cap_s=60.0
    )
    client = harness.client(roomy_config(policy))

    await client.get_ticket(context(), "T-1")

    (delay,) = harness.sleep.delays
    assert 25.0 <= delay <= 31.0


async def test_an_http_date_retry_after_in_the_past_means_retry_now(harness: Harness) -> None:
    past = formatdate(time.time() - 3600, usegmt=True)
    harness.mock.get(TICKET, status=503, headers={"Retry-After": past})
    harness.mock.get(TICKET, payload={"id": "T-1"})
    client = harness.client()

    await client.get_ticket(context(), "T-1")

    assert harness.sleep.delays == [0.0]


async def test_an_unparseable_retry_after_falls_back_to_jittered_backoff(
    harness: Harness,
) -> None:
    harness.mock.get(TICKET, status=503, headers={"Retry-After": "soon-ish"})
    harness.mock.get(TICKET, payload={"id": "T-1"})
    policy = RetryPolicy(base_backoff_s=0.05, max_backoff_s=1.0)
    client = harness.client(roomy_config(policy))

    await client.get_ticket(context(), "T-1")

    (delay,) = harness.sleep.delays
    assert 0.0 <= delay <= 0.05


async def test_a_retry_after_beyond_the_deadline_ends_the_call_without_sleeping(
    harness: Harness,
) -> None:
    harness.mock.get(TICKET, status=503, headers={"Retry-After": "5"}, repeat=True)
    policy = RetryPolicy(per_try_timeout_s=1.0, deadline_s=3.0, retry_after_cap_s=10.0)
    client = harness.client(roomy_config(policy))

    with pytest.raises(ProblemResponse) as caught:
        await client.get_ticket(context(), "T-1")

    assert caught.value.status == 503
    assert caught.value.retry_after_s == 5.0
    assert harness.request_count() == 1
    assert harness.sleep.delays == []


async def test_the_call_stops_before_a_sleep_would_overshoot_the_deadline(
    harness: Harness,
) -> None:
    try_takes = 0.3

    def slow_503(url: URL, **kwargs: Any) -> CallbackResult:
        harness.clock.advance(try_takes)
        return CallbackResult(status=503, payload={"code": "unavailable"})

    harness.mock.get(TICKET, callback=slow_503, repeat=True)
    policy = RetryPolicy(
        max_attempts=10,
        per_try_timeout_s=1.0,
        deadline_s=3.0,
        base_backoff_s=0.5,
        max_backoff_s=4.0,
    )
    client = harness.client(roomy_config(policy))
    start = harness.clock()

    with pytest.raises(ProblemResponse) as caught:
        await client.get_ticket(context(), "T-1")

    tries = harness.request_count()
    elapsed = harness.clock() - start
    assert caught.value.status == 503
    assert 1 <= tries < policy.max_attempts
    assert elapsed <= policy.deadline_s
    assert elapsed == pytest.approx(tries * try_takes + sum(harness.sleep.delays))
    assert len(harness.sleep.delays) == tries - 1


async def test_a_try_clipped_by_the_deadline_that_times_out_raises_deadline_exceeded(
    harness: Harness,
) -> None:
    def slow_503(url: URL, **kwargs: Any) -> CallbackResult:
        harness.clock.advance(1.0)
        return CallbackResult(status=503)

    harness.mock.post(f"{TICKET}/complete", callback=slow_503)
    harness.mock.post(f"{TICKET}/complete", exception=TimeoutError())
    policy = RetryPolicy(
        max_attempts=5,
        per_try_timeout_s=2.0,
        deadline_s=2.5,
        base_backoff_s=0.01,
        max_backoff_s=0.01,
    )
    client = harness.client(roomy_config(policy))

    with pytest.raises(DeadlineExceeded) as caught:
        await client.act(context(), "T-1", "complete", {"signature": "sig"})

    # Try 2 had ~1.49 s left, less than the 2 s per-try timeout: its timeout was the deadline.
    assert isinstance(caught.value.__cause__, AttemptTimedOut)
    assert "try 2" in str(caught.value.__cause__)
    assert harness.request_count() == 2
    assert caught.value.retryable is False


async def test_a_timeout_not_clipped_by_the_deadline_is_an_attempt_timeout_and_retried(
    harness: Harness,
) -> None:
    harness.mock.get(TICKET, exception=TimeoutError())
    harness.mock.get(TICKET, payload={"id": "T-1"})
    policy = RetryPolicy(per_try_timeout_s=2.0, deadline_s=10.0)
    client = harness.client(roomy_config(policy))

    assert await client.get_ticket(context(), "T-1") == {"id": "T-1"}
    assert harness.request_count() == 2

"""What a failed call says about its effect: `maybe_applied` comes from the history of all
its tries (a timeout after sending, then a refusal, is still maybe applied), and replays are
told apart from fresh answers."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from dispatch_client import (
    AttemptTimedOut,
    BreakerConfig,
    BudgetConfig,
    CircuitOpen,
    DispatchError,
    ProblemResponse,
    RetryPolicy,
    TransportFailure,
)

from .fakes import TICKET, Harness, context, roomy_config

REPLAYED = {"Idempotent-Replayed": "true"}
SCHEDULE = f"{TICKET}/schedule"


def _refused() -> aiohttp.ClientConnectorError:
    key = ConnectionKey("dispatch-api.test", 80, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))


async def _failure(harness: Harness, **config: Any) -> DispatchError:
    client = harness.client(roomy_config(**config))
    with pytest.raises(DispatchError) as caught:
        await client.act(context(), "T-1", "schedule", {"technician_id": "tech-1"})
    return caught.value


async def test_a_retry_refused_by_the_breaker_after_a_timed_out_try_may_have_been_applied(
    harness: Harness,
) -> None:
    """The reported bug: try 1 went out and timed out (it may have committed), then the
    breaker it opened refused try 2. The call's outcome is unknown, not 'nothing'."""
    harness.mock.post(SCHEDULE, exception=TimeoutError())

    error = await _failure(
        harness,
        policy=RetryPolicy(max_attempts=2),
        breaker=BreakerConfig(failure_threshold=1, open_s=30.0),
    )

    assert isinstance(error, CircuitOpen)
    assert error.maybe_applied is True
    assert harness.request_count() == 1


async def test_a_call_the_open_breaker_refused_before_any_try_was_not_applied(
    harness: Harness,
) -> None:
    harness.mock.post(SCHEDULE, status=503, payload={"code": "database_unavailable"})
    client = harness.client(
        roomy_config(
            RetryPolicy(max_attempts=1), breaker=BreakerConfig(failure_threshold=1, open_s=30.0)
        )
    )
    with pytest.raises(ProblemResponse) as first:
        await client.act(context("req-1"), "T-1", "schedule", {})
    with pytest.raises(CircuitOpen) as second:
        await client.act(context("req-2"), "T-1", "schedule", {})

    assert first.value.maybe_applied is True  # a 5xx can follow a commit
    assert second.value.maybe_applied is False


async def test_connect_refused_on_every_try_was_not_applied(harness: Harness) -> None:
    harness.mock.post(SCHEDULE, exception=_refused(), repeat=True)

    error = await _failure(harness, policy=RetryPolicy(max_attempts=3))

    assert isinstance(error, TransportFailure)
    assert error.maybe_applied is False
    assert harness.request_count() == 3


async def test_a_connection_lost_after_sending_then_refused_connects_may_have_been_applied(
    harness: Harness,
) -> None:
    harness.mock.post(SCHEDULE, exception=aiohttp.ServerDisconnectedError())
    harness.mock.post(SCHEDULE, exception=_refused(), repeat=True)

    error = await _failure(harness, policy=RetryPolicy(max_attempts=3))

    assert isinstance(error, TransportFailure)
    assert error.maybe_applied is True


async def test_a_timeout_then_rate_limited_tries_until_the_budget_is_spent_may_have_been_applied(
    harness: Harness,
) -> None:
    harness.mock.post(SCHEDULE, exception=TimeoutError())
    harness.mock.post(SCHEDULE, status=429, payload={"code": "rate_limited"}, repeat=True)

    error = await _failure(
        harness,
        policy=RetryPolicy(max_attempts=10),
        budget=BudgetConfig(ratio=0.0, min_retries_per_s=0.0, max_tokens=2.0),
    )

    assert isinstance(error, ProblemResponse)
    assert error.status == 429
    assert error.maybe_applied is True
    assert harness.request_count() == 3


@pytest.mark.parametrize(
    ("status", "code", "maybe"),
    [
        (404, "ticket_not_found", False),
        (409, "invalid_transition", False),
        (422, "validation_failed", False),
        (409, "request_in_progress", True),  # another request under this key may commit
        (500, "internal", True),
        (503, "database_unavailable", True),
    ],
)
async def test_a_single_answer_says_whether_it_may_have_been_applied(
    harness: Harness, status: int, code: str, maybe: bool
) -> None:
    harness.mock.post(SCHEDULE, status=status, payload={"code": code}, repeat=True)

    error = await _failure(harness, policy=RetryPolicy(max_attempts=1))

    assert error.maybe_applied is maybe


async def test_a_replayed_refusal_after_a_timed_out_try_is_the_stored_outcome_not_applied(
    harness: Harness,
) -> None:
    """The key's stored answer is a rejection: under this request_id nothing was applied,
    whatever the timed-out try did; and it is this call's own answer (its first try's,
    lost), so it is not presented as an earlier call's."""
    harness.mock.post(SCHEDULE, exception=TimeoutError())
    harness.mock.post(SCHEDULE, status=422, payload={"code": "evidence_missing"}, headers=REPLAYED)

    error = await _failure(harness, policy=RetryPolicy(max_attempts=2))

    assert isinstance(error, ProblemResponse)
    assert error.replayed is False
    assert error.maybe_applied is False


async def test_a_refusal_replayed_to_the_first_try_is_an_earlier_calls_stored_outcome(
    harness: Harness,
) -> None:
    harness.mock.post(SCHEDULE, status=422, payload={"code": "evidence_missing"}, headers=REPLAYED)

    error = await _failure(harness, policy=RetryPolicy(max_attempts=2))

    assert isinstance(error, ProblemResponse)
    assert (error.replayed, error.maybe_applied) == (True, False)


async def test_a_read_that_timed_out_changed_nothing(harness: Harness) -> None:
    harness.mock.get(TICKET, exception=TimeoutError(), repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=2)))

    with pytest.raises(AttemptTimedOut) as caught:
        await client.get_ticket(context(), "T-1")

    assert caught.value.maybe_applied is False


async def test_a_replayed_success_is_marked_on_the_call_record(harness: Harness) -> None:
    harness.mock.post(SCHEDULE, status=200, payload={"ok": 1}, headers=REPLAYED)
    harness.mock.post(SCHEDULE, status=200, payload={"ok": 2})
    client = harness.client()
    replayed, fresh = context("req-1"), context("req-2")

    await client.act(replayed, "T-1", "schedule", {})
    await client.act(fresh, "T-1", "schedule", {})

    assert replayed.record.replayed is True
    assert fresh.record.replayed is False


async def test_a_success_replayed_to_the_calls_own_retry_after_a_lost_answer_is_not_marked(
    harness: Harness,
) -> None:
    """Try 1 committed but its answer was lost; try 2 gets the stored answer. For the agent
    that is this call's fresh outcome, not a re-delivery of an earlier one."""
    harness.mock.post(SCHEDULE, exception=aiohttp.ServerDisconnectedError())
    harness.mock.post(SCHEDULE, status=200, payload={"ok": 1}, headers=REPLAYED)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=2)))
    ctx = context("req-1")

    assert await client.act(ctx, "T-1", "schedule", {}) == {"ok": 1}
    assert ctx.record.replayed is False

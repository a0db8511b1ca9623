"""dispatch-api holds a gated call for a person's approval (202 {"approval": ...}) or refuses
its re-send once the approval ended (409 approval_*): both are final answers, never retried,
and a held call says nothing ran."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch_client import (
    ApprovalPending,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    ProblemResponse,
    RetryPolicy,
)

from .fakes import TICKET, Harness, context, roomy_config

CANCEL = f"{TICKET}/cancel"


def _state(breaker: CircuitBreaker) -> BreakerState:
    """Read afresh each time (a call keeps mypy from narrowing the property)."""
    return breaker.state


APPROVAL: dict[str, Any] = {
    "id": "0b5f3c4e-2d1a-4f6b-9c8d-7e6f5a4b3c2d",
    "status": "pending",
    "rule": "cancel",
    "approvers": ["supervisor"],
    "expires_at": "2026-11-27T10:00:00Z",
}


async def test_a_call_held_for_approval_is_answered_once_and_says_nothing_ran(
    harness: Harness,
) -> None:
    harness.mock.post(CANCEL, status=202, payload={"approval": APPROVAL}, repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=4)))

    with pytest.raises(ApprovalPending) as caught:
        await client.act(context(tool_name="ticket.cancel"), "T-1", "cancel", {"reason": "dup"})

    assert caught.value.approval == APPROVAL
    assert caught.value.maybe_applied is False
    assert caught.value.retryable is False
    assert harness.request_count() == 1


async def test_a_held_call_is_a_healthy_answer_that_closes_a_half_open_breaker(
    harness: Harness,
) -> None:
    harness.mock.post(CANCEL, status=503)
    harness.mock.post(CANCEL, status=202, payload={"approval": APPROVAL})
    client = harness.client(
        roomy_config(
            RetryPolicy(max_attempts=1), breaker=BreakerConfig(failure_threshold=1, open_s=5.0)
        )
    )
    ctx = context(tool_name="ticket.cancel")
    with pytest.raises(ProblemResponse):
        await client.act(ctx, "T-1", "cancel", {"reason": "dup"})
    assert _state(client.breaker) is BreakerState.OPEN
    harness.clock.advance(6.0)

    with pytest.raises(ApprovalPending):
        await client.act(ctx, "T-1", "cancel", {"reason": "dup"})

    assert _state(client.breaker) is BreakerState.CLOSED


@pytest.mark.parametrize(
    "code", ["approval_denied", "approval_expired", "approval_stale", "approval_withdrawn"]
)
async def test_a_resend_after_the_approval_ended_is_refused_once_without_retry(
    harness: Harness, code: str
) -> None:
    problem = {"status": 409, "code": code, "approval": {**APPROVAL, "status": "denied"}}
    harness.mock.post(CANCEL, status=409, payload=problem, repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=4)))

    with pytest.raises(ProblemResponse) as caught:
        await client.act(context(tool_name="ticket.cancel"), "T-1", "cancel", {"reason": "dup"})

    assert (caught.value.status, caught.value.code) == (409, code)
    assert caught.value.maybe_applied is False
    assert harness.request_count() == 1


async def test_a_202_without_an_approval_is_an_ordinary_success(harness: Harness) -> None:
    harness.mock.post(CANCEL, status=202, payload={"ticket": {"id": "T-1"}})
    client = harness.client()

    body = await client.act(context(tool_name="ticket.cancel"), "T-1", "cancel", {"reason": "x"})

    assert body == {"ticket": {"id": "T-1"}}

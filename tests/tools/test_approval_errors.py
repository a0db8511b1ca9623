"""What the model reads when a call waits for a person's approval, or when its approval
ended without the call running: codes, statuses, hints and a message it can act on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dispatch_client import ApprovalPending, ProblemResponse
from tools import HTTP_STATUS, from_dispatch_error

APPROVAL: dict[str, Any] = {
    "id": "0b5f3c4e-2d1a-4f6b-9c8d-7e6f5a4b3c2d",
    "status": "pending",
    "rule": "cancel",
    "approvers": ["supervisor", "dispatcher"],
    "requested_at": "2099-11-27T09:00:00Z",
    "expires_at": "2099-11-27T10:00:00Z",
    "reason": None,
    "decided_by": None,
}


def _refusal(code: str, **approval: Any) -> ProblemResponse:
    body = {"status": 409, "code": code, "approval": {**APPROVAL, **approval}}
    return ProblemResponse(409, body)


def test_a_held_call_is_approval_pending_with_everything_the_agent_needs_to_wait() -> None:
    error = from_dispatch_error(ApprovalPending(APPROVAL), "ticket.cancel")

    assert (error.code, HTTP_STATUS[error.code]) == ("approval_pending", 202)
    assert error.retryable is True
    assert error.retry_after_ms is not None
    assert 1000 <= error.retry_after_ms <= 30_000
    assert error.to_json()["details"] == {
        "approval_id": APPROVAL["id"],
        "approval_status": "pending",
        "expires_at": APPROVAL["expires_at"],
        "approvers": ["supervisor", "dispatcher"],
        "rule": "cancel",
        "requested_at": APPROVAL["requested_at"],
        "outcome": "none",
    }
    assert "SAME tool_call_id" in error.message
    assert "approval.status" in error.message
    assert APPROVAL["id"] in error.message


def test_the_poll_hint_never_points_past_the_expiry() -> None:
    from tools._approvals import approval_pending

    soon = {**APPROVAL, "expires_at": "2026-11-27T09:00:05Z"}
    error = approval_pending(soon, now=datetime(2026, 11, 27, 9, 0, tzinfo=UTC))

    assert error.retry_after_ms == 5000


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("approval_denied", "denied"),
        ("approval_expired", "expired"),
        ("approval_stale", "stale"),
        ("approval_withdrawn", "withdrawn"),
    ],
)
def test_an_ended_approval_is_approval_denied_final_and_names_its_status(
    code: str, status: str
) -> None:
    error = from_dispatch_error(_refusal(code, status=status, reason="not now"), "ticket.cancel")

    assert (error.code, HTTP_STATUS[error.code]) == ("approval_denied", 409)
    assert error.retryable is False
    assert error.retry_after_ms is None
    assert error.to_json()["details"] == {
        "approval_id": APPROVAL["id"],
        "approval_status": status,
        "reason": "not now",
        "outcome": "none",
    }


def test_a_denial_quotes_the_reason_and_says_nothing_was_done() -> None:
    error = from_dispatch_error(
        _refusal(
            "approval_denied",
            status="denied",
            reason="customer still wants the visit",
            decided_by={"id": "sup-1", "role": "supervisor"},
        ),
        "ticket.cancel",
    )

    assert "customer still wants the visit" in error.message
    assert "Nothing was done" in error.message


def test_a_stale_approval_tells_the_agent_to_read_the_ticket_and_ask_anew() -> None:
    error = from_dispatch_error(_refusal("approval_stale", status="stale"), "ticket.cancel")

    assert "ticket.get" in error.message
    assert "NEW tool_call_id" in error.message
    assert "nothing was done" in error.message

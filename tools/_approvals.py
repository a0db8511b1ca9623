"""The tool errors of a call held for a person's approval (dispatch-api decides which calls;
the bridge only says what that means to the model, in words it can act on literally)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas import parse_datetime

# The module, not the name: _errors imports this module while it is still being defined.
from . import _errors

#: dispatch-api's 409 codes for a re-sent call whose approval ended without running it.
APPROVAL_REFUSALS = {
    "approval_denied": "denied",
    "approval_expired": "expired",
    "approval_stale": "stale",
    "approval_withdrawn": "withdrawn",
}
#: How often a waiting agent is told to look again, at most (it never exceeds the expiry).
POLL_HINT_MS = 30_000


def approval_pending(approval: dict[str, Any], now: datetime | None = None) -> _errors.ToolError:
    """The call is held until a person decides (nothing ran): wait, then re-send it as is."""
    approvers = [str(r) for r in approval.get("approvers") or []]
    expires_at = approval.get("expires_at")
    return _errors.ToolError(
        "approval_pending",
        f"This call needs a person's approval (rule {approval.get('rule')!r}; approvers:"
        f" {', '.join(approvers) or 'none'}). It is held until"
        f" {expires_at}. Wait, then re-send the SAME call with the SAME tool_call_id to get"
        " its result, or call approval.status with approval_id"
        f" {approval.get('id')!r} to see the decision. Do not re-send it with a new"
        " tool_call_id: that would ask for a second approval.",
        retryable=True,
        retry_after_ms=_poll_hint(expires_at, now),
        details={
            "approval_id": approval.get("id"),
            "approval_status": "pending",
            "expires_at": expires_at,
            "approvers": approvers,
            "rule": approval.get("rule"),
            "requested_at": approval.get("requested_at"),
        },
    )


def approval_denied(approval: Any, code: str) -> _errors.ToolError:
    """The call's approval ended without the call running (denied, expired, stale,
    withdrawn); its message says what to do next."""
    view: dict[str, Any] = approval if isinstance(approval, dict) else {}
    status = APPROVAL_REFUSALS.get(code, str(view.get("status")))
    reason = view.get("reason")
    match status:
        case "stale":
            message = (
                "The ticket changed after this call was asked for, so the approval no longer"
                " fits and nothing was done. Read the ticket again (ticket.get) and, if the"
                " call is still needed, ask again with a NEW tool_call_id."
            )
        case "expired":
            message = (
                "Nobody approved this call before its approval expired; nothing was done. If"
                " it is still needed, ask again with a NEW tool_call_id."
            )
        case "withdrawn":
            message = "This call's approval request was withdrawn; nothing was done."
        case _:
            by = view.get("decided_by") or {}
            message = (
                f"A person ({by.get('role', 'approver')}) denied this call"
                f"{': ' + str(reason) if reason else ''}. Nothing was done. Do not re-send it;"
                " report the decision, or take a different action."
            )
    return _errors.ToolError(
        "approval_denied",
        message,
        details={"approval_id": view.get("id"), "approval_status": status, "reason": reason},
    )


def _poll_hint(expires_at: Any, now: datetime | None) -> int:
    """Look again in at most POLL_HINT_MS, never later than the expiry (at least 1 s)."""
    try:
        left = (parse_datetime(str(expires_at)) - (now or datetime.now(UTC))).total_seconds()
    except ValueError:
        return POLL_HINT_MS
    return max(1000, min(POLL_HINT_MS, int(left * 1000)))

"""Tool errors an LLM can act on: a bounded set of codes, each with a message written for
the model, whether retrying may help, when, and machine-readable details.

`from_dispatch_error` is the one place dispatch_client's errors become tool errors.

Every tool error says what is known about the call's effect (`details.outcome`):
`none` (nothing was applied anywhere: safe to call again under a new tool_call_id) or
`unknown` (some try may have been applied: only a re-send with the SAME tool_call_id can
tell, as dispatch-api then replays the stored outcome). It comes from the history of all
the call's tries (`DispatchError.maybe_applied`), never from the last try alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dispatch_client import (
    ApprovalPending,
    AttemptTimedOut,
    CircuitOpen,
    DeadlineExceeded,
    DispatchError,
    InvalidResponse,
    ProblemResponse,
    TransportFailure,
)

from ._approvals import APPROVAL_REFUSALS, approval_denied, approval_pending

#: Every code a tool call can fail with (DESIGN section 5), and its HTTP status on REST.
HTTP_STATUS: dict[str, int] = {
    "invalid_arguments": 422,
    "unknown_tool": 404,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "invalid_transition": 409,
    "evidence_missing": 422,
    "idempotency_conflict": 422,
    "in_progress": 409,
    "rate_limited": 429,
    "upstream_timeout": 504,
    "upstream_unavailable": 503,
    "upstream_error": 502,
    "deadline_exceeded": 504,
    "internal": 500,
    # A person must approve the call first; it is durably held (REST: 202 Accepted).
    "approval_pending": 202,
    "approval_denied": 409,
}
CODES = frozenset(HTTP_STATUS)

_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "code", "instance"})

#: What a tool error knows about the call's effect (serialized as `details.outcome`).
OUTCOMES = frozenset({"none", "unknown"})
NOTHING_CHANGED = " Nothing was changed."
OUTCOME_UNKNOWN = (
    " An earlier try of this call may have been applied: re-send it with the same"
    " tool_call_id to learn the outcome (a new tool_call_id risks doing it twice)."
)
REPLAYED = (
    " This is the stored outcome of an earlier call with this tool_call_id, replayed, not"
    " a new attempt: re-sending it returns the same answer. To try again (e.g. after fixing"
    " what it names), call with a NEW tool_call_id."
)


@dataclass(frozen=True, slots=True)
class ToolError(Exception):
    code: str
    message: str
    retryable: bool = False
    retry_after_ms: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: `none` by default: most tool errors are refusals before dispatch-api is called.
    outcome: Literal["none", "unknown"] = "none"

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown tool error code {self.code!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "retry_after_ms": self.retry_after_ms,
            "details": {**self.details, "outcome": self.outcome},
        }


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, round(seconds * 1000))


def from_dispatch_error(exc: DispatchError, tool: str) -> ToolError:
    """Translate what went wrong talking to dispatch-api into a tool error for the model,
    with its outcome (`unknown` when any try may have been applied) said in the message."""
    error = _translate(exc, tool)
    outcome: Literal["none", "unknown"] = "unknown" if exc.maybe_applied else "none"
    if exc.replayed:
        suffix = REPLAYED
    elif outcome == "unknown":
        suffix = OUTCOME_UNKNOWN
    elif error.retryable:
        suffix = NOTHING_CHANGED
    else:
        suffix = ""
    return replace(error, message=error.message + suffix, outcome=outcome)


def _translate(exc: DispatchError, tool: str) -> ToolError:
    if isinstance(exc, ProblemResponse):
        return _from_problem(exc, tool)
    if isinstance(exc, ApprovalPending):
        return approval_pending(exc.approval)
    if isinstance(exc, CircuitOpen):
        return ToolError(
            "upstream_unavailable",
            "The dispatch system is failing and calls to it are paused. Wait and retry later.",
            retryable=True,
            retry_after_ms=_ms(exc.retry_after_s),
        )
    if isinstance(exc, DeadlineExceeded):
        return ToolError(
            "deadline_exceeded",
            "The dispatch system did not answer within this call's time limit.",
            retryable=True,
            retry_after_ms=1000,
        )
    if isinstance(exc, AttemptTimedOut):
        return ToolError(
            "upstream_timeout",
            "The dispatch system was too slow to answer.",
            retryable=True,
            retry_after_ms=1000,
        )
    if isinstance(exc, InvalidResponse):
        return ToolError(
            "upstream_error",
            "The dispatch system answered with something that is not JSON. This is not caused"
            " by the arguments; report it if it persists.",
        )
    if isinstance(exc, TransportFailure):
        return ToolError(
            "upstream_unavailable",
            "The dispatch system could not be reached. Retry shortly.",
            retryable=True,
            retry_after_ms=1000,
        )
    return ToolError("internal", f"Unexpected failure calling the dispatch system ({tool}).")


#: dispatch-api's scheduling refusals and the closed tool code each becomes: a double booking
#: is "the ticket refuses that now" (invalid_transition), the rest name a wrong argument.
_SCHEDULE_REFUSALS = {
    "schedule_conflict": "invalid_transition",
    "technician_not_found": "not_found",
    "technician_inactive": "invalid_arguments",
    "technician_lacks_skill": "invalid_arguments",
    "invalid_window": "invalid_arguments",
}


def _schedule_refusal(
    p: dict[str, Any], code: str, detail: str, details: dict[str, Any]
) -> ToolError:
    """A refused ticket.schedule, said so the model can pick what to try next."""
    message = f"Not scheduled: {detail.rstrip('.')}."
    free = p.get("earliest_free_window")
    if code == "schedule_conflict" and isinstance(free, dict):
        message += (
            f" The same technician is free from {free.get('window_start')} to"
            f" {free.get('window_end')}."
        )
    candidates = p.get("candidates")
    if isinstance(candidates, list) and candidates:
        shown = ", ".join(str(c) for c in candidates)
        message += f" Technicians who could take it in this window: {shown}."
    elif code != "invalid_window":
        message += " Find another technician with technician.list."
    if code == "invalid_window":
        message += f" Earliest allowed start: {p.get('not_before')}."
    message += " Call ticket.schedule again with the corrected arguments."
    return ToolError(_SCHEDULE_REFUSALS[code], message, details=details)


def _from_problem(exc: ProblemResponse, tool: str) -> ToolError:
    p = exc.problem
    detail = str(p.get("detail") or exc.code)
    details = {k: v for k, v in p.items() if k not in _PROBLEM_MEMBERS}
    details["upstream_code"] = exc.code
    retry_ms = _ms(exc.retry_after_s)
    status, code = exc.status, exc.code
    if code == "evidence_missing":
        labels = ", ".join(
            f"{m.get('kind')}{':' + m['tag'] if m.get('tag') else ''}"
            for m in p.get("missing_evidence", [])
            if isinstance(m, dict)
        )
        return ToolError(
            "evidence_missing",
            f"The ticket cannot be completed: required evidence is missing ({labels})."
            + (
                ""
                if exc.replayed
                else " Attach each item with evidence.attach, then call tech.complete again."
            ),
            details=details,
        )
    if code in APPROVAL_REFUSALS:
        return approval_denied(p.get("approval"), code)
    if code == "idempotency_conflict":
        return ToolError(
            "idempotency_conflict",
            "This tool_call_id was already used with different arguments. Use a new"
            " tool_call_id for a new call.",
            details=details,
        )
    if status == 409 and code in ("request_in_progress", "ticket_busy"):
        return ToolError(
            "in_progress",
            "This ticket is being changed by another call right now. Retry shortly.",
            retryable=True,
            retry_after_ms=retry_ms or 1000,
            details=details,
        )
    if code in _SCHEDULE_REFUSALS:
        return _schedule_refusal(p, code, detail, details)
    if code == "evidence_limit_reached":
        # A rule of the ticket, not of its state; invalid_transition is the closed code
        # that says "this ticket refuses that action now, do not retry".
        return ToolError(
            "invalid_transition",
            f"The ticket already holds {p.get('count')} evidence items, the most one ticket"
            f" may hold ({p.get('limit')}); nothing was attached. Do not retry. Check what is"
            " attached with ticket.get (evidence_summary) before attaching anything else.",
            details=details,
        )
    if status == 409:
        allowed = ", ".join(p.get("allowed_actions", [])) or "none"
        return ToolError(
            "invalid_transition",
            f"{detail.rstrip('.')}. Actions the ticket allows now: {allowed}.",
            details=details,
        )
    if status in (400, 413, 415, 422):
        return ToolError(
            "invalid_arguments",
            f"The dispatch system refused the arguments: {detail}. Correct them and call"
            f" {tool} again.",
            details=details,
        )
    if status == 403:
        return ToolError("forbidden", f"Not allowed: {detail}.", details=details)
    if status == 404:
        return ToolError(
            "not_found",
            f"{detail}. Check the id (queue.view lists tickets).",
            details=details,
        )
    if status == 429:
        return ToolError(
            "rate_limited",
            "The dispatch system is rate limiting. Retry after the indicated delay.",
            retryable=True,
            retry_after_ms=retry_ms or 1000,
            details=details,
        )
    if status in (502, 503):
        return ToolError(
            "upstream_unavailable",
            "The dispatch system is temporarily unavailable. Retry shortly.",
            retryable=True,
            retry_after_ms=retry_ms or 1000,
            details=details,
        )
    if status == 504:
        return ToolError(
            "upstream_timeout",
            "The dispatch system timed out.",
            retryable=True,
            retry_after_ms=retry_ms or 1000,
            details=details,
        )
    return ToolError(
        "upstream_error",
        f"The dispatch system failed ({status} {code}). This is not caused by the arguments.",
        details=details,
    )

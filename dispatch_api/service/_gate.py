"""The approval gate of ticket actions, and the approval's JSON view.

Inside the action's transaction, after its Idempotency-Key is claimed and its ticket locked:
a call that already has an approval (same principal and request id) is answered by how the
approval stands; otherwise the policy decides whether this call needs one. A new approval
answers 202, and the key's claim is released (the answer is `transient`), so the re-sent
call comes back here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from ..domain import (
    ACTION_TOOLS,
    GATED_ACTIONS,
    ActorType,
    ApprovalPolicy,
    Command,
    Ticket,
    required_approval,
)
from ..errors import ApiError, Conflict, Unprocessable, problem
from ..store import ApprovalRecord, IdempotencyKey, StoredResponse, TicketRecord, tickets
from ..store import approvals as store
from ._caller import Caller, event_for
from ._dry_run import ApprovalCheck

#: The problem code a re-sent call gets once its approval ended without running it.
REFUSALS = {
    "denied": "approval_denied",
    "expired": "approval_expired",
    "stale": "approval_stale",
    "withdrawn": "approval_withdrawn",
}
_MESSAGES = {
    "denied": "a person denied this call; nothing was done",
    "expired": "nobody decided on this call in time; the approval expired and nothing was done",
    "stale": "the ticket changed after this call was asked for; nothing was done: read the"
    " ticket again and, if the action is still needed, ask again with a new request id",
    "withdrawn": "the requester withdrew this call; nothing was done",
}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def approval_view(a: ApprovalRecord) -> dict[str, Any]:
    """The approval as every answer that carries one shows it (contract 18)."""
    result = None
    if a.result_status is not None and a.result_body is not None:
        result = {"status": a.result_status, "body": orjson.loads(a.result_body)}
    return {
        "id": a.id,
        "status": a.status,
        "tool": a.tool,
        "action": a.action,
        "ticket_id": a.ticket_id,
        "ticket_version": a.ticket_version,
        "ticket_state": a.ticket_state,
        "ticket_priority": a.ticket_priority,
        "arguments": a.arguments,
        "arguments_sha256": a.arguments_sha256,
        "request_id": a.request_id,
        "requested_by": {
            "type": str(a.requested_by.type),
            "id": a.requested_by.id,
            "role": str(a.requested_by.role),
        },
        "rule": a.rule,
        "rule_version": a.rule_version,
        "approvers": list(a.approvers),
        "requested_at": _iso(a.requested_at),
        "expires_at": _iso(a.expires_at),
        "decided_at": _iso(a.decided_at),
        "decided_by": (
            None if a.decided_by_id is None else {"id": a.decided_by_id, "role": a.decided_by_role}
        ),
        "reason": a.reason,
        "result": result,
    }


def refusal(a: ApprovalRecord) -> Conflict:
    """409 for a call whose approval ended without running it, naming why."""
    detail = _MESSAGES[a.status]
    if a.status == "denied" and a.reason:
        detail = f"{detail}; reason: {a.reason}"
    return Conflict(REFUSALS[a.status], detail, extensions={"approval": approval_view(a)})


def answer(a: ApprovalRecord) -> StoredResponse:
    """What a call that already has approval `a` gets now."""
    if a.status == "pending":
        return pending(a)
    if a.status in REFUSALS:
        return _problem(refusal(a))
    # Ran already (executed, or approved and refused by the domain): its answer, replayed
    # (the key that stored it may have been purged since).
    assert a.result_status is not None
    assert a.result_body is not None
    return StoredResponse(a.result_status, a.result_body, replayed=True)


def pending(a: ApprovalRecord) -> StoredResponse:
    return StoredResponse(202, orjson.dumps({"approval": approval_view(a)}), transient=True)


def _problem(error: ApiError) -> StoredResponse:
    return StoredResponse(error.status, orjson.dumps(problem(error)))


def arguments_sha256(arguments: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def gate(
    conn: asyncpg.Connection,
    policy: ApprovalPolicy,
    caller: Caller,
    key: IdempotencyKey,
    record: TicketRecord,
    command: Command,
    arguments: Mapping[str, Any] | None,
    now: datetime,
    refused: bool = False,
) -> StoredResponse | None:
    """None when the call may run now; else its answer (202 pending, 409, or the replay).

    A call that already has an approval is answered by it; a new one the domain `refused`
    runs on to its refusal (an approver would be asked to approve a call that cannot run).

    Only an agent's call through the gateway (an `agent` actor naming its tool) is gated: a
    person calling dispatch-api directly decides for themself. The tool is the action's own
    (whatever the header names), so a call cannot slip past a rule under another name.
    """
    actor = caller.actor
    if actor.type is not ActorType.AGENT or not actor.tool_name:
        return None
    if command.action not in GATED_ACTIONS:
        return None
    found = await store.find(conn, caller.principal.id, caller.request_id)
    if found is not None:
        if (found.key.key, found.key.fingerprint) != (key.key, key.fingerprint):
            raise Unprocessable(
                "idempotency_conflict",
                "this request id already asked approval for a different call;"
                " use a new request id (tool_call_id) for a new call",
                extensions={"approval_id": found.id},
            )
        return answer(found)
    if refused:
        return None
    body = dict(arguments or {})
    tool = ACTION_TOOLS[command.action]
    rule = required_approval(policy, tool, body, record.ticket)
    if rule is None:
        return None
    ticket = record.ticket
    approval = ApprovalRecord(
        id=str(uuid.uuid4()),
        principal_id=caller.principal.id,
        request_id=caller.request_id,
        key=key,
        action=key.path.rsplit("/", 1)[-1],  # the route's action name (contact-attempts)
        tool=tool,
        arguments=body,
        arguments_sha256=arguments_sha256(body),
        requested_by=actor,
        correlation_id=caller.correlation_id,
        trace_id=caller.trace_id,
        ticket_id=ticket.id,
        ticket_version=record.last_seq,
        ticket_state=str(ticket.state),
        ticket_priority=None if ticket.priority is None else str(ticket.priority),
        rule=rule.name,
        rule_version=rule.version,
        approvers=tuple(str(r) for r in rule.approvers),
        requested_at=now,
        expires_at=now + timedelta(minutes=rule.expires_after_minutes),
    )
    await store.insert(conn, approval)
    seq = record.last_seq + 1
    event = event_for(caller, ticket.id, seq, now, "approval_requested", ticket.state, ticket.state)
    details = {
        "approval_id": approval.id,
        "action": approval.action,
        "rule": rule.name,
        "rule_version": approval.rule_version,
        "expires_at": _iso(approval.expires_at),
        "approvers": list(approval.approvers),
    }
    await tickets.append_event(conn, replace(event, details=details))
    return pending(approval)


def would_gate(policy: ApprovalPolicy) -> ApprovalCheck:
    """The dry runs' question to `policy`: would this agent call wait for a person?"""

    def check(tool: str, arguments: Mapping[str, Any], ticket: Ticket | None) -> Any:
        rule = None if ticket is None else required_approval(policy, tool, arguments, ticket)
        if rule is None:
            return None
        return {
            "rule": rule.name,
            "rule_version": rule.version,
            "approvers": [str(r) for r in rule.approvers],
            "expires_after_minutes": rule.expires_after_minutes,
        }

    return check

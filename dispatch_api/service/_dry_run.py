"""Dry runs: what a mutation would do now, learned by doing it and rolling it back.

A dry run runs the real code path of the mutation (the domain's decision, the scheduling
rules with the exclusion constraint, the SLA advance, the evidence rules) inside a
transaction that is ALWAYS rolled back. Simulating instead would drift from what a real
call does; rolling back leaves no ticket change, no timeline event, no evidence and no
Idempotency-Key (none is claimed), and counts no transition (the metrics are counted by
the real path only after COMMIT).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ..domain import ActorType, Ticket
from ..store import ConnectionPool, StoredResponse, TicketRecord, connection, tickets
from ._views import ticket_view

#: The approval policy's answer to "would this call need approval?": (tool name, the
#: action's body, the locked ticket or None for a create) -> {"rule", "rule_version",
#: "approvers", "expires_after_minutes"} or None. Injected: the policy lives elsewhere.
ApprovalCheck = Callable[[str, Mapping[str, Any], Ticket | None], dict[str, Any] | None]

Work = Callable[[asyncpg.Connection, datetime], Awaitable[StoredResponse]]


def no_approval(tool: str, arguments: Mapping[str, Any], ticket: Ticket | None) -> None:
    """The default policy of a service built without one: nothing needs approval."""
    return None


@dataclass(frozen=True, slots=True)
class DryRun:
    """Given instead of an Idempotency-Key: answer what the call would do, change nothing."""

    ticket_id: uuid.UUID | None
    arguments: Mapping[str, Any]
    #: Only calls an agent makes through a gateway (a tool name) can be gated.
    actor_type: ActorType
    tool_name: str | None


class _Rehearsed(Exception):
    """Raised out of the transaction so that it rolls back, carrying the answer."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__("dry run rolled back")
        self.answer = answer


async def rehearse(
    pool: ConnectionPool, now: datetime, dry: DryRun, work: Work, approval: ApprovalCheck
) -> StoredResponse:
    """The dry-run answer (200) to `work`; ApiErrors (404, 403, ...) raise as for a real call."""
    try:
        async with connection(pool) as conn, conn.transaction():
            before = None
            if dry.ticket_id is not None:
                # Locked first, as the real call locks it: what it sees is what it decides on.
                before = await tickets.lock(conn, dry.ticket_id)
            response = await work(conn, now)
            rejection = None
            if response.status >= 300 and before is not None and dry.ticket_id is not None:
                # The rejection event the real call would record (and roll back here).
                found = await tickets.timeline(conn, dry.ticket_id, before.last_seq, 1)
                rejection = found[0].type if found else None
            gate = None
            if dry.actor_type is ActorType.AGENT and dry.tool_name is not None:
                ticket = None if before is None else before.ticket
                gate = approval(dry.tool_name, dry.arguments, ticket)
            raise _Rehearsed(_answer(before, response, rejection, gate))
    except _Rehearsed as done:
        return StoredResponse(200, orjson.dumps(done.answer))


def _answer(
    before: TicketRecord | None,
    response: StoredResponse,
    rejection_event: str | None,
    approval: dict[str, Any] | None,
) -> dict[str, Any]:
    body = orjson.loads(response.body)
    accepted = response.status < 300
    sla_before = None if before is None else ticket_view(before)["sla"]
    answer: dict[str, Any] = {"dry_run": True, "accepted": accepted}
    if accepted:
        event = body["event"]
        moved = event["from_state"] != event["to_state"]
        answer["transition"] = (
            {"from": event["from_state"], "to": event["to_state"]} if moved else None
        )
        answer["event_type"] = event["type"]
        answer["ticket"] = body["ticket"]
        answer["problem"] = None
        sla_after = body["ticket"]["sla"]
    else:
        answer["transition"] = None
        answer["event_type"] = rejection_event
        answer["ticket"] = None
        # The rejection's event was rolled back: its seq names nothing.
        answer["problem"] = {k: v for k, v in body.items() if k != "event_seq"}
        sla_after = sla_before
    answer["sla"] = {
        "before": sla_before,
        "after": sla_after,
        "changed": sorted(
            k for k in (sla_after or {}) if sla_before is None or sla_before[k] != sla_after[k]
        ),
    }
    answer["approval"] = approval
    if "evidence" in body:  # an attachment: the item it would add
        answer["evidence"] = body["evidence"]
    return answer

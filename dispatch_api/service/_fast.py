"""Ticket actions in two database round trips: read, decide in Python, write atomically.

The transaction path (`TicketService._idempotent`) takes six to seven: BEGIN, claim the key,
lock the ticket, read its evidence, write, store the answer, COMMIT. Here one read statement
sees the ticket, its evidence and the key without locking, and one statement
(`act_on_ticket`) claims the key with its answer, applies the change only if the ticket is
still at the version read, and appends the event. Every change to a ticket (evidence
included) bumps its `last_seq`, so "still at the version read" means the decision was taken
on what is there now: the same serialisation the row lock gives, checked instead of waited
for. A ticket changed in between is read again, a few times, then the transaction path
takes over.

Only plain changes take this path. A call the transaction path would answer differently
for reasons it decides under its lock falls back to it before anything is written: a
missing or hidden ticket, a rejection (stored with its event), an approval to ask or
answer, a booking of a technician's time (the diary lock and exclusion constraint), a
schedule (its review reads other tickets).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ..domain import (
    ACTION_TOOLS,
    ASSIGNED_STATES,
    GATED_ACTIONS,
    Accepted,
    ActorType,
    ApprovalPolicy,
    Command,
    IncidentTemplate,
    SlaState,
    SlaTargets,
    Ticket,
    advance,
    decide,
    may_access,
    required_approval,
)
from ..store import (
    ConnectionPool,
    Event,
    EvidenceRecord,
    IdempotencyKey,
    StoredResponse,
    TicketRecord,
    actions,
    connection,
)
from ..store import _evidence as evidence_store
from ._caller import Caller, event_for
from ._views import event_view, evidence_view, ticket_view

#: Reads of a ticket that changed under us before the transaction path takes over: a busy
#: ticket then waits in line on its row lock instead of spinning.
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Change:
    """An accepted action, decided: what to write and what to answer."""

    after: Ticket
    sla: SlaState
    event: Event
    response: StoredResponse


def accepted_response(
    record: TicketRecord,
    after: Ticket,
    sla: SlaState,
    event: Event,
    now: datetime,
    new_evidence: EvidenceRecord | None = None,
) -> StoredResponse:
    """The answer to an accepted action, on either path: the ticket as it now is."""
    before = record.ticket
    changed = before.state is not after.state
    # The view shows the newest items: the one just attached joins them.
    evidence = (record.evidence + ((new_evidence,) if new_evidence else ()))[
        -evidence_store.TICKET_EVIDENCE_ITEMS :
    ]
    updated = TicketRecord(
        after,
        record.created_at,
        now,
        now if changed else record.state_entered_at,
        event.seq,
        evidence,
        sla,
    )
    result = {"ticket": ticket_view(updated), "event": event_view(event)}
    if new_evidence is not None:
        body = {**result, "evidence": evidence_view(new_evidence, before.id)}
        return StoredResponse(201, orjson.dumps(body))
    transition = (str(before.state), str(after.state)) if changed else None
    return StoredResponse(200, orjson.dumps(result), transition=transition)


def plain_change(
    caller: Caller,
    record: TicketRecord,
    command: Command,
    now: datetime,
    details: Mapping[str, Any],
    template: IncidentTemplate | None,
    targets: SlaTargets,
) -> Change | None:
    """The change `command` makes, when it is a plain one (see the module's docstring)."""
    before = record.ticket
    decision = decide(before, command, template)
    if not isinstance(decision, Accepted):
        return None
    after = decision.ticket
    if after.state in ASSIGNED_STATES and after.window_start is not None:
        return None
    reason = getattr(command, "reason", None)
    event = event_for(
        caller,
        before.id,
        record.last_seq + 1,
        now,
        decision.event_type,
        before.state,
        after.state,
        reason,
        {**decision.details, **details},
    )
    sla = advance(record.sla, before, after, now, record.created_at, targets)
    return Change(after, sla, event, accepted_response(record, after, sla, event, now))


def _gated(caller: Caller, command: Command) -> bool:
    """Whether the approval gate looks at this call at all (see `gate`)."""
    actor = caller.actor
    return (
        actor.type is ActorType.AGENT and bool(actor.tool_name) and command.action in GATED_ACTIONS
    )


async def act(
    pool: ConnectionPool,
    caller: Caller,
    key: IdempotencyKey,
    ticket_id: uuid.UUID,
    command: Command,
    details: Mapping[str, Any],
    arguments: Mapping[str, Any] | None,
    templates: Mapping[str, IncidentTemplate],
    targets: SlaTargets,
    policy: ApprovalPolicy,
    now: datetime,
) -> StoredResponse | None:
    """The answer, written and committed (or replayed); None when the transaction path
    must take the call (nothing was written)."""
    gated = _gated(caller, command)
    async with connection(pool) as conn:
        for _ in range(ATTEMPTS):
            seen = await actions.read(conn, ticket_id, key, caller.request_id if gated else None)
            if seen.stored is not None:
                return seen.stored
            record = seen.record
            if record is None or not may_access(caller.actor, record.ticket):
                return None
            if seen.approval_asked:
                return None
            template = templates.get(record.ticket.incident_type or "")
            change = plain_change(caller, record, command, now, details, template, targets)
            if change is None:
                return None
            if gated:
                tool = ACTION_TOOLS[command.action]
                if required_approval(policy, tool, dict(arguments or {}), record.ticket):
                    return None
            done = await actions.apply(
                conn, key, change.response, record, change.after, change.sla, change.event
            )
            if isinstance(done, StoredResponse):
                return done
            if done == "applied":
                return change.response
    return None

"""Tickets, their evidence and their timeline in PostgreSQL.

A ticket change and its timeline event are written by one statement; the ticket row lock
taken by `lock` serialises changes to one ticket and numbers its events without gaps.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from ..domain import EvidenceSummary, HoldCause, Priority, SlaState, State, Ticket
from ._evidence import (
    KINDS,
    QUEUE_EVIDENCE_ITEMS,
    TICKET_EVIDENCE_ITEMS,
    EvidenceRecord,
    from_json,
    with_evidence,
)


@dataclass(frozen=True, slots=True)
class TicketRecord:
    ticket: Ticket
    created_at: datetime
    updated_at: datetime
    state_entered_at: datetime
    last_seq: int
    #: The newest items only (oldest of them first); `ticket.evidence` counts every item.
    evidence: tuple[EvidenceRecord, ...]
    sla: SlaState = field(default_factory=SlaState)
    #: The newest timeline event (at, type, actor_type, actor_id, role, tool_name), when the
    #: query asked for it (listings do: RB1 needs the last mutation in one request).
    last_event: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One timeline event as written; `seq` is assigned under the ticket's row lock."""

    ticket_id: str
    seq: int
    at: datetime
    type: str
    from_state: str | None
    to_state: str | None
    reason: str | None
    actor_type: str
    actor_id: str
    role: str
    tool_name: str | None
    request_id: str | None
    correlation_id: str | None
    trace_id: str | None
    details: dict[str, Any]


_LAST_EVENT_JSON = """
    SELECT jsonb_build_object('at', e.at, 'type', e.type, 'actor_type', e.actor_type,
        'actor_id', e.actor_id, 'role', e.role, 'tool_name', e.tool_name)
    FROM timeline_events e WHERE e.ticket_id = t.id AND e.seq = t.last_seq
"""

_SELECT_TICKET = (
    f"SELECT t.*, {with_evidence(TICKET_EVIDENCE_ITEMS)} FROM tickets t WHERE t.id = $1"
)

#: The ticket columns `_ticket_values` fills, in its order ($2 onwards in insert and save).
_TICKET_COLUMNS = (
    "state",
    "priority",
    "customer_name",
    "contact_phone",
    "contact_email",
    "site_address",
    "incident_type",
    "description",
    "technician_id",
    "window_start",
    "window_end",
    "state_before_hold",
    "hold_cause",
    "response_due_at",
    "resolution_due_at",
    "sla_paused_since",
    "sla_paused_s",
    "provider_hold_since",
    "provider_hold_s",
    "responded_at",
    "resolved_at",
)
#: The event columns `_event_values` fills, in its order (after ticket_id = $1).
_EVENT_COLUMNS = (
    "seq",
    "at",
    "type",
    "from_state",
    "to_state",
    "reason",
    "actor_type",
    "actor_id",
    "role",
    "tool_name",
    "request_id",
    "correlation_id",
    "trace_id",
    "details",
)
_N = len(_TICKET_COLUMNS)
_TICKET_COLUMN_LIST = ", ".join(_TICKET_COLUMNS)


def _params(first: int, count: int = _N) -> str:
    return ", ".join(f"${i}" for i in range(first, first + count))


def _event_insert(first: int) -> str:
    """INSERT of one event for ticket $1, its values numbered from `first`."""
    return (
        f"INSERT INTO timeline_events (ticket_id, {', '.join(_EVENT_COLUMNS)})"
        f" VALUES ($1, {_params(first, len(_EVENT_COLUMNS))})"
    )


#: The ticket, locked until the transaction ends: $1 its id.
_LOCK = "SELECT t.* FROM tickets t WHERE t.id = $1 FOR UPDATE OF t"
#: Its evidence, read by a statement of its own once the lock is held: subqueries of the
#: locking statement would read the snapshot taken before it waited for the lock, missing
#: items a concurrent attach committed meanwhile (and so letting both pass the limit).
_EVIDENCE = f"SELECT {with_evidence(TICKET_EVIDENCE_ITEMS)} FROM (SELECT $1::uuid AS id) t"
#: $1 ticket id, $2.. the _TICKET_COLUMNS, then "state changed" (boolean), then the event.
_SAVE = (
    f"WITH t AS (UPDATE tickets SET ({_TICKET_COLUMN_LIST}) = ({_params(2)}),"
    f" updated_at = ${_N + 4}, last_seq = ${_N + 3},"
    f" state_entered_at = CASE WHEN ${_N + 2}::boolean THEN ${_N + 4} ELSE state_entered_at END"
    " WHERE id = $1) " + _event_insert(_N + 3)
)
_INSERT = (
    f"WITH t AS (INSERT INTO tickets (id, {_TICKET_COLUMN_LIST}, created_at, updated_at,"
    f" state_entered_at, last_seq) VALUES ($1, {_params(2)}, ${_N + 3}, ${_N + 3}, ${_N + 3},"
    f" ${_N + 2})) " + _event_insert(_N + 2)
)


def _ticket_values(t: Ticket, sla: SlaState) -> tuple[Any, ...]:
    return (
        str(t.state),
        None if t.priority is None else str(t.priority),
        t.customer_name,
        t.contact_phone,
        t.contact_email,
        t.site_address,
        t.incident_type,
        t.description,
        t.technician_id,
        t.window_start,
        t.window_end,
        None if t.state_before_hold is None else str(t.state_before_hold),
        None if t.hold_cause is None else str(t.hold_cause),
        sla.response_due_at,
        sla.resolution_due_at,
        sla.paused_since,
        sla.paused_s,
        sla.provider_hold_since,
        sla.provider_hold_s,
        sla.responded_at,
        sla.resolved_at,
    )


def _event_values(e: Event) -> tuple[Any, ...]:
    return (
        e.seq,
        e.at,
        e.type,
        e.from_state,
        e.to_state,
        e.reason,
        e.actor_type,
        e.actor_id,
        e.role,
        e.tool_name,
        e.request_id,
        e.correlation_id,
        e.trace_id,
        e.details,
    )


#: Members by stored value, as `KINDS` (a dict lookup instead of calling the enum).
_STATES: dict[str, State] = {s.value: s for s in State}
_PRIORITIES: dict[str | None, Priority | None] = {None: None, **{p.value: p for p in Priority}}
_HOLD_CAUSES: dict[str | None, HoldCause | None] = {None: None, **{c.value: c for c in HoldCause}}


def _record(row: asyncpg.Record | Mapping[str, Any]) -> TicketRecord:
    evidence = tuple(from_json(e) for e in row["evidence"])
    tally = tuple(
        EvidenceSummary(KINDS[g["kind"]], g["tag"], g["count"]) for g in row["evidence_tally"]
    )
    before_hold = row["state_before_hold"]
    ticket = Ticket(
        id=str(row["id"]),
        state=_STATES[row["state"]],
        priority=_PRIORITIES[row["priority"]],
        customer_name=row["customer_name"],
        contact_phone=row["contact_phone"],
        contact_email=row["contact_email"],
        site_address=row["site_address"],
        incident_type=row["incident_type"],
        description=row["description"],
        technician_id=row["technician_id"],
        window_start=row["window_start"],
        window_end=row["window_end"],
        state_before_hold=None if before_hold is None else _STATES[before_hold],
        hold_cause=_HOLD_CAUSES[row["hold_cause"]],
        evidence=tally,
    )
    sla = SlaState(
        row["response_due_at"],
        row["resolution_due_at"],
        row["sla_paused_since"],
        row["sla_paused_s"],
        row["provider_hold_since"],
        row["provider_hold_s"],
        row["responded_at"],
        row["resolved_at"],
    )
    return TicketRecord(
        ticket,
        row["created_at"],
        row["updated_at"],
        row["state_entered_at"],
        row["last_seq"],
        evidence,
        sla,
        row.get("last_event"),
    )


async def get(conn: asyncpg.Connection | asyncpg.Pool, ticket_id: uuid.UUID) -> TicketRecord | None:
    row = await conn.fetchrow(_SELECT_TICKET, ticket_id)
    return None if row is None else _record(row)


async def lock(conn: asyncpg.Connection, ticket_id: uuid.UUID) -> TicketRecord | None:
    """The ticket, locked until the transaction ends, or None when it does not exist; its
    evidence as counts per kind and tag plus the newest items, read after the lock."""
    row = await conn.fetchrow(_LOCK, ticket_id)
    if row is None:
        return None
    evidence = await conn.fetchrow(_EVIDENCE, ticket_id)
    assert evidence is not None  # it selects from a one-row subquery: always one row
    return _record({**dict(row), **dict(evidence)})


async def insert(conn: asyncpg.Connection, ticket: Ticket, sla: SlaState, event: Event) -> None:
    """Create the ticket together with its `created` event; the event's time is the ticket's."""
    await conn.execute(
        _INSERT,
        uuid.UUID(ticket.id),
        *_ticket_values(ticket, sla),
        *_event_values(event),
    )


async def save(
    conn: asyncpg.Connection, before: TicketRecord, after: Ticket, sla: SlaState, event: Event
) -> None:
    """Write the ticket's new values and append `event`, in one statement."""
    state_changed = before.ticket.state is not after.state
    await conn.execute(
        _SAVE,
        uuid.UUID(after.id),
        *_ticket_values(after, sla),
        state_changed,
        *_event_values(event),
    )


async def append_event(conn: asyncpg.Connection, event: Event) -> None:
    """Append an event that changes nothing else (a rejected action, a note, evidence)."""
    await conn.execute(
        "WITH t AS (UPDATE tickets SET last_seq = $2 WHERE id = $1) " + _event_insert(2),
        uuid.UUID(event.ticket_id),
        *_event_values(event),
    )


async def insert_evidence(
    conn: asyncpg.Connection, ticket_id: str, record: EvidenceRecord, content: bytes | None
) -> None:
    await conn.execute(
        "INSERT INTO evidence (id, ticket_id, kind, tag, content_type, size_bytes, sha256, uri,"
        " content, description, captured_by_type, captured_by_id, captured_by_role,"
        " captured_at, request_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        uuid.UUID(record.id),
        uuid.UUID(ticket_id),
        str(record.kind),
        record.tag,
        record.content_type,
        record.size_bytes,
        record.sha256,
        record.uri,
        content,
        record.description,
        record.captured_by_type,
        record.captured_by_id,
        record.captured_by_role,
        record.captured_at,
        record.request_id,
    )


async def evidence_content(
    conn: asyncpg.Connection | asyncpg.Pool, ticket_id: uuid.UUID, evidence_id: uuid.UUID
) -> tuple[str, bytes | None] | None:
    """(content type, bytes or None for URI-referenced evidence), or None when absent."""
    row = await conn.fetchrow(
        "SELECT content_type, content FROM evidence WHERE ticket_id = $1 AND id = $2",
        ticket_id,
        evidence_id,
    )
    if row is None:
        return None
    content = row["content"]
    return row["content_type"], None if content is None else bytes(content)


@dataclass(frozen=True, slots=True)
class TicketFilter:
    states: Sequence[str] = ()
    priorities: Sequence[str] = ()
    technician_id: str | None = None


async def list_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    where: TicketFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[TicketRecord]:
    """Tickets oldest first, keyset-paginated on (created_at, id), with their last event.

    Only the filters given appear in the SQL: "$1 is empty OR state = ANY($1)" would leave
    the planner's generic plan unable to use the (state, created_at, id) index.
    """
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    # One value is an equality, so the index also yields the (created_at, id) order.
    for column, values in (("state", where.states), ("priority", where.priorities)):
        if len(values) == 1:
            clauses.append(f"t.{column} = {arg(values[0])}")
        elif values:
            clauses.append(f"t.{column} = ANY({arg(list(values))}::text[])")
    if where.technician_id is not None:
        clauses.append(f"t.technician_id = {arg(where.technician_id)}")
    if after is not None:
        clauses.append(f"(t.created_at, t.id) > ({arg(after[0])}, {arg(after[1])}::uuid)")
    condition = " AND ".join(clauses) or "true"
    rows = await conn.fetch(
        f"SELECT t.*, {with_evidence(QUEUE_EVIDENCE_ITEMS)},"
        f" ({_LAST_EVENT_JSON}) AS last_event FROM tickets t WHERE {condition}"
        f" ORDER BY t.created_at, t.id LIMIT {arg(limit)}",
        *args,
    )
    return [_record(r) for r in rows]


async def get_many(
    conn: asyncpg.Connection | asyncpg.Pool, ids: list[uuid.UUID]
) -> list[TicketRecord]:
    """The tickets of `ids`, in that order, with their last event."""
    rows = await conn.fetch(
        f"SELECT t.*, {with_evidence(QUEUE_EVIDENCE_ITEMS)},"
        f" ({_LAST_EVENT_JSON}) AS last_event FROM tickets t WHERE t.id = ANY($1::uuid[])",
        ids,
    )
    by_id = {r["id"]: _record(r) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


async def timeline(
    conn: asyncpg.Connection | asyncpg.Pool, ticket_id: uuid.UUID, after_seq: int, limit: int
) -> list[Event]:
    rows = await conn.fetch(
        "SELECT ticket_id, seq, at, type, from_state, to_state, reason, actor_type, actor_id,"
        " role, tool_name, request_id, correlation_id, trace_id, details FROM timeline_events"
        " WHERE ticket_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        ticket_id,
        after_seq,
        limit,
    )
    return [Event(**{**dict(r), "ticket_id": str(r["ticket_id"])}) for r in rows]

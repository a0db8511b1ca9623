"""The JSON shapes of tickets, evidence and timeline events on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from ..domain import EvidenceKind, allowed_actions, allowed_tools, remaining_s
from ..store import Event, EvidenceRecord, TicketRecord


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is UTC:
        # What isoformat() writes, at less than half its cost: a ticket view holds
        # eleven of these. PostgreSQL's timestamptz and the service's clock both come as UTC; any
        # other zone (an offset in seconds, which orjson writes to the minute) takes the
        # slow way.
        return orjson.dumps(value)[1:-1].decode()
    return value.isoformat()


def evidence_view(e: EvidenceRecord, ticket_id: str) -> dict[str, Any]:
    return {
        "id": e.id,
        "ticket_id": ticket_id,
        "kind": str(e.kind),
        "tag": e.tag,
        "content_type": e.content_type,
        "size_bytes": e.size_bytes,
        "sha256": e.sha256,
        "uri": e.uri,
        "content_url": (
            f"/v1/tickets/{ticket_id}/evidence/{e.id}/content" if e.stored_inline else None
        ),
        "description": e.description,
        "captured_by": {
            "actor_type": e.captured_by_type,
            "actor_id": e.captured_by_id,
            "role": e.captured_by_role,
        },
        "captured_at": _iso(e.captured_at),
        "request_id": e.request_id,
    }


#: Kind-and-tag counts shown in a ticket view; `by_kind` always covers every item.
MAX_TAG_COUNTS = 50

_KIND_NAMES = tuple(str(k) for k in EvidenceKind)


def evidence_summary(record: TicketRecord) -> dict[str, Any]:
    """Counts of every evidence item, and where to page through them all: a ticket view
    embeds only the newest few items, however many the ticket holds."""
    t = record.ticket
    by_kind = dict.fromkeys(_KIND_NAMES, 0)
    tags: dict[tuple[str, str | None], int] = {}
    for group in t.evidence:
        by_kind[str(group.kind)] += group.count
        key = (str(group.kind), group.tag)
        tags[key] = tags.get(key, 0) + group.count
    ordered = sorted(tags.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    return {
        "total": t.evidence_count,
        "shown": len(record.evidence),
        "by_kind": by_kind,
        "by_kind_and_tag": [
            {"kind": kind, "tag": tag, "count": count}
            for (kind, tag), count in ordered[:MAX_TAG_COUNTS]
        ],
        "list_url": f"/v1/tickets/{t.id}/evidence",
    }


def ticket_view(record: TicketRecord) -> dict[str, Any]:
    t = record.ticket
    assignment = None
    if t.technician_id is not None:
        assignment = {
            "technician_id": t.technician_id,
            "window_start": _iso(t.window_start),
            "window_end": _iso(t.window_end),
        }
    hold = None
    if t.hold_cause is not None:
        hold = {"cause": str(t.hold_cause), "previous_state": str(t.state_before_hold)}
    return {
        "id": t.id,
        "state": str(t.state),
        "priority": None if t.priority is None else str(t.priority),
        "customer_name": t.customer_name,
        "contact_phone": t.contact_phone,
        "contact_email": t.contact_email,
        "site_address": t.site_address,
        "incident_type": t.incident_type,
        "description": t.description,
        "assignment": assignment,
        "hold": hold,
        "missing_fields": t.missing_fields,
        "allowed_actions": allowed_actions(t),
        "allowed_tools": allowed_tools(t),
        "evidence": [evidence_view(e, t.id) for e in record.evidence],
        "evidence_summary": evidence_summary(record),
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "state_entered_at": _iso(record.state_entered_at),
        "last_event_seq": record.last_seq,
        "sla": {
            "response_due_at": _iso(record.sla.response_due_at),
            "resolution_due_at": _iso(record.sla.resolution_due_at),
            "responded_at": _iso(record.sla.responded_at),
            "resolved_at": _iso(record.sla.resolved_at),
            "clock_paused": record.sla.paused_since is not None,
            "customer_hold_s": round(record.sla.paused_s, 3),
            "provider_hold_s": round(record.sla.provider_hold_s, 3),
        },
    }


def queue_view(
    record: TicketRecord, now: datetime, matching_technicians: int | None = None
) -> dict[str, Any]:
    """A ticket as a queue row: everything RB1 needs in one request — how long it has
    waited, how long its targets have left (negative: late), what was done to it last, and
    for a ticket ready to schedule, how many active technicians could take it."""
    sla = record.sla
    response_left = (
        None if sla.responded_at else remaining_s(sla.response_due_at, now, sla.paused_since)
    )
    resolution_left = (
        None if sla.resolved_at else remaining_s(sla.resolution_due_at, now, sla.paused_since)
    )
    last = record.last_event or {}
    return {
        **ticket_view(record),
        "time_in_state_s": round((now - record.state_entered_at).total_seconds(), 3),
        "response_remaining_s": None if response_left is None else round(response_left, 3),
        "resolution_remaining_s": None if resolution_left is None else round(resolution_left, 3),
        "last_event": {
            "at": last.get("at"),
            "type": last.get("type"),
            "actor_type": last.get("actor_type"),
            "actor_id": last.get("actor_id"),
            "role": last.get("role"),
            "tool_name": last.get("tool_name"),
        },
        "matching_technicians": matching_technicians,
    }


def event_view(e: Event) -> dict[str, Any]:
    return {
        "ticket_id": e.ticket_id,
        "seq": e.seq,
        "at": _iso(e.at),
        "type": e.type,
        "from_state": e.from_state,
        "to_state": e.to_state,
        "reason": e.reason,
        "actor_type": e.actor_type,
        "actor_id": e.actor_id,
        "role": e.role,
        "tool_name": e.tool_name,
        "request_id": e.request_id,
        "correlation_id": e.correlation_id,
        "trace_id": e.trace_id,
        "details": e.details,
    }

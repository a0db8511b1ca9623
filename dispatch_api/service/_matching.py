"""How many active technicians could take each ticket of a queue page."""

from __future__ import annotations

import asyncpg

from ..domain import State
from ..store import TicketRecord, technicians


async def matching_technicians(
    conn: asyncpg.Connection, records: list[TicketRecord]
) -> dict[str, int]:
    """Ticket id -> active technicians skilled for it, for the page's READY_TO_SCHEDULE
    tickets: one statement for the whole page (an index probe per distinct type)."""
    ready = {
        r.ticket.id: r.ticket.incident_type
        for r in records
        if r.ticket.state is State.READY_TO_SCHEDULE and r.ticket.incident_type is not None
    }
    if not ready:
        return {}
    counts = await technicians.count_matching_many(conn, list(ready.values()))
    return {tid: counts.get(kind, 0) for tid, kind in ready.items()}

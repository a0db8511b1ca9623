"""Who is asking, and the timeline event each of their actions appends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..domain import Actor
from ..store import Event, Principal


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking and under which ids; the actor is what the timeline records."""

    principal: Principal
    actor: Actor
    request_id: str
    correlation_id: str | None = None
    trace_id: str | None = None


def event_for(
    caller: Caller,
    ticket_id: str,
    seq: int,
    now: datetime,
    event_type: str,
    from_state: Any,
    to_state: Any,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> Event:
    """The event `caller` appends as number `seq` of the ticket's timeline."""
    return Event(
        ticket_id=ticket_id,
        seq=seq,
        at=now,
        type=event_type,
        from_state=None if from_state is None else str(from_state),
        to_state=None if to_state is None else str(to_state),
        reason=reason,
        actor_type=str(caller.actor.type),
        actor_id=caller.actor.id,
        role=str(caller.actor.role),
        tool_name=caller.actor.tool_name,
        request_id=caller.request_id,
        correlation_id=caller.correlation_id,
        trace_id=caller.trace_id,
        details={} if details is None else details,
    )

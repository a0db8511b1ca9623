"""The scheduling rules applied with what the database knows (domain `review`, store
`bookings`), and the answer to a double booking only the exclusion constraint caught."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import asyncpg

from ..domain import (
    Availability,
    Booking,
    Rejected,
    Schedule,
    SlaState,
    State,
    Ticket,
    WindowPolicy,
    conflict,
    review,
)
from ..store import Event, TicketRecord, bookings, technicians, tickets


def release(after: Ticket, event: Event, refused: Rejected) -> tuple[Ticket, Event]:
    """`after` back in READY_TO_SCHEDULE without its assignment, and its event saying which
    assignment was released and what took its window."""
    released = replace(
        after, state=State.READY_TO_SCHEDULE, technician_id=None, window_start=None, window_end=None
    )
    window = {
        "technician_id": after.technician_id,
        "window_start": None if after.window_start is None else after.window_start.isoformat(),
        "window_end": None if after.window_end is None else after.window_end.isoformat(),
        "conflict": refused.details.get("conflict"),
    }
    details = {**event.details, "assignment_released": window}
    return released, replace(event, to_state=str(released.state), details=details)


class ScheduleRules:
    def __init__(self, policy: WindowPolicy) -> None:
        self._policy = policy

    async def review(
        self, conn: asyncpg.Connection, ticket: Ticket, command: Schedule, now: datetime
    ) -> Rejected | None:
        """The rule `command` breaks, with who could take the ticket instead; None if none.

        Candidates are looked up only for a refusal: the happy path costs two indexed reads.
        """
        technician = await technicians.get(conn, command.technician_id)
        diary: list[Booking] = []
        if technician is not None:
            diary = await bookings.bookings(conn, technician.id, command.window_start, ticket.id)
        found = Availability(technician, diary)
        refused = review(ticket, command, found, now, self._policy)
        if refused is None or refused.code == "invalid_window":
            return refused
        others = await self._candidates(conn, ticket, command)
        return review(ticket, command, Availability(technician, diary, others), now, self._policy)

    async def save(
        self,
        conn: asyncpg.Connection,
        record: TicketRecord,
        after: Ticket,
        sla: SlaState,
        event: Event,
    ) -> Rejected | None:
        """Save a change that books the technician's time. The exclusion constraint's refusal
        (another booking committed since `review` looked) comes back as the conflict, with
        the savepoint rolled back so the rejection can still be recorded."""
        assert after.technician_id is not None  # the caller saves bookings only
        await bookings.lock_diary(conn, after.technician_id)
        try:
            async with conn.transaction():  # a savepoint: the outer transaction goes on
                await tickets.save(conn, record, after, sla, event)
        except asyncpg.ExclusionViolationError:
            # The constraint only covers rows with a technician and a window.
            assert after.window_start is not None
            assert after.window_end is not None
            booking = Schedule(after.technician_id, after.window_start, after.window_end)
            return await self.double_booked(conn, record.ticket, booking)
        return None

    async def double_booked(
        self, conn: asyncpg.Connection, ticket: Ticket, command: Schedule
    ) -> Rejected:
        """The conflict answer after the exclusion constraint refused the write (a booking
        committed after `review` looked): the clash as the database now shows it."""
        technician, start = command.technician_id, command.window_start
        diary = await bookings.bookings(conn, technician, start, ticket.id)
        start, end = command.window_start, command.window_end
        clash = next((b for b in diary if b.window_start < end and start < b.window_end), None)
        others = await self._candidates(conn, ticket, command)
        return conflict(ticket, command, clash, diary, others)

    async def _candidates(
        self, conn: asyncpg.Connection, ticket: Ticket, command: Schedule
    ) -> list[str]:
        return await bookings.candidates(
            conn,
            ticket.incident_type,
            command.window_start,
            command.window_end,
            command.technician_id,
        )

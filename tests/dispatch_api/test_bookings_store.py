"""What a schedule decision reads, on real PostgreSQL: a technician's diary (their other
active bookings that end after a start, earliest first) and who else is free in a window."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from dispatch_api.domain import Booking, Technician
from dispatch_api.store import bookings, technicians

DAY = datetime(2030, 1, 7, tzinfo=UTC)


def at(hour: float) -> datetime:
    return DAY + timedelta(hours=hour)


async def book(
    conn: asyncpg.Connection, technician: str, start: float, end: float, state: str = "SCHEDULED"
) -> str:
    """A ticket in `state` holding `technician` from hour `start` to `end` of DAY; its id."""
    ticket = uuid.uuid4()
    await conn.execute(
        "INSERT INTO tickets (id, state, incident_type, technician_id, window_start, window_end,"
        " created_at, updated_at, state_entered_at, last_seq)"
        " VALUES ($1, $2, 'water_leak', $3, $4, $5, $6, $6, $6, 0)",
        ticket,
        state,
        technician,
        at(start),
        at(end),
        DAY - timedelta(days=1),
    )
    return str(ticket)


async def test_the_diary_holds_the_booking_under_way_and_the_later_ones_in_order(
    conn: asyncpg.Connection,
) -> None:
    first = await book(conn, "tech-a", 8, 10)
    second = await book(conn, "tech-a", 10, 11, "DISPATCHED")
    third = await book(conn, "tech-a", 12, 13, "ON_SITE")
    await book(conn, "tech-a", 13, 14, "COMPLETED")  # finished: holds no time
    own = await book(conn, "tech-a", 14, 15)  # the ticket being scheduled
    await book(conn, "tech-b", 9, 10)  # someone else's

    async def diary(start: float) -> list[Booking]:
        return await bookings.bookings(conn, "tech-a", at(start), own)

    under_way = Booking(first, at(8), at(10))
    later = [Booking(second, at(10), at(11)), Booking(third, at(12), at(13))]
    assert await diary(7) == [under_way, *later]
    assert await diary(9) == [under_way, *later]  # started before 9, still under way
    assert await diary(10) == later  # windows are half-open: the first ends as 10:00 begins
    assert await diary(10.5) == later  # the second is under way at 10:30
    assert await diary(13) == []


async def test_the_diary_stops_at_its_limit_counting_the_booking_under_way(
    conn: asyncpg.Connection,
) -> None:
    made = [await book(conn, "tech-a", h, h + 1) for h in range(bookings.MAX_BOOKINGS + 5)]

    found = await bookings.bookings(conn, "tech-a", at(0.5), str(uuid.uuid4()))

    assert [b.ticket_id for b in found] == made[: bookings.MAX_BOOKINGS]


async def test_candidates_are_the_first_free_active_skilled_technicians_by_id(
    conn: asyncpg.Connection,
) -> None:
    for n in range(1, 11):
        skills = ("lockout",) if n == 4 else ("water_leak",)
        await technicians.create(conn, Technician(f"tech-{n:02}", f"T{n}", skills, active=n != 3))
    await book(conn, "tech-02", 9, 11)  # busy in the window
    await book(conn, "tech-06", 7, 9)  # ends as the window begins: free
    await book(conn, "tech-07", 9, 11, "CANCELLED")  # released: free

    async def free(skill: str | None) -> list[str]:
        return await bookings.candidates(conn, skill, at(9), at(10), "tech-01")

    async with conn.transaction():
        assert await free("water_leak") == ["tech-05", "tech-06", "tech-07", "tech-08", "tech-09"]
    async with conn.transaction():
        assert await free(None) == ["tech-04", "tech-05", "tech-06", "tech-07", "tech-08"]
    await book(conn, "tech-05", 9.5, 12)
    async with conn.transaction():
        assert await free("water_leak") == ["tech-06", "tech-07", "tech-08", "tech-09", "tech-10"]

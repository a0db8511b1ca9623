"""What a schedule decision needs beyond the technician: their other active assignments
around the window, and who else could take it. Each query is bound by an index: the
exclusion constraint's GiST index (migration 0005) for overlaps, the diary index (0010) for
order."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from ..domain import Booking

_ASSIGNED = "('SCHEDULED', 'DISPATCHED', 'ON_SITE')"
#: Bookings looked at to find the earliest free window; a technician's diary beyond this
#: many visits ahead is not searched (the answer then is after the last one seen).
MAX_BOOKINGS = 200
#: Other technicians suggested in a refusal.
MAX_CANDIDATES = 5
#: The advisory-lock class of technicians' diaries (the two-key form, so it cannot meet the
#: migrations' single-key lock).
_DIARY_LOCK = 0x0B00C
#: The technician's ($1) active assignments other than the ticket's own ($2).
_DIARY = (
    f" WHERE technician_id = $1 AND id <> $2 AND window_start IS NOT NULL AND state IN {_ASSIGNED}"
)


async def lock_diary(conn: asyncpg.Connection, technician_id: str) -> None:
    """Hold the technician's diary until the transaction ends.

    Two transactions writing overlapping bookings would each find the other's uncommitted
    row in the exclusion constraint's index and wait for it: PostgreSQL breaks that deadlock
    by failing one after `deadlock_timeout`. Taken in turn, the second sees the first's
    committed booking and gets a plain exclusion violation.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _DIARY_LOCK, technician_id)


async def bookings(
    conn: asyncpg.Connection, technician_id: str, start: datetime, ticket_id: str
) -> list[Booking]:
    """The technician's other active assignments that end after `start`, earliest first."""
    # Two parts, each on the index that answers it (migration 0010): the one booking under
    # way at `start` (active bookings never overlap, so at most one holds that instant),
    # found by the constraint's GiST index; and those starting from `start` on, read in
    # order from the diary index up to the limit. One GiST search for "everything overlapping
    # [start, ∞)" would read and sort every later booking of the technician to keep 200.
    # `NOT isempty`: an empty window overlaps nothing, as in the one-search form.
    rows = await conn.fetch(
        f"(SELECT id, window_start, window_end FROM tickets{_DIARY}"
        "  AND window_start < $3 AND tstzrange(window_start, window_end) @> $3)"
        " UNION ALL"
        f" (SELECT id, window_start, window_end FROM tickets{_DIARY}"
        "  AND window_start >= $3 AND NOT isempty(tstzrange(window_start, window_end))"
        "  ORDER BY window_start, id LIMIT $4)"
        " ORDER BY window_start, id LIMIT $4",
        technician_id,
        uuid.UUID(ticket_id),
        start,
        MAX_BOOKINGS,
    )
    return [Booking(str(r["id"]), r["window_start"], r["window_end"]) for r in rows]


async def candidates(
    conn: asyncpg.Connection, skill: str | None, start: datetime, end: datetime, exclude: str
) -> list[str]:
    """Active technicians with `skill` (any, when None) and no assignment in the window."""
    # One statement text per case: an `$1 IS NULL OR ...` would leave the prepared
    # statement's generic plan unable to use the skills index.
    skilled = "" if skill is None else " AND t.skills @> ARRAY[$5::text]"
    # Planned for these values (LOCAL: until the caller's transaction ends): the generic
    # plan would guess a skill matches almost no one and fetch them all by the skills index.
    # Planned this way it walks technicians in id order and stops at the LIMIT.
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    # `NOT (SELECT EXISTS ...)`, not `NOT EXISTS`: PostgreSQL turns the latter into an anti
    # join, estimates from the technician ids alone that nearly everyone has a booking
    # somewhere, and so probes the index for every technician and sorts the survivors
    # (7 ms at a million tickets). A subquery stays a per-row check, evaluated only until
    # the LIMIT is reached.
    rows = await conn.fetch(
        "SELECT t.id FROM technicians t"
        f" WHERE t.active AND t.id <> $3{skilled}"
        " AND NOT (SELECT EXISTS (SELECT 1 FROM tickets k WHERE k.technician_id = t.id"
        f"  AND k.window_start IS NOT NULL AND k.state IN {_ASSIGNED}"
        "  AND tstzrange(k.window_start, k.window_end) && tstzrange($1, $2)))"
        " ORDER BY t.id LIMIT $4",
        start,
        end,
        exclude,
        MAX_CANDIDATES,
        *(() if skill is None else (skill,)),
    )
    return [r["id"] for r in rows]

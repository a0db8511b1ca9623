"""Technicians in PostgreSQL: the directory the scheduling rules and the queue read.

"Active technicians skilled for X" is always `active AND skills @> ARRAY[X]`, the shape the
partial GIN index `technicians_active_skills` answers.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ..domain import Technician

Conn = asyncpg.Connection | asyncpg.Pool

#: Ticket states in which a technician is held by the ticket's window.
ASSIGNED_STATES = ("SCHEDULED", "DISPATCHED", "ON_SITE")
#: Columns a PATCH may change (the id never changes: tickets and principals name it).
PATCHABLE = ("name", "skills", "active", "region", "hours")

_COLUMNS = "id, name, skills, active, region, hours, created_at, updated_at"


def _technician(row: asyncpg.Record | Mapping[str, Any]) -> Technician:
    return Technician(
        id=row["id"],
        name=row["name"],
        skills=tuple(row["skills"]),
        active=row["active"],
        region=row["region"],
        hours=row["hours"],
    )


def to_json(row: asyncpg.Record | Mapping[str, Any]) -> dict[str, Any]:
    """The wire view of a technician row (as `get_row`/`list_rows` return)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "skills": [*row["skills"]],
        "active": row["active"],
        "region": row["region"],
        "hours": row["hours"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def get_row(conn: Conn, technician_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM technicians WHERE id = $1", technician_id)


async def get(conn: Conn, technician_id: str) -> Technician | None:
    row = await get_row(conn, technician_id)
    return None if row is None else _technician(row)


async def list_rows(
    conn: Conn,
    *,
    active: bool | None = None,
    skill: str | None = None,
    available: tuple[datetime, datetime] | None = None,
    only_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> builtins.list[asyncpg.Record]:
    """Technicians ordered by id, after `cursor` (an id), at most `limit`; `only_id`: that
    technician alone, if it passes the other filters.

    `available` (start, end) leaves out technicians holding a ticket in SCHEDULED,
    DISPATCHED or ON_SITE whose window overlaps [start, end).
    """
    clauses: builtins.list[str] = []
    args: builtins.list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if only_id is not None:
        clauses.append(f"id = {arg(only_id)}")
    if active is not None:
        clauses.append(f"active = {arg(active)}")
    if skill is not None:
        clauses.append(f"skills @> ARRAY[{arg(skill)}::text]")
    if available is not None:
        start, end = arg(available[0]), arg(available[1])
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM tickets t WHERE t.technician_id = technicians.id"
            f" AND t.state = ANY({arg([*ASSIGNED_STATES])}::text[])"
            f" AND t.window_start < {end} AND t.window_end > {start})"
        )
    if cursor is not None:
        clauses.append(f"id > {arg(cursor)}")
    condition = " AND ".join(clauses) or "true"
    return await conn.fetch(
        f"SELECT {_COLUMNS} FROM technicians WHERE {condition} ORDER BY id LIMIT {arg(limit)}",
        *args,
    )


async def create(conn: Conn, technician: Technician) -> asyncpg.Record | None:
    """Insert the technician; None when the id is taken (nothing is changed then)."""
    return await conn.fetchrow(
        "INSERT INTO technicians (id, name, skills, active, region, hours)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING"
        f" RETURNING {_COLUMNS}",
        technician.id,
        technician.name,
        [*technician.skills],
        technician.active,
        technician.region,
        technician.hours,
    )


async def patch(
    conn: Conn, technician_id: str, changes: Mapping[str, Any]
) -> asyncpg.Record | None:
    """Set the given PATCHABLE columns (others are refused with KeyError); None when absent."""
    unknown = set(changes) - set(PATCHABLE)
    if unknown:
        raise KeyError(f"not patchable: {sorted(unknown)}")
    if not changes:
        return await get_row(conn, technician_id)
    names = [n for n in PATCHABLE if n in changes]
    sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))
    values = [[*changes[n]] if n == "skills" else changes[n] for n in names]
    return await conn.fetchrow(
        f"UPDATE technicians SET {sets}, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        technician_id,
        *values,
    )


async def count_matching(conn: Conn, incident_type: str) -> int:
    """Active technicians whose skills include `incident_type`."""
    n = await conn.fetchval(
        "SELECT count(*) FROM technicians WHERE active AND skills @> ARRAY[$1::text]",
        incident_type,
    )
    return int(n)


async def count_matching_many(conn: Conn, incident_types: Sequence[str]) -> dict[str, int]:
    """`count_matching` for several types in one statement (a page of the queue asks once,
    however many rows it has): the technicians holding any of the types, found through the
    GIN index when they are few, counted per type; types nobody has count 0."""
    wanted = sorted(set(incident_types))
    rows = await conn.fetch(
        "SELECT s AS incident_type, count(*) AS n FROM technicians, unnest(skills) AS s"
        " WHERE active AND skills && $1::text[] AND s = ANY($1::text[]) GROUP BY s",
        wanted,
    )
    counts = dict.fromkeys(wanted, 0)
    counts.update({r["incident_type"]: int(r["n"]) for r in rows})
    return counts


async def ensure(conn: Conn, technicians: Sequence[Technician]) -> None:
    """Create the technicians that do not exist yet; existing ones are left as they are (an
    operator's edits survive a restart)."""
    await conn.executemany(
        "INSERT INTO technicians (id, name, skills, active, region, hours)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        [(t.id, t.name, [*t.skills], t.active, t.region, t.hours) for t in technicians],
    )


# Named like the route's verb; it shadows the builtin in this module, so the module writes
# [*x] and `builtins.list` instead, and defines it last.
async def list(
    conn: Conn,
    active: bool | None = None,
    skill: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Sequence[Technician]:
    rows = await list_rows(conn, active=active, skill=skill, limit=limit, cursor=cursor)
    return [_technician(r) for r in rows]

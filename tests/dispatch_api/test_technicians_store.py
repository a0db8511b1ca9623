"""The technicians table and its store functions, on real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from dispatch_api.domain import Technician
from dispatch_api.store import technicians as store


async def test_a_created_technician_reads_back_with_its_skills_and_hours(
    conn: asyncpg.Connection,
) -> None:
    hours = {"days": [1, 2, 3, 4, 5], "start": "08:00", "end": "17:00", "tz": "UTC"}
    made = await store.create(
        conn, Technician("tech-a", "Ann", ("water_leak", "no_heat"), region="north", hours=hours)
    )

    assert made is not None
    got = await store.get(conn, "tech-a")
    assert got == Technician("tech-a", "Ann", ("water_leak", "no_heat"), True, "north")
    assert got is not None
    assert got.hours == hours
    assert await store.create(conn, Technician("tech-a", "Other", ())) is None
    assert (await store.get(conn, "tech-a")) == got


async def test_count_matching_counts_only_active_technicians_with_the_skill(
    conn: asyncpg.Connection,
) -> None:
    await store.create(conn, Technician("t1", "One", ("water_leak",)))
    await store.create(conn, Technician("t2", "Two", ("water_leak", "lockout")))
    await store.create(conn, Technician("t3", "Three", ("water_leak",), active=False))

    assert await store.count_matching(conn, "water_leak") == 2
    assert await store.count_matching(conn, "lockout") == 1
    assert await store.count_matching(conn, "no_heat") == 0
    assert await store.count_matching_many(conn, ["water_leak", "no_heat", "water_leak"]) == {
        "water_leak": 2,
        "no_heat": 0,
    }
    await store.patch(conn, "t2", {"active": False})
    assert await store.count_matching(conn, "lockout") == 0


async def test_listing_filters_by_active_and_skill_and_pages_by_id(
    conn: asyncpg.Connection,
) -> None:
    for i in range(5):
        await store.create(conn, Technician(f"t{i}", f"T{i}", ("general",), active=i != 2))

    first = await store.list(conn, active=True, skill="general", limit=2)
    rest = await store.list(conn, active=True, skill="general", limit=10, cursor=first[-1].id)

    assert [t.id for t in first] == ["t0", "t1"]
    assert [t.id for t in rest] == ["t3", "t4"]
    assert [t.id for t in await store.list(conn, active=False)] == ["t2"]
    assert await store.list(conn, skill="lockout") == []


async def test_a_technician_id_outside_the_principal_id_pattern_is_refused_by_the_table(
    conn: asyncpg.Connection,
) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await store.create(conn, Technician("has space", "X", ()))
    assert await conn.fetchval("SELECT count(*) FROM technicians") == 0


async def test_the_active_skill_lookup_can_be_answered_by_the_gin_index(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(
        "INSERT INTO technicians (id, name, skills, active) SELECT 'x' || i, 'X',"
        " ARRAY['general', 'k' || (i % 50)], i % 3 > 0 FROM generate_series(1, 5000) AS i"
    )
    await conn.execute("ANALYZE technicians")
    # A table this small may be scanned whole anyway; what matters is that the index fits
    # the query's shape, so it is taken once scanning is ruled out.
    await conn.execute("SET enable_seqscan = off")

    one = await conn.fetch(
        "EXPLAIN SELECT count(*) FROM technicians WHERE active AND skills @> ARRAY['k7'::text]"
    )
    # The queue's per-page statement (count_matching_many).
    page = await conn.fetch(
        "EXPLAIN SELECT s, count(*) FROM technicians, unnest(skills) AS s WHERE active"
        " AND skills && ARRAY['k7', 'k8'] AND s = ANY(ARRAY['k7', 'k8']) GROUP BY s"
    )

    assert "technicians_active_skills" in "\n".join(r[0] for r in one)
    assert "technicians_active_skills" in "\n".join(r[0] for r in page)

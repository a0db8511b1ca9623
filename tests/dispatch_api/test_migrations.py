"""SQL migrations applied once however often and however concurrently they run, and the
idempotency-key purge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from dispatch_api.store import connect, idempotency, migrate, migration_files

VERSIONS = [version for version, _ in migration_files()]


async def recorded_versions(dsn: str) -> list[str]:
    conn = await connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [r["version"] for r in rows]
    finally:
        await conn.close()


def test_the_packaged_migrations_are_found_in_order() -> None:
    assert VERSIONS
    assert VERSIONS[0] == "0001_init"
    assert sorted(VERSIONS) == VERSIONS
    assert all(sql.strip() for _, sql in migration_files())


async def test_migrating_an_empty_database_applies_every_file_once(
    empty_database_url: str,
) -> None:
    conn = await connect(empty_database_url)
    try:
        applied = await migrate(conn)
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()

    assert applied == VERSIONS
    assert await recorded_versions(empty_database_url) == VERSIONS
    assert tables >= {
        "schema_migrations",
        "principals",
        "incident_templates",
        "tickets",
        "timeline_events",
        "evidence",
        "idempotency_keys",
    }


async def test_a_second_migrate_applies_nothing(empty_database_url: str) -> None:
    conn = await connect(empty_database_url)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
    finally:
        await conn.close()

    assert first == VERSIONS
    assert second == []
    assert await recorded_versions(empty_database_url) == VERSIONS


async def test_two_concurrent_migrations_both_succeed_and_apply_each_file_once(
    empty_database_url: str,
) -> None:
    a, b = await connect(empty_database_url), await connect(empty_database_url)
    try:
        applied_a, applied_b = await asyncio.gather(migrate(a), migrate(b))
    finally:
        await a.close()
        await b.close()

    assert sorted([applied_a, applied_b]) == [[], VERSIONS]
    assert await recorded_versions(empty_database_url) == VERSIONS


async def test_the_purge_removes_keys_past_the_retention_and_keeps_newer_ones(
    database_url: str,
) -> None:
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    retention = timedelta(hours=24)
    ages = {
        "ancient": timedelta(days=30),
        "just-expired": retention + timedelta(seconds=1),
        "exactly-at-retention": retention,
        "recent": timedelta(hours=23),
        "fresh": timedelta(0),
    }
    conn = await connect(database_url)
    try:
        for key, age in ages.items():
            await conn.execute(
                "INSERT INTO idempotency_keys (principal_id, key, fingerprint, method, path,"
                " status_code, response_body, created_at)"
                " VALUES ('sup-1', $1, '\\x00', 'POST', '/v1/tickets', 201, '{}', $2)",
                key,
                now - age,
            )

        removed = await idempotency.purge(conn, now, retention)
        kept = {r["key"] for r in await conn.fetch("SELECT key FROM idempotency_keys")}
        again = await idempotency.purge(conn, now, retention)
    finally:
        await conn.close()

    assert removed == 2
    assert kept == {"exactly-at-retention", "recent", "fresh"}
    assert again == 0

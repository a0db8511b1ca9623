"""SQL migrations applied once however often and however concurrently they run, and the
idempotency-key purge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from dispatch_api.errors import Conflict
from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect, idempotency, migrate, migration_files
from testkit.api import Api

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


class _PurgedAfterClaim:
    """A real connection on which the purge runs right after the claim's INSERT: the moment
    between `claim` finding the key taken and reading its stored answer."""

    def __init__(self, conn: asyncpg.Connection, purge: Callable[[], Awaitable[int]]) -> None:
        self._conn = conn
        self._purge = purge

    async def fetchval(self, sql: str, *args: object) -> Any:
        value = await self._conn.fetchval(sql, *args)
        await self._purge()
        return value

    async def fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        return await self._conn.fetchrow(sql, *args)


async def test_a_key_purged_between_its_claim_and_its_read_answers_a_retryable_409(
    database_url: str,
) -> None:
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    retention = timedelta(hours=24)
    key = idempotency.IdempotencyKey("sup-1", "expired", "POST", "/v1/tickets", b"\x00")
    first, purger = await connect(database_url), await connect(database_url)
    try:
        async with first.transaction():
            assert await idempotency.claim(first, key, now - 2 * retention) is None
            await idempotency.store(first, key, idempotency.StoredResponse(201, b"{}"))
        racing = _PurgedAfterClaim(first, lambda: idempotency.purge(purger, now, retention))

        with pytest.raises(Conflict) as refused:
            await idempotency.claim(cast(asyncpg.Connection, racing), key, now)
        retried = await idempotency.claim(first, key, now)
    finally:
        await first.close()
        await purger.close()

    assert (refused.value.status, refused.value.code) == (409, "request_in_progress")
    assert refused.value.headers == {"Retry-After": "1"}
    assert refused.value.extensions == {"retryable": True}
    assert retried is None  # the retry claimed the key afresh


@pytest.fixture
def api_settings() -> ApiSettings:
    # The background purge every 50 ms, so a test sees it run without waiting long.
    return ApiSettings(
        db_pool_min=1,
        db_pool_max=8,
        db_lock_timeout_ms=1000,
        metrics_refresh_s=0,
        idempotency_purge_interval_s=0.05,
    )


async def test_the_running_service_purges_expired_keys_in_the_background(api: Api) -> None:
    conn = await connect(api.database_url)
    try:
        await conn.execute(
            "INSERT INTO idempotency_keys (principal_id, key, fingerprint, method, path,"
            " status_code, response_body, created_at)"
            " VALUES ('sup-1', 'old', '\\x00', 'POST', '/v1/tickets', 201, '{}', $1)",
            api.clock() - timedelta(hours=25),
        )
    finally:
        await conn.close()

    remaining = 1
    for _ in range(200):  # up to ~10 s; the purge runs every 50 ms
        remaining = await api.count("SELECT count(*) FROM idempotency_keys WHERE key = 'old'")
        if remaining == 0:
            break
        await asyncio.sleep(0.05)

    assert remaining == 0

"""Unauthenticated traffic cannot take the database from authenticated callers: floods of
random bearer tokens and of /metrics scrapes, while the database is slow (a table lock
held by another session stands in for it: every query that reaches the table waits)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect
from testkit.api import Api

#: Each authenticated request must be answered within this; a starved pool would not.
PROMPT = aiohttp.ClientTimeout(total=5)


@pytest.fixture
def api_settings() -> ApiSettings:
    # A small pool, as in production (10), so that a flood could fill it; lookups that
    # reach a locked table wait up to the lock timeout.
    return ApiSettings(
        db_pool_min=1,
        db_pool_max=4,
        db_lock_timeout_ms=10_000,
        db_statement_timeout_ms=10_000,
        auth_lookup_concurrency=1,
    )


@asynccontextmanager
async def _locked(database_url: str, table: str) -> AsyncIterator[asyncpg.Connection]:
    """`table` locked by another session: every query on it waits until the block ends."""
    conn = await connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield conn
    finally:
        await conn.close()


async def _waiting_on_locks(conn: asyncpg.Connection, at_least: int) -> int:
    """The number of sessions waiting on a lock, once it reaches `at_least` (bounded wait)."""
    for _ in range(200):
        waiting: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        if waiting >= at_least:
            return waiting
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} sessions ever waited on the lock")


async def _status(http: aiohttp.ClientSession, path: str, token: str) -> tuple[int, Any]:
    async with http.get(path, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, resp.headers.get("Retry-After")


async def test_a_flood_of_random_tokens_leaves_authenticated_calls_and_readiness_untouched(
    api: Api,
) -> None:
    url = api.url
    supervisor = api.tokens["supervisor"]
    assert (await api.request("GET", "/v1/tickets")).status == 200  # its token is cached
    flood_http = aiohttp.ClientSession(
        base_url=url, connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(60)
    )
    async with flood_http, aiohttp.ClientSession(base_url=url, timeout=PROMPT) as own:
        async with _locked(api.database_url, "principals") as lock:
            flood = [
                asyncio.create_task(_status(flood_http, "/v1/tickets", secrets.token_urlsafe(24)))
                for _ in range(500)
            ]
            await _waiting_on_locks(lock, at_least=1)  # lookups have reached the database
            mine = [await _status(own, "/v1/tickets", supervisor) for _ in range(10)]
            async with own.get("/readyz") as resp:
                ready = resp.status
            stuck = await lock.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
        answers = await asyncio.gather(*flood)

    assert [status for status, _ in mine] == [200] * 10
    assert ready == 200
    assert stuck == 1  # DISPATCH_AUTH_LOOKUP_CONCURRENCY: one lookup at a time reached it
    assert {status for status, _ in answers} <= {401, 503}
    assert all(retry == "1" for status, retry in answers if status == 503)
    assert any(status == 401 for status, _ in answers)


async def test_metrics_scrapes_never_reach_the_database_by_default(
    api: Api, database_url: str
) -> None:
    url = api.url
    async with (
        aiohttp.ClientSession(base_url=url, timeout=PROMPT) as http,
        _locked(database_url, "tickets"),
    ):

        async def scrape() -> tuple[int, str]:
            async with http.get("/metrics") as resp:
                return resp.status, await resp.text()

        scrapes = await asyncio.gather(*(scrape() for _ in range(50)))
        async with http.get("/readyz") as resp:
            ready = resp.status

    assert {status for status, _ in scrapes} == {200}
    assert all('tickets_in_state{state="NEW"} 0.0' in text for _, text in scrapes)
    assert ready == 200


@pytest.mark.parametrize("api_settings", [ApiSettings(metrics_refresh_s=0)])
async def test_scrapes_reading_gauges_at_each_scrape_share_one_database_query(
    api: Api, database_url: str
) -> None:
    url = api.url
    async with aiohttp.ClientSession(base_url=url, timeout=PROMPT) as http:

        async def scrape() -> int:
            async with http.get("/metrics") as resp:
                return resp.status

        async with _locked(database_url, "tickets") as lock:
            scrapes = [asyncio.create_task(scrape()) for _ in range(30)]
            await _waiting_on_locks(lock, at_least=1)
            async with http.get("/readyz") as resp:
                ready = resp.status
            waiting = await lock.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
        statuses = await asyncio.gather(*scrapes)

    assert statuses == [200] * 30
    assert waiting == 1
    assert ready == 200

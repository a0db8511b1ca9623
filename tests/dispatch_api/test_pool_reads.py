"""dispatch-api's connections to PostgreSQL read each answer without a fresh 256 KiB buffer
(each was a new mapping from glibc: mmap, mremap, munmap and a page fault per read,
telemetry/_reads.py), and still read what they must: a large result whole, and the server
ending the session."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator

import asyncpg
import pytest

from dispatch_api.store import connect, create_pool

#: What 20 small queries may hold at once at most when no read takes 256 KiB.
_SMALL = 128 * 1024


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(
        database_url, min_size=1, max_size=1, statement_timeout_ms=5000, lock_timeout_ms=1000
    )
    yield pool
    await pool.close()


async def _peak_of_small_queries(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")  # statement cache and codecs warm
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(20):
                assert await conn.fetchval("SELECT $1::int + 1", i) == i + 1
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()


async def test_the_pools_connections_read_small_answers_without_big_buffers(
    pool: asyncpg.Pool,
) -> None:
    assert await _peak_of_small_queries(pool) < _SMALL


async def test_asyncpgs_own_reads_take_a_quarter_mebibyte_each(database_url: str) -> None:
    # The control: a pool without dispatch-api's connection setup reads asyncio's way, so
    # the test above fails when the exact reads are gone.
    plain = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        assert await _peak_of_small_queries(plain) >= 256 * 1024
    finally:
        await plain.close()


async def test_a_large_result_arrives_whole(pool: asyncpg.Pool) -> None:
    size = 3 * 1024 * 1024 + 7
    async with pool.acquire() as conn:
        text = await conn.fetchval("SELECT repeat('x', $1::int)", size)
    assert text == "x" * size


async def test_a_session_the_server_ends_is_seen_closed(database_url: str) -> None:
    conn = await connect(database_url)  # set up as the pool's connections are
    ended = asyncio.Event()
    conn.add_termination_listener(lambda _: ended.set())
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        async with asyncio.timeout(5):
            await ended.wait()
        assert conn.is_closed()
    finally:
        await other.close()
        conn.terminate()
    with pytest.raises(asyncpg.InterfaceError):
        await conn.fetchval("SELECT 1")

"""The asyncpg pool: JSON codecs, server-side timeouts, and error translation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from ..errors import Conflict, Unavailable


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels in binary form: a version byte, then the JSON text.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        format="binary",
        encoder=lambda value: b"\x01" + orjson.dumps(value),
        decoder=lambda data: orjson.loads(data[1:]),
    )


async def connect(dsn: str) -> asyncpg.Connection:
    """A single connection with the same codecs as the pool's (for migrations and tools)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    statement_timeout_ms: int,
    lock_timeout_ms: int,
    application_name: str = "dispatch-api",
) -> asyncpg.Pool:
    """A pool whose every session carries the statement and lock timeouts."""
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            server_settings={
                "statement_timeout": str(statement_timeout_ms),
                "lock_timeout": str(lock_timeout_ms),
                "idle_in_transaction_session_timeout": str(max(statement_timeout_ms * 2, 10000)),
                "application_name": application_name,
            },
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable("database_unavailable", f"cannot connect to the database: {exc}") from exc
    return pool


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[Any]:
    """A connection inside a transaction, with database failures mapped to ApiError."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            yield conn
    except asyncpg.LockNotAvailableError as exc:
        raise Conflict(
            "ticket_busy",
            "another request is changing this ticket; retry shortly",
            headers={"Retry-After": "1"},
            extensions={"retryable": True},
        ) from exc
    except asyncpg.QueryCanceledError as exc:
        raise Unavailable(
            "database_timeout", "the database did not answer in time", headers={"Retry-After": "1"}
        ) from exc
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
        raise Unavailable(
            "database_unavailable", "the database is unreachable", headers={"Retry-After": "1"}
        ) from exc

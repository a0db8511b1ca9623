"""The asyncpg pool: JSON codecs, server-side timeouts, and error translation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

import asyncpg
import orjson

from telemetry import database_span

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset on release: the service never changes session state (no SET,
    LISTEN, session advisory locks or cursors outside transactions). asyncpg still rolls
    back an open transaction first; what this skips is the RESET ALL round trip it would
    otherwise send on every release (about 7 % of a bridge call's CPU, measured)."""


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
            reset=_keep_session,
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


@contextmanager
def _translated() -> Iterator[None]:
    """Database failures as ApiError: busy rows 409, timeouts and outages 503."""
    try:
        yield
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
    except (
        OSError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # a session the server ended under us: see _acquired
        asyncpg.PostgresConnectionError,
        # 57P01 admin shutdown, 57P03 cannot connect now: the server is going away.
        asyncpg.OperatorInterventionError,
    ) as exc:
        raise Unavailable(
            "database_unavailable", "the database is unreachable", headers={"Retry-After": "1"}
        ) from exc


class ConnectionPool(Protocol):
    """What `connection` and `transaction` use of a pool. An asyncpg.Pool is one; so are
    the hand-written pools of the unit tests and of the database benchmark."""

    def acquire(self) -> Awaitable[Any]: ...

    async def release(self, connection: Any, /) -> None: ...


@asynccontextmanager
async def _acquired(pool: ConnectionPool) -> AsyncIterator[Any]:
    """A pooled connection; failing to get one at all is an outage (503), whatever the cause."""
    try:
        conn = await pool.acquire()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(
            "database_unavailable", "the database is unreachable", headers={"Retry-After": "1"}
        ) from exc
    try:
        yield conn
    except asyncpg.InternalClientError:
        # The server ended this session under us (a restart, pg_terminate_backend) while it
        # sat idle in the pool: asyncpg leaves it in a broken protocol state until it reads
        # the socket's close, and would hand it out again (MagicStack/asyncpg#1069). Drop it;
        # the pool opens a fresh one. The request answers 503 and its retry is safe.
        conn.terminate()
        raise
    finally:
        await pool.release(conn)


@asynccontextmanager
async def connection(pool: ConnectionPool) -> AsyncIterator[Any]:
    """A pooled connection for reads (and the two statements of an action: see
    service/_fast.py), with database failures mapped to ApiError; one span for all its
    statements."""
    with _translated(), database_span("statements"):
        async with _acquired(pool) as conn:
            yield conn


@asynccontextmanager
async def transaction(pool: ConnectionPool) -> AsyncIterator[Any]:
    """A connection inside a transaction, with database failures mapped to ApiError; one
    span for the transaction, BEGIN and COMMIT included."""
    with _translated(), database_span("transaction"):
        async with _acquired(pool) as conn, conn.transaction():
            yield conn

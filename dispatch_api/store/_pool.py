"""The asyncpg pool: JSON codecs, server-side timeouts, and error translation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, Protocol

import asyncpg
import orjson

from telemetry import database_span, read_exactly

from ..errors import ApiError, Conflict, Unavailable


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Each answer is read into one exact-size bytes object, not a fresh 256 KiB buffer
    # (telemetry/_reads.py). asyncpg keeps its transport private; should that attribute go,
    # the connection reads as asyncpg's own (tests/dispatch_api/test_pool_reads.py notices).
    transport = getattr(conn, "_transport", None)
    if transport is not None:
        read_exactly(transport)
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


def _translation(exc: BaseException) -> ApiError | None:
    """The answer to a database failure: busy rows 409, timeouts and outages 503; None for
    anything else (it propagates as it is)."""
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return Conflict(
            "ticket_busy",
            "another request is changing this ticket; retry shortly",
            headers={"Retry-After": "1"},
            extensions={"retryable": True},
        )
    if isinstance(exc, asyncpg.QueryCanceledError):
        return Unavailable(
            "database_timeout", "the database did not answer in time", headers={"Retry-After": "1"}
        )
    if isinstance(
        exc,
        (
            OSError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # a session the server ended under us: see _release
            asyncpg.PostgresConnectionError,
            # 57P01 admin shutdown, 57P03 cannot connect now: the server is going away.
            asyncpg.OperatorInterventionError,
        ),
    ):
        return Unavailable(
            "database_unavailable", "the database is unreachable", headers={"Retry-After": "1"}
        )
    return None


@contextmanager
def _translated() -> Iterator[None]:
    """Database failures raised inside as ApiError (see `_translation`)."""
    try:
        yield
    except Exception as exc:
        error = _translation(exc)
        if error is None:
            raise
        raise error from exc


class ConnectionPool(Protocol):
    """What `connection` and `transaction` use of a pool. An asyncpg.Pool is one; so are
    the hand-written pools of the unit tests and of the database benchmark."""

    def acquire(self) -> Awaitable[Any]: ...

    async def release(self, connection: Any, /) -> None: ...


async def _acquire(pool: ConnectionPool) -> Any:
    """A pooled connection; failing to get one at all is an outage (503), whatever the cause."""
    try:
        return await pool.acquire()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(
            "database_unavailable", "the database is unreachable", headers={"Retry-After": "1"}
        ) from exc


async def _release(pool: ConnectionPool, conn: Any, exc: BaseException | None) -> None:
    if isinstance(exc, asyncpg.InternalClientError):
        # The server ended this session under us (a restart, pg_terminate_backend) while it
        # sat idle in the pool: asyncpg leaves it in a broken protocol state until it reads
        # the socket's close, and would hand it out again (MagicStack/asyncpg#1069). Drop it;
        # the pool opens a fresh one. The request answers 503 and its retry is safe.
        conn.terminate()
    await pool.release(conn)


@asynccontextmanager
async def _acquired(pool: ConnectionPool) -> AsyncIterator[Any]:
    conn = await _acquire(pool)
    try:
        yield conn
    except BaseException as exc:
        await _release(pool, conn, exc)
        raise
    await _release(pool, conn, None)


class _Lease:
    """`connection(pool)`: a pooled connection inside one database span, with database
    failures answered as ApiError. Written out rather than stacked from generator-based
    managers (the span, the translation, the pool's lease and an outer one, 20 µs a use)
    because every ticket action and read passes here."""

    __slots__ = ("_conn", "_pool", "_span")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._span = database_span("statements")

    async def __aenter__(self) -> Any:
        self._span.__enter__()
        try:
            self._conn = await _acquire(self._pool)
        except BaseException as exc:
            self._span.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self._conn

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        failure = exc
        try:
            await _release(self._pool, self._conn, exc)
        except BaseException as error:  # a failed release propagates, as from a `finally`
            failure = error
        if failure is None:
            self._span.__exit__(None, None, None)
            return
        self._span.__exit__(type(failure), failure, failure.__traceback__)
        answer = _translation(failure) if isinstance(failure, Exception) else None
        if answer is not None:
            raise answer from failure
        if failure is not exc:
            raise failure


def connection(pool: ConnectionPool) -> AbstractAsyncContextManager[Any]:
    """A pooled connection for reads (and the two statements of an action: see
    service/_fast.py), with database failures mapped to ApiError; one span for all its
    statements."""
    return _Lease(pool)


@asynccontextmanager
async def transaction(pool: ConnectionPool) -> AsyncIterator[Any]:
    """A connection inside a transaction, with database failures mapped to ApiError; one
    span for the transaction, BEGIN and COMMIT included."""
    with _translated(), database_span("transaction"):
        async with _acquired(pool) as conn, conn.transaction():
            yield conn

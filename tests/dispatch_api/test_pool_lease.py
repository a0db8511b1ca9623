"""`connection(pool)`: what a request is answered when the database fails under it, and that
the connection always goes back to the pool (a dropped session is closed first).

A hand-written pool stands in for asyncpg's here: what is tested is the lease's own logic
(which failure answers what, what is released, what propagates untouched). The real pool
and server failures are in test_outage.py and test_action_races.py."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from dispatch_api.errors import ApiError, Conflict, Unavailable
from dispatch_api.store import connection


class Conn:
    def __init__(self) -> None:
        self.terminated = False

    def terminate(self) -> None:
        self.terminated = True


class Pool:
    def __init__(
        self, *, acquire: BaseException | None = None, release: BaseException | None = None
    ) -> None:
        self.conn = Conn()
        self.fail_acquire = acquire
        self.fail_release = release
        self.released: list[Conn] = []

    async def acquire(self) -> Conn:
        if self.fail_acquire is not None:
            raise self.fail_acquire
        return self.conn

    async def release(self, conn: Any, /) -> None:
        self.released.append(conn)
        if self.fail_release is not None:
            raise self.fail_release


async def test_a_lease_hands_out_the_connection_and_gives_it_back() -> None:
    pool = Pool()
    async with connection(pool) as conn:
        assert conn is pool.conn
        assert pool.released == []
    assert pool.released == [pool.conn]
    assert not pool.conn.terminated


@pytest.mark.parametrize(
    ("failure", "answer", "code"),
    [
        (asyncpg.LockNotAvailableError("lock"), Conflict, "ticket_busy"),
        (asyncpg.QueryCanceledError("timeout"), Unavailable, "database_timeout"),
        (ConnectionResetError("reset"), Unavailable, "database_unavailable"),
        (asyncpg.InterfaceError("closed"), Unavailable, "database_unavailable"),
        (asyncpg.AdminShutdownError("shutdown"), Unavailable, "database_unavailable"),
    ],
)
async def test_a_database_failure_inside_is_answered_and_the_connection_released(
    failure: BaseException, answer: type[ApiError], code: str
) -> None:
    pool = Pool()
    with pytest.raises(answer) as raised:
        async with connection(pool):
            raise failure
    assert raised.value.code == code
    assert raised.value.__cause__ is failure
    assert pool.released == [pool.conn]


async def test_a_session_the_server_ended_is_closed_before_it_goes_back() -> None:
    pool = Pool()
    with pytest.raises(Unavailable) as raised:
        async with connection(pool):
            raise asyncpg.InternalClientError("protocol state")
    assert raised.value.code == "database_unavailable"
    assert pool.conn.terminated
    assert pool.released == [pool.conn]


async def test_no_connection_at_all_is_an_outage_and_nothing_is_released() -> None:
    pool = Pool(acquire=TimeoutError())
    with pytest.raises(Unavailable) as raised:
        async with connection(pool):
            pytest.fail("the body ran without a connection")
    assert raised.value.code == "database_unavailable"
    assert pool.released == []


@pytest.mark.parametrize("failure", [ValueError("a bug"), asyncio.CancelledError()])
async def test_anything_else_propagates_as_it_is(failure: BaseException) -> None:
    pool = Pool()
    with pytest.raises(type(failure)) as raised:
        async with connection(pool):
            raise failure
    assert raised.value is failure
    assert pool.released == [pool.conn]


async def test_a_failed_release_is_what_the_request_is_answered() -> None:
    pool = Pool(release=ConnectionResetError("gone while releasing"))
    with pytest.raises(Unavailable) as raised:
        async with connection(pool):
            pass
    assert raised.value.code == "database_unavailable"
    assert isinstance(raised.value.__cause__, ConnectionResetError)

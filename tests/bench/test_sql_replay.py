"""S3 replays what dispatch-api sends for an action (bench/sql_replay.py), raw and as a
pgbench script: on a ticket created alike, the replay must write exactly what the service
wrote, or the benchmark compares the API with some other work."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from bench.sql_replay import pgbench, pgbench_script, record
from dispatch_api.store import connect
from testkit.api import Api

HOLD = b'{"cause":"provider","reason":"bench"}'
RESUME = b'{"reason":"bench"}'


async def _twins(api: Api, n: int) -> list[str]:
    """`n` tickets created alike (the test clock stands still)."""
    return [(await api.create_ticket())["id"] for _ in range(n)]


async def _written(
    conn: asyncpg.Connection, ticket: str, after: int
) -> tuple[dict[str, Any], list[Any]]:
    """The ticket's row and its events after `after`, without what names the ticket."""
    row = await conn.fetchrow("SELECT * FROM tickets WHERE id = $1", uuid.UUID(ticket))
    assert row is not None
    events = await conn.fetch(
        "SELECT * FROM timeline_events WHERE ticket_id = $1 AND seq > $2 ORDER BY seq",
        uuid.UUID(ticket),
        after,
    )
    skip = {"id", "ticket_id"}
    return (
        {k: v for k, v in row.items() if k not in skip},
        [{k: v for k, v in e.items() if k not in skip} for e in events],
    )


async def _answer(conn: asyncpg.Connection, path: str) -> tuple[int, bytes]:
    row = await conn.fetchrow(
        "SELECT status_code, response_body FROM idempotency_keys WHERE path = $1", path
    )
    assert row is not None, f"no answer stored for {path}"
    return row["status_code"], bytes(row["response_body"])


async def test_a_recorded_action_replayed_on_a_twin_ticket_writes_what_dispatch_api_wrote(
    api: Api, database_url: str
) -> None:
    first, twin = await _twins(api, 2)
    seq = await api.count("SELECT last_seq FROM tickets WHERE id = $1", uuid.UUID(first))

    hold = await record(database_url, api.tokens["supervisor"], first, "hold", HOLD, seq + 1)
    conn = await connect(database_url)
    try:
        for s in hold.on(twin, str(uuid.uuid4()), seq + 1):
            await (conn.fetch(s.sql, *s.args) if s.args else conn.execute(s.sql))

        # A plain action: one read, then one statement that writes it all (no BEGIN/COMMIT).
        assert len(hold.statements) == 2
        assert "act_on_ticket" in hold.statements[-1].sql
        assert await _written(conn, twin, seq) == await _written(conn, first, seq)
        status, body = await _answer(conn, f"/v1/tickets/{twin}/hold")
        assert status == 200
        assert body == (await _answer(conn, f"/v1/tickets/{first}/hold"))[1].replace(
            first.encode(), twin.encode()
        )
    finally:
        await conn.close()


async def test_the_pgbench_script_alternates_the_recorded_hold_and_resume_as_dispatch_api_did(
    api: Api, database_url: str
) -> None:
    first, twin = await _twins(api, 2)
    seq = await api.count("SELECT last_seq FROM tickets WHERE id = $1", uuid.UUID(first))
    token = api.tokens["supervisor"]
    hold = await record(database_url, token, first, "hold", HOLD, seq + 1)
    resume = await record(database_url, token, first, "resume", RESUME, seq + 2)
    script, defines = pgbench_script(hold, resume, [twin])

    tps = await asyncio.to_thread(pgbench, database_url, script, defines, 1, None, 2)

    assert tps > 0
    conn = await connect(database_url)
    try:
        assert await _written(conn, twin, seq) == await _written(conn, first, seq)
        keys = await conn.fetch(
            "SELECT status_code FROM idempotency_keys WHERE path LIKE '%/hold' OR path LIKE"
            " '%/resume'"
        )
        assert [k["status_code"] for k in keys] == [200] * 4  # two recorded, two replayed
    finally:
        await conn.close()

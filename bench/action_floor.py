"""The floor for an HTTP ticket action in Python, for S3: a minimal aiohttp server that
answers `POST /v1/tickets/{id}/hold|resume` by sending PostgreSQL the statements recorded
from dispatch-api (bench/sql_replay.py), with the ticket, the Idempotency-Key and the
timeline number substituted, as the raw asyncpg side does.

No authentication, body validation, domain rules, telemetry or problem documents: what any
Python service answering this action over HTTP on asyncpg pays. The answer is the ticket
row the first statement read (the Lua script of S3's wrk side reads the ticket id from it).

    python -m bench.action_floor PORT DSN RECORDINGS   (a pickle of (hold, resume))
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
from aiohttp import web

from bench.sql_replay import Recording
from dispatch_api.store import create_pool

POOL = web.AppKey("pool", asyncpg.Pool)


def app(dsn: str, hold: Recording, resume: Recording) -> web.Application:
    application = web.Application()
    recordings = {"hold": hold, "resume": resume}
    #: Each ticket's newest timeline number, read once: wrk's script hands a ticket to one
    #: connection at a time, so only this server writes it while the run lasts.
    seqs: dict[str, int] = {}

    async def pool(app: web.Application) -> AsyncIterator[None]:
        # Like the API's: same codecs, session settings and default size.
        app[POOL] = await create_pool(
            dsn, min_size=2, max_size=10, statement_timeout_ms=5000, lock_timeout_ms=2000
        )
        yield
        await app[POOL].close()

    async def act(request: web.Request) -> web.Response:
        ticket, action = request.match_info["ticket"], request.match_info["action"]
        await request.read()
        key = request.headers["Idempotency-Key"]
        async with request.app[POOL].acquire() as conn:
            if ticket not in seqs:
                seqs[ticket] = await conn.fetchval(
                    "SELECT last_seq FROM tickets WHERE id = $1::uuid", ticket
                )
            seq = seqs[ticket] + 1
            statements = recordings[action].on(ticket, key, seq)
            rows = [await conn.fetch(s.sql, *s.args) for s in statements]
        seqs[ticket] = seq
        read = dict(rows[0][0])
        return web.Response(
            body=orjson.dumps({"ticket": {**read, "id": ticket}}, default=str),
            content_type="application/json",
        )

    application.cleanup_ctx.append(pool)
    application.router.add_post("/v1/tickets/{ticket}/{action:hold|resume}", act)
    return application


if __name__ == "__main__":
    port, dsn, recorded = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    held, resumed = pickle.loads(recorded.read_bytes())
    web.run_app(app(dsn, held, resumed), host="127.0.0.1", port=port, access_log=None, print=None)

"""S3's HTTP and raw asyncpg load generators and the CPU counters it reads (pgbench runs
the script bench/sql_replay.py writes).

Each side works on its own tickets, one per concurrent worker (no row-lock queueing), and
alternates a hold and a resume on each: `hold_due` says which a ticket needs next, from its
timeline number (bench/sql_replay.py explains the recording both replays come from).
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import psutil

from bench._context import Bench
from bench.sql_replay import Recording

HOLD_BODY = b'{"cause":"provider","reason":"bench"}'
RESUME_BODY = b'{"reason":"bench"}'

Transaction = Callable[[], Awaitable[None]]


def hold_due(last_seq: int, hold: Recording) -> bool:
    """Whether a ticket whose newest event is `last_seq` needs a hold next (else a resume):
    every ticket has the recorded one's history, and each action writes one event."""
    return (last_seq + 1 - hold.seq) % 2 == 0


async def last_seqs(
    conn: asyncpg.Connection, tickets: Sequence[str], hold: Recording
) -> dict[str, int]:
    """Each ticket's newest timeline number; raises when a ticket left the hold/resume
    alternation (a rejected action appends an event too, which would break it)."""
    rows = await conn.fetch(
        "SELECT id, state, last_seq FROM tickets WHERE id = ANY($1::uuid[])",
        [uuid.UUID(t) for t in tickets],
    )
    if any((r["state"] == "ON_HOLD") == hold_due(r["last_seq"], hold) for r in rows):
        raise RuntimeError("S3: a ticket left the hold/resume alternation (a rejected action?)")
    return {str(r["id"]): r["last_seq"] for r in rows}


# --- side A: HTTP ---------------------------------------------------------------------------


def http_transaction(bench: Bench, server: str, ticket: str, held: dict[str, bool]) -> Transaction:
    """The action due on `ticket`, posted to the server at `server` (dispatch-api or the
    floor of bench/action_floor.py)."""
    url = f"{server}/v1/tickets/{ticket}/"
    base = {**bench.api_headers, "Content-Type": "application/json"}
    http = bench.http

    async def one() -> None:
        hold = not held[ticket]
        headers = {**base, "Idempotency-Key": str(uuid.uuid4())}
        target, body = (url + "hold", HOLD_BODY) if hold else (url + "resume", RESUME_BODY)
        async with http.post(target, data=body, headers=headers) as r:
            answer = await r.read()
            if r.status != 200:
                raise RuntimeError(f"S3 HTTP {r.status}: {answer[:300]!r}")
        held[ticket] = hold

    return one


WRK_LUA = """
-- S3: each request takes a free ticket (FIFO) and the action that ticket is due for (hold
-- or resume), with a unique Idempotency-Key; each answer frees its ticket again.
local queue, head, tail = {}, 1, 0
local held = {}
for id, on_hold in pairs(%(tickets)s) do
  tail = tail + 1
  queue[tail] = id
  held[id] = on_hold
end
local n = 0
local prefix = "%(prefix)s"
local auth = "%(auth)s"
local bodies = { hold = '%(hold)s', resume = '%(resume)s' }

function request()
  local id = queue[head]
  queue[head] = nil
  head = head + 1
  n = n + 1
  local action = held[id] and "resume" or "hold"
  return wrk.format("POST", "/v1/tickets/" .. id .. "/" .. action, {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. n,
  }, bodies[action])
end

function response(status, headers, body)
  local id = string.match(body, '"id":"([0-9a-f%%-]+)"')
  if status == 200 and id then
    held[id] = not held[id]
    tail = tail + 1
    queue[tail] = id
  end
end
"""


# --- side B: raw asyncpg --------------------------------------------------------------------


def raw_transaction(
    pool: asyncpg.Pool, ticket: str, seqs: dict[str, int], hold: Recording, resume: Recording
) -> Transaction:
    """The recorded transaction due on `ticket`, statement by statement, on a pooled
    connection: the same SQL and arguments, a fresh Idempotency-Key and the next number."""

    async def one() -> None:
        seq = seqs[ticket] + 1
        recording = hold if hold_due(seqs[ticket], hold) else resume
        async with pool.acquire() as conn:
            for s in recording.on(ticket, str(uuid.uuid4()), seq):
                if s.args:
                    await conn.fetch(s.sql, *s.args)
                else:  # BEGIN, COMMIT: a simple query, as asyncpg's transaction() sends them
                    await conn.execute(s.sql)
        seqs[ticket] = seq

    return one


async def closed_loop(
    transactions: Sequence[Transaction], seconds: float | None, count: int
) -> float:
    """One worker per transaction maker (its own ticket), each starting its next as soon as
    one ends, for `seconds` or until `count` in all; transactions per second."""
    remaining = count
    done = 0
    started = time.perf_counter()
    deadline = started + (seconds or 0)

    async def worker(one: Transaction) -> None:
        nonlocal remaining, done
        while (time.perf_counter() < deadline) if seconds else remaining > 0:
            remaining -= 1
            await one()
            done += 1

    await asyncio.gather(*(worker(t) for t in transactions))
    return done / (time.perf_counter() - started)


# --- CPU ------------------------------------------------------------------------------------


async def reaped(postmaster: psutil.Process, known: set[int]) -> None:
    """Wait until the backends started since `known` (pgbench's) have exited and been reaped,
    so that their CPU time is in the postmaster's children times, not lost in between."""
    deadline = time.perf_counter() + 2  # an autovacuum worker may outlive it: don't wait
    while time.perf_counter() < deadline:
        if not {p.pid for p in postmaster.children()} - known:
            return
        await asyncio.sleep(0.01)


def own_cpu() -> float:
    return sum(os.times()[:2])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

"""S3 dispatch-api efficiency: one ticket action through HTTP vs the same SQL without the API.

The action is a provider `hold` / `resume` pair, alternating on each ticket, so it repeats
forever on a few tickets; each ticket carries the three evidence items a `water_leak`
completion needs, so the evidence read is what a completion reads. The statements are the
ones a plain dispatch-api ticket action (`complete` too) sends: one read of the ticket, its
evidence and the Idempotency-Key, then one `act_on_ticket` call that claims the key with
its answer, writes the new state if the ticket is still at the version read, and appends
the timeline event (no BEGIN/COMMIT: each statement is its own transaction). They are not
copied here but recorded from dispatch-api itself, one hold and one resume
(bench/sql_replay.py); the note gives their count, the round trips per action. Every side
works on its own tickets, one per concurrent worker (no row-lock queueing), and does the
same work per transaction:

- A, HTTP: POST /v1/tickets/{id}/hold|resume to dispatch-api, a fresh Idempotency-Key each,
  from `wrk` (a Lua script hands each connection a free ticket and a unique key; aiohttp
  closed loop when wrk is missing and in smoke runs).
- B, raw asyncpg: the recorded statements with the recorded arguments (ticket, key and
  timeline number substituted) from a pool like the API's (same codecs and session
  settings) in this process, closed loop.
- F, the floor of A: a minimal aiohttp server (bench/action_floor.py, its own process)
  that answers the same requests from the same wrk script with the recorded statements
  and nothing else (no auth, validation, rules or telemetry): what any Python service
  answering this action over HTTP on asyncpg pays. A against F is what dispatch-api's
  own work costs; F against B is what HTTP in Python costs.
- C, pgbench: the same statements as a custom script (`-M prepared`, each client numbering
  its ticket's events and choosing hold or resume by them); the recorded values are -D
  constants.

Ratios of transactions per second, A B F C interleaved per repetition after a warm-up, with
`synchronous_commit` on and then off (ALTER SYSTEM + reload, so the API's pooled sessions
follow; restored at the end). CPU per committed transaction per process is reported too.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import pickle
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil

from bench import _s3_sides as s3
from bench import profile
from bench._context import Bench
from bench._load import have_wrk, wrk
from bench._report import Figure, figure
from bench.cpu import cpu_seconds
from bench.sql_replay import pgbench, pgbench_script, record
from dispatch_api.store import connect, create_pool
from testkit.processes import free_port

#: Every S3 ticket is created alike, so what was recorded on one replays on any other.
TICKET_FIELDS = {
    "customer_name": "S3 bench",
    "contact_phone": "+44 20 7946 0000",
    "site_address": "12 Analytical Row, London",
    "incident_type": "water_leak",
    "priority": "P2",
}
EVIDENCE = (("photo", "before"), ("photo", "after"), ("signature", "customer"))


@dataclass(frozen=True, slots=True)
class Outcome:
    tps: float
    committed: int  # transactions committed (timeline events written)
    cpu: dict[str, float]  # CPU seconds: api (the HTTP server: dispatch-api or F), postgres, client


async def _post(bench: Bench, path: str, body: bytes, status: int = 200) -> Any:
    headers = {
        **bench.api_headers,
        "Content-Type": "application/json",
        "Idempotency-Key": str(uuid.uuid4()),
    }
    async with bench.http.post(bench.product.urls["api"] + path, data=body, headers=headers) as r:
        answer = await r.read()
        if r.status != status:
            raise RuntimeError(f"POST {path}: {r.status} {answer[:500]!r}")
        return orjson.loads(answer)


async def _new_ticket(bench: Bench) -> str:
    body = orjson.dumps(TICKET_FIELDS)
    ticket: str = (await _post(bench, "/v1/tickets", body, 201))["ticket"]["id"]
    for kind, tag in EVIDENCE:
        evidence = {
            "kind": kind,
            "tag": tag,
            "content_type": "image/jpeg",
            "uri": f"https://files.example/{ticket}/{tag}.jpg",
            "sha256": hashlib.sha256(tag.encode()).hexdigest(),
            "size_bytes": 48213,
        }
        await _post(bench, f"/v1/tickets/{ticket}/evidence", orjson.dumps(evidence), 201)
    return ticket


async def _committed(conn: asyncpg.Connection, tickets: list[str]) -> int:
    """Transactions committed on `tickets` so far: each wrote one timeline event."""
    total: int = await conn.fetchval(
        "SELECT sum(last_seq) FROM tickets WHERE id = ANY($1::uuid[])",
        [uuid.UUID(t) for t in tickets],
    )
    return total


class _Sides:
    """The three sides, each on its own tickets; `once` runs one side and measures it."""

    def __init__(self, bench: Bench, tickets: dict[str, list[str]]) -> None:
        self.bench = bench
        self.tickets = tickets
        self.c = bench.sizes.concurrency
        self.wrk = have_wrk() and not bench.sizes.quick
        self.tool = "wrk" if self.wrk else "aiohttp closed loop"
        self.api = bench.product.process("api")
        self.postmaster = bench.product.process("postgres")
        self.floor: subprocess.Popen[bytes] | None = None  # side F's server, once started

    async def start(self, probe: str) -> None:
        dsn, token = self.bench.product.dsn, self.bench.product.secrets["api_token"]
        self.conn = await connect(dsn)
        # Like the API's pool: same codecs, same session settings, one connection per worker.
        self.pool = await create_pool(
            dsn, min_size=self.c, max_size=self.c, statement_timeout_ms=5000, lock_timeout_ms=2000
        )
        every = [probe, *(t for side in self.tickets.values() for t in side)]
        seqs = await self.conn.fetch(
            "SELECT DISTINCT last_seq FROM tickets WHERE id = ANY($1::uuid[])",
            [uuid.UUID(t) for t in every],
        )
        if len(seqs) != 1:  # the recording replays only on tickets with the same history
            raise RuntimeError(f"S3: the new tickets differ in history: {seqs}")
        seq: int = seqs[0]["last_seq"]
        self.hold = await record(dsn, token, probe, "hold", s3.HOLD_BODY, seq + 1)
        self.resume = await record(dsn, token, probe, "resume", s3.RESUME_BODY, seq + 2)
        self.script, self.defines = pgbench_script(self.hold, self.resume, self.tickets["pgbench"])
        n = len(self.hold.statements)
        self.note = f"{n} round trips per action, recorded from dispatch-api, on every side"
        await self._start_floor(dsn)

    async def _start_floor(self, dsn: str) -> None:
        """The minimal server (side F), on the recordings just made."""
        with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
            f.write(pickle.dumps((self.hold, self.resume)))
        self.recordings = f.name
        port = free_port()
        self.floor = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "bench.action_floor", str(port), dsn, f.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.floor_url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                async with self.bench.http.get(self.floor_url + "/") as r:
                    if r.status == 404:  # listening
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("S3: the minimal action server did not start")

    async def close(self) -> None:
        if self.floor is not None:
            self.floor.terminate()
            await asyncio.to_thread(self.floor.wait, 30)
            Path(self.recordings).unlink()  # noqa: ASYNC240 - a small local file
        await self.pool.close()
        await self.conn.close()

    def _cpu(self, side: str) -> tuple[float, float, float, float]:
        server = self.api
        if side == "floor":
            assert self.floor is not None, "start() starts side F's server"
            server = psutil.Process(self.floor.pid)
        return (
            cpu_seconds(server),
            # pgbench's backends exit: the tree counts them once reaped
            cpu_seconds(self.postmaster, tree=True),
            s3.own_cpu(),
            s3.children_cpu(),
        )

    async def once(self, side: str, seconds: int | None, count: int) -> Outcome:
        """Run `side` for `seconds` (or `count` transactions when None)."""
        bench, c, tickets, hold = self.bench, self.c, self.tickets[side], self.hold
        seqs = await s3.last_seqs(self.conn, tickets, hold)
        held = {t: not s3.hold_due(n, hold) for t, n in seqs.items()}
        before = await _committed(self.conn, tickets)
        known = {p.pid for p in self.postmaster.children()}
        cpu0 = self._cpu(side)
        web = side in ("http", "floor")
        base = self.floor_url if side == "floor" else bench.product.urls["api"]
        if web and self.wrk:
            lua = s3.WRK_LUA % {
                "tickets": "{"
                + ", ".join(f'["{t}"] = {str(h).lower()}' for t, h in held.items())
                + "}",
                "prefix": f"s3-{uuid.uuid4()}-",
                "auth": bench.api_headers["Authorization"],
                "hold": s3.HOLD_BODY.decode(),
                "resume": s3.RESUME_BODY.decode(),
            }
            url = base + "/"
            tps = await asyncio.to_thread(
                functools.partial(
                    wrk,
                    url,
                    script=lua,
                    connections=c,
                    seconds=seconds or 1,
                    socket_errors_fail=True,
                )
            )
        elif web:
            calls = [s3.http_transaction(bench, base, t, held) for t in tickets[:c]]
            tps = await s3.closed_loop(calls, seconds, count)
        elif side == "asyncpg":
            calls = [s3.raw_transaction(self.pool, t, seqs, hold, self.resume) for t in tickets]
            tps = await s3.closed_loop(calls, seconds, count)
        else:
            dsn, per_client = bench.product.dsn, max(1, count // c)
            tps = await asyncio.to_thread(
                pgbench, dsn, self.script, self.defines, c, seconds, per_client
            )
        await s3.reaped(self.postmaster, known)
        cpu1 = self._cpu(side)
        committed = await _committed(self.conn, tickets) - before
        await s3.last_seqs(self.conn, tickets, hold)  # every transaction was a hold or a resume
        if committed <= 0:
            raise RuntimeError(f"S3 {side}: no transaction committed")
        # The load generator: this process (aiohttp, asyncpg) or a child (wrk, pgbench).
        external = side == "pgbench" or (web and self.wrk)
        client = cpu1[3] - cpu0[3] if external else cpu1[2] - cpu0[2]
        cpu = {"api": cpu1[0] - cpu0[0], "postgres": cpu1[1] - cpu0[1], "client": client}
        return Outcome(tps, committed, cpu)


async def run(bench: Bench) -> list[Figure]:
    sizes, c = bench.sizes, bench.sizes.concurrency
    seconds = None if sizes.quick else max(1, round(sizes.seconds))
    # wrk's FIFO needs spare tickets
    counts = {"http": 2 * c, "asyncpg": c, "floor": 2 * c, "pgbench": c}
    ids = await asyncio.gather(*(_new_ticket(bench) for _ in range(sum(counts.values()) + 1)))
    probe, rest = ids[0], iter(ids[1:])
    tickets = {side: [next(rest) for _ in range(n)] for side, n in counts.items()}
    sides = _Sides(bench, tickets)
    await sides.start(probe)
    figures: list[Figure] = []
    try:
        for setting in ("on", "off"):
            await _synchronous_commit(sides.conn, setting)
            for side in tickets:  # warm-up
                await sides.once(side, None if sizes.quick else 1, max(sizes.requests, 2 * c))
            out: dict[str, list[Outcome]] = {side: [] for side in tickets}
            for _ in range(sizes.reps):  # A B C A B C ...
                for side in tickets:
                    out[side].append(await sides.once(side, seconds, sizes.requests))
            figures += _figures(out, setting, sides.tool, sides.note)
            if setting == "on":

                def load(side: str) -> Callable[[float], Awaitable[float]]:
                    async def run(seconds: float) -> float:
                        return (await sides.once(side, round(seconds), sizes.requests)).tps

                    return run

                what = f"S3's HTTP side ({sides.tool}, hold / resume)"
                api = await profile.sampled(
                    bench, "api", "dispatch-api profile (S3)", what, load("http")
                )
                assert sides.floor is not None, "start() starts side F's server"
                floor = await profile.sampled(
                    bench,
                    "minimal server",
                    "Minimal server profile (S3)",
                    f"S3's floor side ({sides.tool}, hold / resume)",
                    load("floor"),
                    pid=sides.floor.pid,
                )
                title = "dispatch-api against the minimal server (S3)"
                profile.compared(bench, title, api, floor)
    finally:
        await _synchronous_commit(sides.conn, None)
        await sides.close()
    return figures


async def _synchronous_commit(conn: asyncpg.Connection, value: str | None) -> None:
    """Server-wide, so the API's pooled sessions follow it (they never SET it themselves)."""
    if value is None:
        await conn.execute("ALTER SYSTEM RESET synchronous_commit")
    else:
        await conn.execute(f"ALTER SYSTEM SET synchronous_commit = {value}")
    await conn.fetchval("SELECT pg_reload_conf()")
    await asyncio.sleep(0.1)  # every backend re-reads the file before its next command
    shown = await conn.fetchval("SHOW synchronous_commit")
    if value is not None and shown != value:
        raise RuntimeError(f"synchronous_commit is {shown}, wanted {value}")


def _figures(out: dict[str, list[Outcome]], setting: str, tool: str, note: str) -> list[Figure]:
    sc = f"synchronous_commit {setting}"
    http, raw, pgb, floor = out["http"], out["asyncpg"], out["pgbench"], out["floor"]
    figures = [
        figure(
            "S3",
            f"HTTP ({tool}) / raw asyncpg, transactions/s ({sc})",
            [a.tps / b.tps for a, b in zip(http, raw, strict=True)],
            ">= 0.7",
            note,
        ),
        figure(
            "S3",
            f"HTTP ({tool}) / pgbench, transactions/s ({sc})",
            [a.tps / b.tps for a, b in zip(http, pgb, strict=True)],
            "",  # information: pgbench is C with no Python on its side (issue 20)
            note,
        ),
        figure(
            "S3",
            f"minimal aiohttp server ({tool}) / raw asyncpg, transactions/s ({sc}), the floor",
            [a.tps / b.tps for a, b in zip(floor, raw, strict=True)],
            "",
            note,
        ),
        figure(
            "S3",
            f"HTTP ({tool}) / minimal aiohttp server, transactions/s ({sc})",
            [a.tps / b.tps for a, b in zip(http, floor, strict=True)],
            "",
            note,
        ),
        figure("S3", f"HTTP ({tool}) transactions/s ({sc})", [o.tps for o in http], ""),
        figure("S3", f"minimal server transactions/s ({sc})", [o.tps for o in floor], ""),
        figure("S3", f"raw asyncpg transactions/s ({sc})", [o.tps for o in raw], ""),
        figure("S3", f"pgbench transactions/s ({sc})", [o.tps for o in pgb], ""),
    ]

    def per_txn(outcomes: list[Outcome], process: str) -> list[float]:
        return [o.cpu[process] / o.committed * 1000 for o in outcomes]

    for label, outcomes, processes in (
        ("HTTP", http, (("api", "dispatch-api"), ("postgres", "postgres"), ("client", tool))),
        (
            "minimal server",
            floor,
            (("api", "minimal server"), ("postgres", "postgres"), ("client", tool)),
        ),
        ("raw asyncpg", raw, (("postgres", "postgres"), ("client", "bench process"))),
        ("pgbench", pgb, (("postgres", "postgres"), ("client", "pgbench"))),
    ):
        for key, name in processes:
            figures.append(
                figure(
                    "S3",
                    f"{label}: {name} CPU ms per transaction ({sc})",
                    per_txn(outcomes, key),
                    "",
                )
            )
    return figures

